# prunekit server image. CPU by default; for GPU nodes build with a CUDA torch:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t prunekit:gpu .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/prunekit
ENV PATH=/opt/prunekit/bin:$PATH
# torch first, from its own index, so nothing pulls a different build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY client client
COPY service service
RUN pip install ".[server]"

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin prunekit \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/prunekit /opt/prunekit
ENV PATH=/opt/prunekit/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PRUNEKIT_HOST=0.0.0.0 \
    PRUNEKIT_PORT=50051 \
    PRUNEKIT_STORAGE=/data \
    PRUNEKIT_SHUTDOWN_GRACE_S=30
USER 10001
VOLUME ["/data"]
EXPOSE 50051
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "prunekit_server.healthcheck"]
ENTRYPOINT ["prunekit-server"]
