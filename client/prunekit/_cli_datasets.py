"""``prunekit upload-dataset``: upload ``.npz`` shards and print the URIs a spec's ``data`` names."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from google.protobuf import json_format

from prunekit._cli_args import file_arg
from prunekit._client import Client
from prunekit.text.format import count, size
from prunekit.v1 import model_pb2, spec_pb2

__all__ = ["add_data_options", "add_upload_dataset", "attach_data"]


def _upload(client: Client, path: str) -> model_pb2.DatasetRef:
    """Uploads one shard and says so on stderr."""
    ref = client.upload_dataset(path)
    arrays = ", ".join(ref.arrays)
    note = f"uploaded {ref.filename} ({size(ref.size_bytes)}, {count(ref.samples)} samples: {arrays})"
    print(note, file=sys.stderr, flush=True)
    return ref


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--train PATH`` and ``--eval PATH`` (repeatable) on ``optimize``."""
    parser.add_argument(
        "--train",
        action="append",
        type=file_arg,
        metavar="NPZ",
        help="upload this .npz shard and add it to the spec's data.train (repeatable)",
    )
    parser.add_argument(
        "--eval",
        action="append",
        type=file_arg,
        metavar="NPZ",
        help="upload this .npz shard and add it to the spec's data.eval (repeatable)",
    )


def attach_data(client: Client, spec: spec_pb2.OptimizationSpec, args: argparse.Namespace) -> None:
    """Uploads the shards of ``--train`` / ``--eval`` and appends their URIs to ``spec.data``."""
    for path in args.train or []:
        spec.data.train.append(_upload(client, path).uri)
    for path in args.eval or []:
        spec.data.eval.append(_upload(client, path).uri)


def _upload_dataset(client: Client, args: argparse.Namespace) -> int:
    """Uploads each path in turn; stdout gets one DatasetRef uri per line (or, with --json, the refs)."""
    refs = []
    for path in args.paths:
        ref = _upload(client, path)
        refs.append(ref)
        if not args.json:
            print(ref.uri, flush=True)
    if args.json:
        as_dicts = [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in refs]
        print(json.dumps(as_dicts, indent=2), flush=True)
    return 0


def add_upload_dataset(commands: Any) -> None:
    """Registers ``upload-dataset PATH...`` on the ``prunekit`` subcommand parsers."""
    p: argparse.ArgumentParser = commands.add_parser(
        "upload-dataset",
        help="upload .npz dataset shards and print their URIs (for a spec's data.train / data.eval)",
        description="Each shard is an .npz whose arrays are named after the model inputs (a single input "
        "may be called 'input'), plus optional 'label' (integer class ids) or 'target' (floats).",
    )
    p.add_argument("paths", nargs="+", type=file_arg, metavar="PATH", help="an .npz shard (repeatable)")
    p.add_argument("--json", action="store_true", help="print the DatasetRefs as JSON instead of URIs")
    p.set_defaults(handler=_upload_dataset)
