"""Argument types of the ``prunekit`` command: each parses one value or raises ``ArgumentTypeError``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypedDict

from prunekit._auth import ENV_CA_FILE, ENV_CERT_FILE, ENV_KEY_FILE, ENV_TOKEN
from prunekit._model_format import infer_format
from prunekit.v1 import model_pb2

__all__ = [
    "add_security_args",
    "file_arg",
    "input_arg",
    "label_arg",
    "model_arg",
    "ratios_arg",
    "security_kwargs",
]


def input_arg(text: str) -> model_pb2.InputSpec:
    name, sep, dims = text.rpartition(":")
    parts = dims.replace(",", "x").split("x") if dims else []
    if not sep or not name or not parts or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected NAME:SHAPE such as x:1x3x224x224, got {text!r}")
    return model_pb2.InputSpec(name=name, shape=[int(p) for p in parts])


def label_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def file_arg(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def model_arg(text: str) -> Path:
    path = file_arg(text)
    try:
        infer_format(path)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def ratios_arg(text: str) -> list[float]:
    try:
        ratios = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise argparse.ArgumentTypeError("every ratio must satisfy 0 < ratio < 1")
    return ratios


def add_security_args(parser: argparse.ArgumentParser) -> None:
    """``--ca-file``, ``--cert``, ``--key`` and ``--token``, defaulting to their PRUNEKIT_* variables."""
    env = os.environ.get
    parser.add_argument(
        "--ca-file",
        default=env(ENV_CA_FILE) or None,
        metavar="PEM",
        help="connect with TLS, trusting this CA bundle (default: $PRUNEKIT_CA_FILE; none: plaintext)",
    )
    parser.add_argument(
        "--cert",
        default=env(ENV_CERT_FILE) or None,
        metavar="PEM",
        help="client certificate for mTLS, with --key (default: $PRUNEKIT_CERT_FILE)",
    )
    parser.add_argument(
        "--key",
        default=env(ENV_KEY_FILE) or None,
        metavar="PEM",
        help="the client certificate's private key (default: $PRUNEKIT_KEY_FILE)",
    )
    parser.add_argument(
        "--token",
        default=env(ENV_TOKEN) or None,
        metavar="TOKEN",
        help="bearer token sent on every call (default: $PRUNEKIT_TOKEN; prefer the variable: "
        "arguments show in process listings)",
    )


class SecurityKwargs(TypedDict):
    token: str | None
    ca_file: str | None
    cert_file: str | None
    key_file: str | None


def security_kwargs(args: argparse.Namespace) -> SecurityKwargs:
    """The :class:`prunekit.Client` arguments of :func:`add_security_args`' options."""
    return {"token": args.token, "ca_file": args.ca_file, "cert_file": args.cert, "key_file": args.key}
