"""Fine-tuning throughput of a worker under CPU contention: default threads against the worker's settings.

The digits fine-tune of ``make demo`` (``examples/recover.yaml``: 400 steps of AdamW at 3e-3, batch
32, cosine schedule, distillation at T 4 and alpha 0.5 from a teacher, evaluation every 50 steps) runs
in a subprocess started like a worker: the sandbox's allow-listed environment, a fresh session, then
``torch`` configured as the worker configures it. It runs alone and beside k = 1 and 3 competing
busy processes (pure-Python loops, bounded in time, killed at the end), in two set-ups:

- ``before``: the environment workers had before, without thread settings, and torch's defaults
  (its own thread count, GNU OpenMP's spinning waits);
- ``after``: what the sandbox gives now (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = the CPUs the
  worker may use, ``OMP_WAIT_POLICY=PASSIVE``) and ``torch.set_num_threads`` to match;
- ``after, 1 thread``: the same with ``OMP_NUM_THREADS=1`` (what an operator may set for small models).

Printed: steps/s and the ratio to the same set-up's solo run, per k. Goal: with k competitors the
ratio is at least 1/(k+1). The machine's own load adds to k: run it on a quiet machine.

Usage: ``python bench/contention.py [--steps 400] [--competitors 1 3] [--repeats 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "service"), str(ROOT / "client")]

from prunekit_server.jobs.execution.sandbox import worker_env  # noqa: E402
from prunekit_server.jobs.worker.threads import THREAD_VARS, usable_cpus  # noqa: E402

_FINETUNE = textwrap.dedent(
    """
    import json, sys, time
    sys.path[:0] = {paths!r}
    import torch
    if {after!r}:
        from prunekit_server.jobs.worker.threads import configure_torch, worker_threads
        configure_torch(worker_threads())
    from scripts.digits import SmallCNN, digits_split
    from prunekit_server.training.finetune import FinetuneConfig, finetune
    train, held_out = digits_split()
    torch.manual_seed(1)
    teacher = SmallCNN().eval()
    torch.manual_seed(0)
    student = SmallCNN()
    config = FinetuneConfig(
        epochs=0, steps={steps}, batch_size=32, optimizer="adamw", lr=3e-3, schedule="cosine",
        eval_every=50, seed=0, device="cpu", temperature=4.0, alpha=0.5,
    )
    started = time.perf_counter()
    finetune(student, teacher, train, held_out, config)
    seconds = time.perf_counter() - started
    print(json.dumps({{"seconds": seconds, "threads": torch.get_num_threads()}}))
    """
)

_BUSY = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


SETUPS = ("before", "after", "after, 1 thread")


def _env(setup: str, workdir: Path) -> dict[str, str]:
    env = worker_env(workdir)
    if setup == "before":
        for name in THREAD_VARS:
            if name not in os.environ:
                env.pop(name, None)
    elif setup == "after, 1 thread":
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


def run_finetune(setup: str, steps: int, competitors: int, limit: float = 600.0) -> tuple[float, int]:
    """Seconds of one fine-tune (and the torch threads it used) beside ``competitors`` busy loops."""
    busy = [
        subprocess.Popen([sys.executable, "-c", _BUSY.format(limit=limit)], start_new_session=True)
        for _ in range(competitors)
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="prunekit-contention-") as tmp:
            workdir = Path(tmp)
            (workdir / "tmp").mkdir()
            paths = [str(ROOT), str(ROOT / "service"), str(ROOT / "client")]
            code = _FINETUNE.format(paths=paths, after=setup != "before", steps=steps)
            done = subprocess.run(
                [sys.executable, "-c", code],
                cwd=workdir,
                env=_env(setup, workdir),
                capture_output=True,
                text=True,
                timeout=limit,
                start_new_session=True,
                check=True,
            )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return float(result["seconds"]), int(result["threads"])
    finally:
        for proc in busy:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--competitors", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell; the fastest counts")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"usable CPUs {usable_cpus()}, load average {load:.2f} at start, {args.steps} steps per run")
    ks = [0, *args.competitors]
    rates: dict[tuple[str, int], float] = {}
    threads: dict[str, int] = {}
    for k in ks:
        for setup in SETUPS:
            runs = [run_finetune(setup, args.steps, k) for _ in range(args.repeats)]
            threads[setup] = runs[0][1]
            rates[(setup, k)] = args.steps / min(s for s, _ in runs)
            print(f"  k={k} {setup}: {rates[(setup, k)]:.1f} steps/s", flush=True)
    heads = " | ".join(f"{setup} ({threads[setup]} threads)" for setup in SETUPS)
    print(f"\n| competitors | goal | {heads} |")
    print("|---|---|" + "---|" * len(SETUPS))
    for k in ks:
        cells = [f"{rates[(s, k)]:6.1f} steps/s ({rates[(s, k)] / rates[(s, 0)]:.2f}x solo)" for s in SETUPS]
        goal = "-" if k == 0 else f">= {1 / (k + 1):.2f}x"
        print(f"| {k} | {goal} | {' | '.join(cells)} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
