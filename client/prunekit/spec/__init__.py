"""The spec room: the vocabulary of an ``OptimizationSpec`` and every rule it must follow.

Depends on protobuf and the messages (:mod:`prunekit.v1`) only: never torch, grpc or yaml, so the CLI runs the
very checks the server runs, before anything is uploaded.
"""
