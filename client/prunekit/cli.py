"""The ``prunekit`` command: analyse models, run optimization jobs, follow them and fetch their artifacts.

Exit status: 0 when the command succeeded (for ``optimize`` and ``jobs watch``: the job SUCCEEDED); 1 for an
RPC error, an unreachable server or a job that FAILED or was CANCELLED; 2 for usage and spec-file errors; 3
when the job succeeded but a ``--fail-on`` rule is missed; 130 when interrupted. A closed stdout (``| head``)
ends the command quietly with 0.
Errors are one ``error: <CODE_NAME> <REASON>: <message>`` line on stderr, then one ``  - field: description``
line per violation. Results go to stdout, progress and notes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from prunekit._auth import ENV_SERVER
from prunekit._cli_args import (
    add_security_args,
    file_arg,
    input_arg,
    label_arg,
    model_arg,
    ratios_arg,
    security_kwargs,
)
from prunekit._cli_datasets import add_data_options, add_upload_dataset, attach_data
from prunekit._cli_jobs import add_jobs
from prunekit._cli_output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    add_fail_on,
    job_failed,
    judged,
    note,
    print_json,
    received_bar,
    sent_bar,
    ticking,
    transfer_bar,
)
from prunekit._client import Client
from prunekit._errors import PrunekitError, SpecError, format_error
from prunekit._model_format import infer_format
from prunekit._render import ProgressPrinter, render_analysis, render_report, size, state_name
from prunekit._spec import load_checked_spec
from prunekit._transfer import artifact_path
from prunekit._version import __version__
from prunekit.text.markdown import render_markdown
from prunekit.v1 import job_pb2

__all__ = ["build_parser", "main"]

Handler = Callable[[Client, argparse.Namespace], int]


def _proto_json(message: Message) -> object:
    """The proto's own JSON mapping, as report.json holds it (``--json`` output has its own shape)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _analyze(client: Client, args: argparse.Namespace) -> int:
    with ticking(f"analyzing {Path(args.model).name}"):
        analysis = client.analyze(
            args.model,
            args.inputs or None,
            sensitivity=args.sensitivity or bool(args.sensitivity_ratios),
            sensitivity_ratios=args.sensitivity_ratios or (),
        )
    if args.json:
        print_json(analysis)
    else:
        print(render_analysis(analysis))
    return EXIT_OK


def _finish_success(client: Client, job: job_pb2.Job, args: argparse.Namespace) -> None:
    if args.json:
        print_json(job.report)
    else:
        print(f"Job {job.id} SUCCEEDED\n")
        print(render_report(job.report))
    if args.out is None:
        return
    out = Path(args.out)
    paths = client.download_artifacts(job, out, on_received=received_bar())
    if "report.json" not in {a.name for a in job.artifacts}:
        report_path = out / "report.json"
        report_path.write_text(json.dumps(_proto_json(job.report), indent=2) + "\n", encoding="utf-8")
        paths.append(report_path)
    note(f"wrote {len(paths)} file{'s' if len(paths) != 1 else ''} to {out}:")
    for path in paths:
        note(f"  {path}")


def _optimize(client: Client, args: argparse.Namespace) -> int:
    model_format = infer_format(Path(args.model))
    spec = load_checked_spec(args.spec, model_format, train=args.train or [], eval=args.eval or [])
    model = client.upload_model(args.model, format=model_format, on_sent=sent_bar(Path(args.model).name))
    attach_data(client, spec, args)
    note(f"uploaded {model.filename} ({size(model.size_bytes)}, sha256 {model.sha256[:12]})")
    job = client.create_job(model, spec, labels=dict(args.labels or []))
    if args.no_wait:
        if args.json:
            print_json(job)
        else:
            print(job.id)
        return EXIT_OK
    note(f"job {job.id} created")
    printer = ProgressPrinter(sys.stderr)
    try:
        final = client.wait(job.id, on_progress=printer)
    except KeyboardInterrupt:
        printer.close()
        note(
            f"interrupted; job {job.id} keeps running on the server.\n"
            f"  follow it: prunekit jobs watch {job.id}\n"
            f"  cancel it: prunekit jobs cancel {job.id}"
        )
        return EXIT_INTERRUPTED
    except PrunekitError as err:
        printer.close()
        if err.job is not None and args.json:
            print_json(err.job)
        raise
    printer.close()
    _finish_success(client, final, args)
    return judged(final, args.fail_on)


def _download(client: Client, args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.names:
        paths = [
            client.download_artifact(
                args.job_id, n, artifact_path(out, n), on_received=transfer_bar("downloading", n)
            )
            for n in args.names
        ]
    else:
        paths = client.download_artifacts(args.job_id, out, on_received=received_bar())
    for path in paths:
        print(path)
    return EXIT_OK


REPORT_FILES = {"html": "report.html", "md": "report.md", "json": "report.json"}


def _report(client: Client, args: argparse.Namespace) -> int:
    job = client.get_job(args.job_id)
    if job.state != job_pb2.JOB_STATE_SUCCEEDED:
        if job.state in (job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED):
            return job_failed(job)
        note(f"error: job {job.id} is {state_name(job.state)}; its report comes when it succeeds")
        return EXIT_FAILED
    name = REPORT_FILES[args.format]
    rendered = {
        "md": lambda: render_markdown(job.report),
        "json": lambda: json.dumps(_proto_json(job.report), indent=2) + "\n",
    }
    if args.out is None and args.format in rendered:
        sys.stdout.write(rendered[args.format]())
        return EXIT_OK
    out = Path(args.out or ".")
    if name in {a.name for a in job.artifacts}:
        path = client.download_artifact(job.id, name, artifact_path(out, name))
    elif args.format in rendered:
        out.mkdir(parents=True, exist_ok=True)
        path = out / name
        path.write_text(rendered[args.format](), encoding="utf-8")
    else:
        note(f"error: job {job.id} has no {name} (it was made by a server that did not render one)")
        return EXIT_FAILED
    print(path)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``prunekit`` command."""
    parser = argparse.ArgumentParser(
        prog="prunekit",
        description="Analyse, prune and measure models with a prunekit server.",
        epilog="exit status: 0 success, 1 RPC error, unreachable server or failed/cancelled job, 2 usage or "
        "spec error, 3 job succeeded but missed a --fail-on rule, 130 interrupted",
    )
    parser.add_argument(
        "--server",
        default=os.environ.get(ENV_SERVER) or "localhost:50051",
        metavar="HOST:PORT",
        help="server address (default: $PRUNEKIT_SERVER or localhost:50051)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="deadline of each call in seconds (default 30; uploads and downloads get 600)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=4,
        metavar="N",
        help="repeats of a call after a transient error (default 4)",
    )
    add_security_args(parser)
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_analyze(commands)
    _add_optimize(commands)
    add_upload_dataset(commands)
    add_jobs(commands)
    _add_download_and_report(commands)
    return parser


def _add_analyze(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("analyze", help="upload a model and describe its layers, parameters and MACs")
    p.add_argument("model", type=model_arg, metavar="MODEL", help="an .onnx or TorchScript (.pt) file")
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        type=input_arg,
        metavar="NAME:SHAPE",
        help="a concrete input shape, e.g. x:1x3x224x224 (repeatable; required for TorchScript)",
    )
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="also measure how the outputs move when each layer group alone is pruned (slower)",
    )
    p.add_argument(
        "--sensitivity-ratios",
        type=ratios_arg,
        metavar="R,R,...",
        help="the ratios of --sensitivity (default 0.1,0.2,0.3,0.5,0.7); implies --sensitivity",
    )
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")
    p.set_defaults(handler=_analyze)


def _add_optimize(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("optimize", help="upload a model, run an optimization job and show its report")
    p.add_argument("model", type=model_arg, metavar="MODEL", help="an .onnx or TorchScript (.pt) file")
    p.add_argument("--spec", required=True, type=file_arg, metavar="SPEC", help="spec file (YAML or JSON)")
    p.add_argument("--out", metavar="DIR", help="download every artifact and report.json into DIR")
    p.add_argument(
        "--json", action="store_true", help="print only the report as JSON on stdout (proto field names)"
    )
    p.add_argument("--no-wait", action="store_true", help="print the job id and exit once the job is created")
    p.add_argument(
        "--label", dest="labels", action="append", type=label_arg, metavar="KEY=VALUE", help="a job label"
    )
    add_fail_on(p)
    add_data_options(p)
    p.set_defaults(handler=_optimize)


def _add_download_and_report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("download", help="download the artifacts of a succeeded job")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--out", default=".", metavar="DIR", help="directory to write into (default .)")
    p.add_argument(
        "--name", dest="names", action="append", metavar="NAME", help="only this artifact (repeatable)"
    )
    p.set_defaults(handler=_download)

    p = commands.add_parser(
        "report",
        help="show or fetch a succeeded job's report (Markdown, the HTML page with plots, or JSON)",
        description="Without --out, Markdown and JSON are printed (rendered from the job's report); with "
        "--out DIR the stored report.<format> is downloaded into DIR. HTML always goes to a file "
        "(DIR, default the current directory).",
    )
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--format", choices=sorted(REPORT_FILES), default="md", help="md (default), html or json")
    p.add_argument("--out", metavar="DIR", help="write report.<format> into DIR instead of printing")
    p.set_defaults(handler=_report)


PING_TIMEOUT_S = 5.0


def _unreachable(client: Client, server: str, timeout: float) -> str | None:
    """One health check first, without retries: the error line for a server that is not there (None when
    it answers), so that the command says so in one clear line at once rather than after retried calls."""
    try:
        client.ping(timeout)
    except PrunekitError as err:
        why = "connection refused" if "refused" in err.message.lower() else err.message.splitlines()[0]
        return (
            f"error: {err.code_name}: cannot reach a prunekit server at {server} ({why}); "
            "is it running? Set --server or PRUNEKIT_SERVER"
        )
    return None


def _quiet_stdout() -> None:
    """The reader of stdout went away (``| head``): drop what is left instead of failing at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (``sys.argv[1:]`` when None) and returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.retries < 0:
        parser.error("--retries must be >= 0")
    if getattr(args, "limit", 1) <= 0:
        parser.error("--limit must be positive")
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    handler: Handler = args.handler
    try:
        security = security_kwargs(args)
        retries, unreachable = args.retries, None
        with Client(args.server, timeout=args.timeout, retries=0, **security) as probe:
            unreachable = _unreachable(probe, args.server, min(args.timeout, PING_TIMEOUT_S))
        if unreachable is not None:
            retries = 0  # local checks (a spec file) still run and speak first; the first call fails at once
        with Client(args.server, timeout=args.timeout, retries=retries, **security) as client:
            try:
                return handler(client, args)
            except PrunekitError as err:
                if unreachable is None or err.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                note(unreachable)
                return EXIT_FAILED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except SpecError as err:
        note(format_error(err))
        return EXIT_USAGE
    except PrunekitError as err:
        note(format_error(err))
        return EXIT_FAILED
    except OSError as err:
        note(f"error: {err}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        note("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
