"""Tiny files that would cost a worker a fortune: the three of issue 11, made here (``tests.bombs``).

- :func:`inlining_bomb`: local functions that each call the next one twice, ``levels`` deep; about 2 KB
  that inline to ``2 ** (levels - 1)`` nodes.
- :func:`huge_input_model`: one Identity node whose input is a ``[batch, elements]`` float32.
- :func:`write_deflate_bomb`: a zip (a ``.pt`` by its name) with one deflated entry of ``size`` zero
  bytes, written as real deflate blocks (a 64 MiB block repeated), ZIP64 sizes and the true CRC.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import onnx
from onnx import TensorProto, helper

_BLOCK = 64 << 20
_MASK = 0xFFFFFFFF


def inlining_bomb(levels: int = 31) -> onnx.ModelProto:
    """f0 calls f1 twice, ... f(levels-2) calls f(levels-1) twice; f(levels-1) is one Relu."""
    domain = "bomb"
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)]
    functions = []
    for i in range(levels):
        if i == levels - 1:
            nodes = [helper.make_node("Relu", ["x"], ["y"])]
        else:
            callee = f"f{i + 1}"
            nodes = [
                helper.make_node(callee, ["x"], ["t"], domain=domain),
                helper.make_node(callee, ["t"], ["y"], domain=domain),
            ]
        functions.append(helper.make_function(domain, f"f{i}", ["x"], ["y"], nodes, opsets))
    graph = helper.make_graph(
        [helper.make_node("f0", ["x"], ["y"], domain=domain)],
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, functions=functions, opset_imports=opsets)


def huge_input_model(elements: int = 10**9, batch: int | str = 1) -> onnx.ModelProto:
    """Identity of a ``[batch, elements]`` float32 input: a 100-byte model asking for 4 GB inputs."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, elements])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, elements])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _crc32_of_zeros(count: int) -> int:
    """zlib.crc32 of ``count`` zero bytes without reading them: the CRC register's update for a zero
    byte is linear over GF(2), so it is raised to the ``count``-th power by squaring."""

    def apply(matrix: list[int], vector: int) -> int:
        out, i = 0, 0
        while vector:
            if vector & 1:
                out ^= matrix[i]
            vector, i = vector >> 1, i + 1
        return out

    step = [~zlib.crc32(b"\0", ~(1 << i) & _MASK) & _MASK for i in range(32)]
    state = _MASK
    while count:
        if count & 1:
            state = apply(step, state)
        step = [apply(step, column) for column in step]
        count >>= 1
    return ~state & _MASK


def write_deflate_bomb(path: Path, size: int = 15 << 29, name: str = "bomb/data/0") -> Path:
    """A zip at ``path`` whose one entry inflates to ``size`` zero bytes (a multiple of 64 MiB)."""
    assert size % _BLOCK == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(_BLOCK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    data = block * (size // _BLOCK) + b"\x03\x00"  # an empty final block ends the stream
    crc, raw_name = _crc32_of_zeros(size), name.encode()
    extra = struct.pack("<HHQQ", 1, 16, size, len(data))
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 33, crc, _MASK, _MASK, len(raw_name), 20)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        45,
        45,
        0,
        8,
        0,
        33,
        crc,
        _MASK,
        _MASK,
        len(raw_name),
        20,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + raw_name + extra + data
    directory = central + raw_name + extra
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(directory), len(body), 0)
    path.write_bytes(body + directory + end)
    return path
