"""The user overlay README "Deploy on Kubernetes" shows renders and does what it says."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.manifests import DEPLOY, ROOT, Obj, named, server, server_config, tool

MARKER = "# my-prunekit/kustomization.yaml"


def readme_overlay() -> Obj:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    (block,) = (b for b in blocks if b.startswith(MARKER))
    document = yaml.safe_load(block)
    assert isinstance(document, dict)
    return document


def test_the_readme_overlay_sets_image_bucket_and_identity(tmp_path: Path) -> None:
    overlay = readme_overlay()
    assert overlay["resources"] == ["../prunekit/deploy/overlays/gpu"]
    overlay["resources"] = [os.path.relpath(DEPLOY / "overlays" / "gpu", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    objects = [d for d in yaml.safe_load_all(done.stdout) if d]
    _, container = server(objects)
    image = overlay["images"][0]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"
    assert server_config(objects)["PRUNEKIT_STORAGE"] == "s3://my-ml-artifacts/prunekit"
    assert server_config(objects)["PRUNEKIT_WORKER_MEMORY_BYTES"] == "0", "the gpu overlay's settings stay"
    account = named(objects, "ServiceAccount", "prunekit")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    assert account["automountServiceAccountToken"] is False
