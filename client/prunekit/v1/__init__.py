"""Generated API code of ``prunekit.v1`` (from ``protos/``; never edit by hand)."""
