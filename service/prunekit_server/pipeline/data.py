"""The job's data as the worker receives it: shards staged into the working directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StagedShard:
    """One ``.npz`` shard copied into the working directory, and where it came from."""

    path: Path
    uri: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class JobData:
    """The shards of ``data.train`` and ``data.eval`` (either may be empty)."""

    train: list[StagedShard] = field(default_factory=list)
    eval: list[StagedShard] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when the job has no data at all."""
        return not self.train and not self.eval
