"""Data-parallel fine-tuning time on CPU: the digits CNN, ``--steps`` steps of batch ``--batch``, by one
process and by ``--workers`` gloo ranks (local processes on this machine's loopback, as a job's
worker starts them).

Printed: each run's training seconds (``FinetuneResult.seconds``, rank 0's for the ranks; process
start and joining the group not counted), held-out accuracy, and how far the ranks' weights end from
one process's (relative L2). On a machine with 2 cores shared with other work the ranks are not
faster: the point is that they compute the same steps. Say what else ran.

Usage: ``python bench/finetune_workers.py [--steps 200] [--batch 64] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "service"), str(ROOT / "client")]

import torch  # noqa: E402
from scripts.digits import SmallCNN, digits_split  # noqa: E402

from prunekit_server.jobs.worker.ranks import host, join  # noqa: E402
from prunekit_server.training.finetune import FinetuneConfig, finetune  # noqa: E402


def _run(steps: int, batch: int, replicas: Any = None) -> tuple[dict[str, Any], float, float]:
    torch.set_num_threads(1)
    train, held_out = digits_split()
    torch.manual_seed(7)
    model = SmallCNN()
    config = FinetuneConfig(epochs=0, steps=steps, batch_size=batch, optimizer="sgd", lr=0.05, device="cpu")
    result = finetune(model, None, train, held_out, config, replicas=replicas)
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return weights, result.seconds, float(result.final_metric or 0.0)


def _rank(rank: int, world: int, port: int, steps: int, batch: int, results: Any) -> None:
    replicas = join(rank, world, port=port)
    try:
        results.put((rank, _run(steps, batch, replicas)))
    finally:
        replicas.leave()


def _apart(a: dict[str, Any], b: dict[str, Any]) -> float:
    keys = [k for k in a if a[k].dtype.kind == "f"]
    diff = torch.cat([torch.from_numpy(a[k] - b[k]).reshape(-1) for k in keys]).norm()
    return float(diff / torch.cat([torch.from_numpy(a[k]).reshape(-1) for k in keys]).norm())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    one, one_s, one_acc = _run(args.steps, args.batch)
    print(f"1 process: {one_s:.2f} s, accuracy {one_acc:.4f}")
    store = host(args.workers)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    ranks = [
        context.Process(target=_rank, args=(r, args.workers, store.port, args.steps, args.batch, results))
        for r in range(args.workers)
    ]
    for process in ranks:
        process.start()
    got = dict(results.get(timeout=1800) for _ in ranks)
    for process in ranks:
        process.join(timeout=60)
    weights, seconds, accuracy = got[0]
    print(
        f"{args.workers} ranks: {seconds:.2f} s, accuracy {accuracy:.4f}, "
        f"weights {_apart(weights, one):.4f} from 1 process's (relative L2)"
    )


if __name__ == "__main__":
    main()
