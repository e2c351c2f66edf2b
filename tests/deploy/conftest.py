"""Each shape of ``deploy/`` rendered once per test process."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import SHAPES, Obj, Shape, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Obj]]:
    """Renderings already made in this process, by shape name."""
    return {}


@pytest.fixture(params=SHAPES, ids=[s.name for s in SHAPES])
def shape(request: pytest.FixtureRequest) -> Shape:
    result: Shape = request.param
    return result


@pytest.fixture
def objects(
    shape: Shape, rendered: dict[str, list[Obj]], tmp_path_factory: pytest.TempPathFactory
) -> list[Obj]:
    """The rendered objects of ``shape``: ``kubectl kustomize`` runs once per shape."""
    if shape.name not in rendered:
        rendered[shape.name] = render(shape, tmp_path_factory.mktemp("kustomize"))
    return rendered[shape.name]
