"""A Kubeflow Pipelines (v2) container component that runs one prunekit job with the prunekit CLI image.

Model and spec in (artifacts), report and the job's files out: ``report`` is the job's report.json,
``artifacts`` a directory with every file of the job (the variants' models, report.md, report.html,
report.json). The step fails (exit 1) when the job fails and, with ``fail_on``
(``quality,accuracy,target,slower``), when the job succeeds but misses a named rule (exit 3). Needs
``kfp`` (>= 2), which prunekit never depends on: install it where the pipeline is compiled. (No
``from __future__ import annotations``: kfp reads the parameters' types from the annotations.)
"""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

IMAGE = "prunekit:latest"
"""The image of this repository's Dockerfile: it holds the ``prunekit`` CLI."""

SCRIPT = """
set -eu
server="$1"; model="$2"; spec="$3"; fail_on="$4"; name="$5"; report="$6"; out="$7"
work="$(mktemp -d)"
cp "$model" "$work/$name"
cp "$spec" "$work/spec.yaml"
set -- --server "$server" optimize "$work/$name" --spec "$work/spec.yaml" --out "$out"
if [ -n "$fail_on" ]; then set -- "$@" --fail-on "$fail_on"; fi
mkdir -p "$out" "$(dirname "$report")"
status=0
prunekit "$@" || status=$?
if [ -f "$out/report.json" ]; then cp "$out/report.json" "$report"; fi
exit "$status"
"""
"""The step's shell: the CLI names the model's format by its suffix and the spec's by its own, so both
are copied under such names; report.json is kept even when a --fail-on rule fails the step."""


@dsl.container_component
def prunekit_optimize(
    model: Input[Artifact],
    spec: Input[Artifact],
    report: Output[Artifact],
    artifacts: Output[Artifact],
    server: str = "prunekit.prunekit.svc.cluster.local:50051",
    fail_on: str = "",
    model_filename: str = "model.onnx",
) -> dsl.ContainerSpec:
    """Upload ``model`` (named ``model_filename``: ``.onnx`` or ``.pt``), run ``spec`` on it on the prunekit
    ``server`` (``PRUNEKIT_TOKEN`` / ``PRUNEKIT_CA_FILE`` from the pod's environment), write the report
    and the job's files."""
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["sh", "-c", SCRIPT, "prunekit-optimize"],
        args=[server, model.path, spec.path, fail_on, model_filename, report.path, artifacts.path],
    )
