# prunekit server image.
#   docker build -t prunekit:0.1.0-gpu .                        # GPU nodes (default): CUDA torch, onnxruntime-gpu
#   docker build --build-arg VARIANT=cpu -t prunekit:0.1.0-cpu .  # CPU only: CPU torch, onnxruntime
# The GPU image bundles the CUDA runtime libraries with torch's wheels: the node needs only the NVIDIA
# driver and container toolkit (Kubernetes: the NVIDIA device plugin or GPU operator).
# Runs as uid 10001 with a read-only root filesystem: it writes only to /tmp (scratch, HOME) and to
# /data (file storage when PRUNEKIT_STORAGE is not s3://). `docker stop` must wait for the drain:
#   docker run --stop-timeout 45 ...  (PRUNEKIT_SHUTDOWN_GRACE_S=30, then a 2 s gRPC stop).
# It starts only with credentials configured (README, "Security": PRUNEKIT_TLS_*, PRUNEKIT_AUTH_*),
# or with -e PRUNEKIT_AUTH=none on a trusted machine.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG VARIANT=gpu

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT
ARG TORCH_VERSION=2.13.0
# CUDA 12.8 wheels: match onnxruntime-gpu's CUDA 12 builds.
ARG TORCH_GPU_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/prunekit/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-eu", "-c"]
RUN python -m venv /opt/prunekit
# torch first, from its own index, so no later requirement pulls another build.
RUN case "${VARIANT}" in \
      gpu) index="${TORCH_GPU_INDEX_URL}" ;; \
      cpu) index="${TORCH_CPU_INDEX_URL}" ;; \
      *) echo "VARIANT must be gpu or cpu, not ${VARIANT}" >&2; exit 1 ;; \
    esac \
    && pip install --no-cache-dir --index-url "${index}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY client client
COPY service service
# The server extra brings onnxruntime (CPU); the GPU image swaps it for onnxruntime-gpu of the same
# version (both provide the onnxruntime module, so only one may be installed). pip itself goes last:
# the final image installs nothing.
# DL3013: "." is this repository; pyproject.toml bounds its requirements, torch is pinned above.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[server]" \
    && if [ "${VARIANT}" = gpu ]; then \
         ort_version="$(python -c 'import importlib.metadata as m; print(m.version("onnxruntime"))')" \
         && pip uninstall --yes onnxruntime \
         && pip install --no-cache-dir "onnxruntime-gpu==${ort_version}"; \
       fi \
    && python -c 'import onnxruntime, prunekit_server.server, torch; print(torch.__version__, onnxruntime.get_available_providers())' \
    && pip uninstall --yes pip setuptools wheel \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && { find "${site}/nvidia" -mindepth 2 -maxdepth 2 -type d -name lib 2>/dev/null || true; } \
       > /opt/prunekit/cuda-libraries.conf

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin prunekit \
    && mkdir /data \
    && chown 10001:10001 /data
COPY --from=build /opt/prunekit /opt/prunekit
# GPU image: the CUDA libraries of torch's nvidia-* wheels go on the linker path, so onnxruntime's CUDA
# provider finds them in every worker, whether or not torch was imported first. Empty on CPU.
RUN if [ -s /opt/prunekit/cuda-libraries.conf ]; then \
      cp /opt/prunekit/cuda-libraries.conf /etc/ld.so.conf.d/prunekit-cuda.conf && ldconfig; \
    fi
ENV PATH=/opt/prunekit/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PRUNEKIT_HOST=0.0.0.0 \
    PRUNEKIT_PORT=50051 \
    PRUNEKIT_STORAGE=/data \
    PRUNEKIT_SHUTDOWN_GRACE_S=30
USER 10001:10001
WORKDIR /tmp
VOLUME ["/data"]
EXPOSE 50051
# The server drains on SIGTERM: health NOT_SERVING, new jobs refused, running ones get the grace period.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "prunekit_server.healthcheck"]
ENTRYPOINT ["prunekit-server"]

FROM runtime AS runtime-cpu

FROM runtime AS runtime-gpu
# RLIMIT_AS breaks CUDA (it reserves huge address ranges): the container's memory limit bounds workers.
# The driver capabilities CUDA needs; the GPUs themselves come from the runtime (--gpus, device plugin).
ENV PRUNEKIT_WORKER_MEMORY_BYTES=0 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The final image is runtime-gpu or runtime-cpu. DL3006: a stage of this file, not a registry image.
# hadolint ignore=DL3006
FROM runtime-${VARIANT}
