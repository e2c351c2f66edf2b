"""Log a finished prunekit job to an MLflow tracking server: its metrics, its spec, its report and files.

Give it the directory a job was downloaded into (``prunekit optimize ... --out DIR`` or ``prunekit
download JOB_ID --out DIR``: report.json and the job's files)::

    python pipelines/mlflow/log_job.py DIR --tracking-uri http://mlflow:5000 --experiment pruning

One run per job, named after the job id: tags ``prunekit.job_id``, ``prunekit.model_sha256``,
``prunekit.model_filename`` and the software versions; params, the spec's fields (``spec.prune.ratio``...);
metrics ``baseline.p50_ms``, ``baseline.size_bytes``, ``baseline.accuracy_top1`` and per variant
``<variant>.latency_speedup``, ``.compression_ratio``, ``.macs_reduction``, ``.p50_ms``, ``.size_bytes``,
``.top1_agreement``, ``.accuracy_top1``; every file of DIR as an artifact. It reads report.json alone
and imports only mlflow: run it where mlflow is installed (mlflow's protobuf range need not be
prunekit's).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import mlflow

MAX_PARAM = 500
"""MLflow's limit on a param value's length."""


def _flat(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flat(inner, f"{prefix}.{key}", out)
    else:
        text = json.dumps(value) if isinstance(value, list) else str(value)
        out[prefix] = text[:MAX_PARAM]


def _stats(prefix: str, stats: dict[str, Any], metrics: dict[str, float]) -> None:
    latency = stats.get("latency", {})
    if "p50_ms" in latency:
        metrics[f"{prefix}.p50_ms"] = float(latency["p50_ms"])
    if "size_bytes" in stats:
        metrics[f"{prefix}.size_bytes"] = float(stats["size_bytes"])
    accuracy = stats.get("accuracy", {})
    if "top1" in accuracy:
        metrics[f"{prefix}.accuracy_top1"] = float(accuracy["top1"])
    quality = stats.get("quality", {})
    if "top1_agreement" in quality:
        metrics[f"{prefix}.top1_agreement"] = float(quality["top1_agreement"])


def metrics_of(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as MLflow metrics (report.json holds 64-bit integers as strings)."""
    metrics: dict[str, float] = {}
    _stats("baseline", report.get("baseline", {}), metrics)
    for variant in report.get("variants", []):
        name = variant["name"]
        for field in ("latency_speedup", "compression_ratio", "macs_reduction"):
            if field in variant:
                metrics[f"{name}.{field}"] = float(variant[field])
        _stats(name, variant.get("stats", {}), metrics)
    return metrics


def log_job(directory: Path, tracking_uri: str, experiment: str) -> str:
    """Log the job downloaded into ``directory``; the MLflow run's id."""
    report = json.loads((directory / "report.json").read_text())
    provenance = report.get("provenance", {})
    params: dict[str, str] = {}
    _flat(provenance.get("spec", {}), "spec", params)
    tags = {
        f"prunekit.{key}": str(provenance[key])
        for key in (
            "job_id",
            "model_filename",
            "model_sha256",
            "prunekit_version",
            "onnxruntime_version",
            "torch_version",
            "device",
        )
        if key in provenance
    }
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=provenance.get("job_id") or directory.name) as run:
        mlflow.set_tags(tags)
        if params:
            mlflow.log_params(params)
        mlflow.log_metrics(metrics_of(report))
        mlflow.log_artifacts(str(directory))
        return str(run.info.run_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="where the job was downloaded (report.json and files)")
    parser.add_argument("--tracking-uri", required=True, help="the MLflow tracking server")
    parser.add_argument("--experiment", default="prunekit", help="the experiment (default prunekit)")
    args = parser.parse_args()
    print(log_job(args.directory, args.tracking_uri, args.experiment))
    return 0


if __name__ == "__main__":
    sys.exit(main())
