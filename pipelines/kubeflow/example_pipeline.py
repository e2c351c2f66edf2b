"""An example pipeline: a model and a spec from object storage, one prunekit job, its report and files.

Compile it where ``kfp`` is installed (never in prunekit's own environment: kfp needs protobuf < 7)::

    python pipelines/kubeflow/example_pipeline.py --out prunekit_pipeline.yaml
"""

import argparse
import sys
from pathlib import Path

from kfp import compiler, dsl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from component import prunekit_optimize


@dsl.pipeline(
    name="prunekit-optimize", description="Prune and quantize a model with prunekit, keep the report"
)
def prunekit_pipeline(
    model_uri: str = "s3://models/resnet18.onnx",
    spec_uri: str = "s3://models/specs/recover.yaml",
    server: str = "prunekit.prunekit.svc.cluster.local:50051",
    fail_on: str = "quality,accuracy",
) -> None:
    model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Artifact, reimport=False)
    spec = dsl.importer(artifact_uri=spec_uri, artifact_class=dsl.Artifact, reimport=False)
    prunekit_optimize(
        model=model.output,
        spec=spec.output,
        server=server,
        fail_on=fail_on,
        model_filename="model.onnx",
    ).set_display_name("prunekit optimize")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="prunekit_pipeline.yaml", help="the compiled pipeline (YAML)")
    args = parser.parse_args()
    compiler.Compiler().compile(prunekit_pipeline, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
