"""``prunekit jobs list | get | cancel | watch | delete``."""

from __future__ import annotations

import argparse
import itertools
import sys

from prunekit._cli_args import label_arg
from prunekit._cli_output import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_fail_on,
    job_failed,
    judged,
    note,
    print_json,
)
from prunekit._client import Client
from prunekit._machine import job_event, to_json
from prunekit._render import ProgressPrinter, render_job, render_jobs, render_report, state_name
from prunekit.v1 import job_pb2

__all__ = ["add_jobs", "show_job"]


def _jobs_list(client: Client, args: argparse.Namespace) -> int:
    states = [job_pb2.JobState.Value(f"JOB_STATE_{s}") for s in args.states or []]
    listed = client.iter_jobs(min(args.limit, 500), states=states, labels=dict(args.labels or []))
    jobs = list(itertools.islice(listed, args.limit))
    if args.json:
        if not args.reports:
            for job in jobs:
                job.ClearField("report")
        print_json([to_json(j) for j in jobs])
    elif jobs:
        print(render_jobs(jobs))
    else:
        note("no jobs")
    return EXIT_OK


def show_job(job: job_pb2.Job, as_json: bool) -> None:
    """The job (and its report when it succeeded) as text, or as JSON."""
    if as_json:
        print_json(job)
        return
    print(render_job(job))
    if job.state == job_pb2.JOB_STATE_SUCCEEDED and job.HasField("report"):
        print()
        print(render_report(job.report))


def _jobs_get(client: Client, args: argparse.Namespace) -> int:
    show_job(client.get_job(args.job_id), args.json)
    return EXIT_OK


def _jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel_job(args.job_id)
    if args.json:
        print_json(job)
    else:
        print(f"job {job.id} {state_name(job.state)}")
    return EXIT_OK


def _jobs_delete(client: Client, args: argparse.Namespace) -> int:
    deleted = client.delete_job(args.job_id, cancel=args.cancel)
    if args.json:
        print_json({"job_id": args.job_id, "deleted": deleted}, indent=None)
    else:
        print(f"job {args.job_id} {'deleted' if deleted else 'not found (nothing to delete)'}")
    return EXIT_OK


def _jobs_watch(client: Client, args: argparse.Namespace) -> int:
    printer = ProgressPrinter(sys.stderr)
    final: job_pb2.Job | None = None
    try:
        for job in client.watch_job(args.job_id):
            final = job
            if args.json:
                print_json(job_event(job), indent=None)
            else:
                printer(job)
    except KeyboardInterrupt:
        printer.close()
        note(f"interrupted; job {args.job_id} keeps running on the server")
        return EXIT_INTERRUPTED
    printer.close()
    if final is None:
        return job_failed(job_pb2.Job(id=args.job_id))
    if not args.json:
        show_job(final, as_json=False)
    if final.state != job_pb2.JOB_STATE_SUCCEEDED:
        return job_failed(final)
    return judged(final, args.fail_on)


def add_jobs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jobs = commands.add_parser("jobs", help="list, inspect, cancel, watch and delete jobs")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    p = job_commands.add_parser("list", help="the newest jobs")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N jobs (default 20)")
    p.add_argument("--json", action="store_true", help="a JSON list of jobs (reports only with --reports)")
    p.add_argument("--reports", action="store_true", help="with --json: each job's report too")
    p.add_argument(
        "--state",
        dest="states",
        action="append",
        type=str.upper,
        choices=["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"],
        help="only jobs in this state (repeatable: any of them)",
    )
    p.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=label_arg,
        metavar="KEY=VALUE",
        help="only jobs with this label (repeatable: all of them)",
    )
    p.set_defaults(handler=_jobs_list)
    for name, handler, text in (
        ("get", _jobs_get, "show one job (and its report when it succeeded)"),
        ("cancel", _jobs_cancel, "cancel a pending or running job"),
        ("watch", _jobs_watch, "follow a job until it ends (exit 0 only when it succeeds)"),
    ):
        p = job_commands.add_parser(name, help=text)
        p.add_argument("job_id", metavar="ID")
        help_text = "one compact JSON progress event per line" if name == "watch" else "the job as JSON"
        p.add_argument("--json", action="store_true", help=help_text)
        if name == "watch":
            add_fail_on(p)
        p.set_defaults(handler=handler)
    p = job_commands.add_parser(
        "delete", help="delete an ended job: its record, artifacts and checkpoints (idempotent)"
    )
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--cancel", action="store_true", help="cancel the job first if it is still running")
    p.add_argument("--json", action="store_true", help='print {"job_id": ..., "deleted": true|false}')
    p.set_defaults(handler=_jobs_delete)
