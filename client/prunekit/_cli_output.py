"""What the ``prunekit`` command writes and how it exits: exit codes, JSON on stdout, notes on stderr, and
the ``--fail-on`` rules."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from google.protobuf.message import Message

from prunekit._errors import PrunekitError, format_error
from prunekit._machine import to_json
from prunekit._render import duration, size
from prunekit.v1 import job_pb2, report_pb2

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RULE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

FAIL_ON_RULES: dict[str, report_pb2.VariantFlag.ValueType] = {
    "quality": report_pb2.VARIANT_FLAG_BELOW_QUALITY_RULE,
    "accuracy": report_pb2.VARIANT_FLAG_BELOW_ACCURACY_RULE,
    "target": report_pb2.VARIANT_FLAG_MISSES_TARGET,
    "slower": report_pb2.VARIANT_FLAG_SLOWER_THAN_BASELINE,
}
"""``--fail-on`` rule -> the variant flag that says a variant misses it."""


def fail_on_arg(text: str) -> tuple[str, ...]:
    """``quality,accuracy`` -> the rules; argparse error for an unknown one."""
    rules = tuple(r.strip().lower() for r in text.split(",") if r.strip())
    unknown = [r for r in rules if r not in FAIL_ON_RULES]
    if unknown or not rules:
        raise argparse.ArgumentTypeError(
            f"unknown rule {', '.join(unknown) or '(none)'}; choose from {', '.join(FAIL_ON_RULES)}"
        )
    return rules


def add_fail_on(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fail-on",
        type=fail_on_arg,
        default=(),
        metavar="RULE[,RULE]",
        help="exit 3 when the job succeeded but a variant misses a rule: quality (BELOW_QUALITY_RULE), "
        "accuracy (BELOW_ACCURACY_RULE), target (MISSES_TARGET), slower (SLOWER_THAN_BASELINE); "
        "candidates AUTO did not select are not judged",
    )


def missed_rules(report: report_pb2.OptimizationReport, rules: tuple[str, ...]) -> list[str]:
    """``<variant> <FLAG>`` for each judged variant that carries the flag of one of ``rules``."""
    wanted = {FAIL_ON_RULES[r] for r in rules}
    missed = []
    for variant in report.variants:
        if report_pb2.VARIANT_FLAG_NOT_SELECTED in variant.flags:
            continue
        for flag in variant.flags:
            if flag in wanted:
                missed.append(
                    f"{variant.name} {report_pb2.VariantFlag.Name(flag).removeprefix('VARIANT_FLAG_')}"
                )
    return missed


def judged(job: job_pb2.Job, rules: tuple[str, ...]) -> int:
    """The exit status of a SUCCEEDED job under ``--fail-on rules``: 3 (and a note) when a rule is missed."""
    missed = missed_rules(job.report, rules)
    if not missed:
        return EXIT_OK
    note(f"error: job {job.id} succeeded but misses --fail-on {','.join(rules)}: {', '.join(missed)}")
    return EXIT_RULE


def print_json(value: Message | Any, *, indent: int | None = 2) -> None:
    """``value`` (a message in the CLI's JSON shape, see :mod:`._machine`, or plain data) on stdout."""
    data = to_json(value) if isinstance(value, Message) else value
    separators = (",", ":") if indent is None else None
    print(json.dumps(data, indent=indent, separators=separators, allow_nan=False), flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def job_failed(job: job_pb2.Job) -> int:
    note(format_error(PrunekitError.from_job(job)))
    return EXIT_FAILED


@contextlib.contextmanager
def ticking(what: str, stream: TextIO | None = None) -> Iterator[None]:
    """While the block runs, ``what`` and the seconds so far on stderr: redrawn every second on a
    terminal, else one line at the start; then ``what: done in N s``."""
    out = stream or sys.stderr
    tty = out.isatty()
    started = time.monotonic()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):
            out.write(f"\r\x1b[K{what}... {duration(time.monotonic() - started)}")
            out.flush()

    ticker = threading.Thread(target=tick, name="cli-ticker", daemon=True)
    if tty:
        ticker.start()
    else:
        out.write(f"{what}...\n")
        out.flush()
    try:
        yield
    finally:
        stop.set()
        if tty:
            ticker.join()
            out.write("\r\x1b[K")
        out.write(f"{what}: done in {duration(time.monotonic() - started)}\n")
        out.flush()


def sent_bar(name: str, stream: TextIO | None = None) -> Callable[[int, int], None] | None:
    """An ``on_sent`` callback drawing ``uploading NAME  45% (1.2 MiB of 2.6 MiB)`` on a terminal; None
    elsewhere (logs get the one ``uploaded`` line)."""
    return transfer_bar("uploading", name, stream)


def received_bar(stream: TextIO | None = None) -> Callable[[str, int, int], None] | None:
    """An ``on_received(name, bytes, total)`` callback drawing ``downloading NAME  45% (...)`` on a
    terminal; None elsewhere (the paths written are printed at the end)."""
    out = stream or sys.stderr
    if not out.isatty():
        return None

    def draw(name: str, received: int, total: int) -> None:
        bar = transfer_bar("downloading", name, out)
        assert bar is not None
        bar(received, total)

    return draw


def transfer_bar(verb: str, name: str, stream: TextIO | None = None) -> Callable[[int, int], None] | None:
    """A ``(bytes, total)`` callback drawing ``VERB NAME  45% (1.2 MiB of 2.6 MiB)`` on a terminal, cleared
    when done; None elsewhere."""
    out = stream or sys.stderr
    if not out.isatty():
        return None

    def draw(sent: int, total: int) -> None:
        percent = sent * 100 // total if total else 100
        out.write(f"\r\x1b[K{verb} {name} {percent:3d}% ({size(sent)} of {size(total)})")
        if sent >= total:
            out.write("\r\x1b[K")
        out.flush()

    return draw
