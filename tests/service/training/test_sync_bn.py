"""BatchNorm synced over 2 real ``gloo`` ranks equals one process's on the whole batch: outputs,
input and parameter gradients and running statistics, for uneven shards, 2-D and 4-D inputs, a set
momentum and the cumulative average (momentum None); eval mode and a single process are untouched."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunekit_server.jobs.worker.ranks import join
from prunekit_server.training.datasets import Batch
from prunekit_server.training.replicas import shard
from prunekit_server.training.sync_bn import synced_batchnorm
from tests.two_ranks import run_two_ranks

#: (layer, input shape, momentum, input mean, dtype): a large mean against a spread of 3 checks the
#: variance is not E[x²] - E[x]² (which cancels to nothing at a mean of 3000).
CASES = [
    (nn.BatchNorm1d, (7, 5), 0.1, 1.0, torch.float32),
    (nn.BatchNorm2d, (5, 3, 4, 4), None, 1.0, torch.float32),
    (nn.BatchNorm1d, (9, 4), 0.1, 100.0, torch.float32),
    (nn.BatchNorm2d, (5, 2, 3, 3), 0.1, 3000.0, torch.float64),
]
TOLERANCE = 1e-5


def _case(index: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    kind, shape, momentum, mean, dtype = CASES[index]
    torch.manual_seed(11)
    bn = kind(shape[1], momentum=momentum).to(dtype)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(*shape, dtype=torch.float64) * 3 + mean).to(dtype)
    return bn, x, torch.randn(*shape, dtype=dtype)


def _step(bn: nn.Module, x: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    for _ in range(2):  # two steps: the running statistics move twice
        bn.zero_grad()
        x.grad = None
        y = bn(x)
        (y * c).sum().backward()
    assert x.grad is not None
    return {
        "y": y.detach(),
        "x_grad": x.grad,
        **{f"{n}_grad": p.grad for n, p in bn.named_parameters() if p.grad is not None},
        **{n: b.clone() for n, b in bn.named_buffers()},
    }


def _rank(rank: int, port: int, index: int, results: Any) -> None:
    torch.set_num_threads(1)
    replicas = join(rank, 2, port=port)
    try:
        bn, x, c = _case(index)
        part = shard(Batch((x.numpy(), c.numpy()), None, None), rank, 2)
        xs, cs = (torch.from_numpy(a) for a in part.inputs)
        with synced_batchnorm(bn, replicas) as synced:
            assert synced == 1
            got = _step(bn, xs, cs)
        grads = [got["weight_grad"], got["bias_grad"]]
        replicas.average(grads)  # the ranks' parameter gradients summed (x2 below) are the batch's
        results.put((rank, {k: v.numpy() for k, v in got.items()}))
    finally:
        replicas.leave()


def _close(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=TOLERANCE)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_two_synced_ranks_equal_one_process_on_the_whole_batch(index: int) -> None:
    bn, x, c = _case(index)
    one = _step(bn, x, c)
    got = run_two_ranks(_rank, index, timeout=300)
    for key in ("y", "x_grad"):
        both = torch.cat([torch.from_numpy(got[0][key]), torch.from_numpy(got[1][key])])
        _close(both, one[key])
    for key in ("weight_grad", "bias_grad"):
        torch.testing.assert_close(
            torch.from_numpy(got[0][key]) * 2, one[key], atol=TOLERANCE, rtol=TOLERANCE
        )
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        for rank in (0, 1):
            torch.testing.assert_close(
                torch.from_numpy(got[rank][key]), one[key], atol=TOLERANCE, rtol=TOLERANCE
            )


class One:
    """Replicas of a group whose other rank sends zeros (the sums are this rank's alone)."""

    rank, world = 0, 2

    def average(self, tensors: list[torch.Tensor]) -> None:
        for tensor in tensors:
            tensor /= 2


def test_eval_mode_and_one_process_are_left_alone() -> None:
    bn, x, _ = _case(1)
    with synced_batchnorm(bn, None) as synced:
        assert synced == 0
    assert "forward" not in vars(bn)
    one_value = pytest.raises(ValueError, match="more than 1 value per channel")
    with synced_batchnorm(bn, One()), one_value:  # type: ignore[arg-type]
        bn(x[:1, :, :1, :1])
    bn.eval()
    expected = bn(x)

    class Silent(One):
        def average(self, tensors: list[torch.Tensor]) -> None:
            raise AssertionError("eval mode must not talk to the ranks")

    with synced_batchnorm(bn, Silent()) as synced:  # type: ignore[arg-type]
        assert synced == 1
        torch.testing.assert_close(bn(x), expected)
    assert "forward" not in vars(bn)
