"""The SDK version (kept equal to ``project.version`` in pyproject.toml)."""

__version__ = "0.1.0"
