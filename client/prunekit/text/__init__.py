"""Text renderings of reports shared by the CLI and the server: number formats, report tables, Markdown.

Depends on protobuf, the messages (:mod:`prunekit.v1`) and the spec vocabulary only: never grpc, yaml or the
SDK client, so the server's report room uses the very tables the terminal shows.
"""
