"""Fuzzing the ``.npy`` header reader: any member bytes give a header or ``ValueError``, nothing else."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from prunekit_server.npy_headers import MAX_HEADER_BYTES, read_header

from .strategies import FUZZ

MAGIC = b"\x93NUMPY"


def _archive(member: bytes) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", member)
    return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))


def _header_bytes(text: bytes, version: int) -> bytes:
    size = len(text).to_bytes(2 if version == 1 else 4, "little")
    return MAGIC + bytes([version, 0]) + size + text


def _check(member: bytes) -> None:
    try:
        shape, dtype = read_header(_archive(member), "x.npy")
    except ValueError:
        return
    assert all(isinstance(d, int) and d >= 0 for d in shape)
    assert isinstance(dtype, np.dtype)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(member: bytes) -> None:
    _check(member)


@FUZZ
@given(st.binary(max_size=256), st.sampled_from([1, 2, 3]))
def test_random_header_text_after_a_valid_magic(text: bytes, version: int) -> None:
    _check(_header_bytes(text, version))


_DICT_PIECES = st.one_of(
    st.just(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"),
    st.builds(
        lambda d, f, s: b"{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (d, f, s),
        st.sampled_from([b"'<f4'", b"'|O'", b"'<i8'", b"[('a', '<f4')]", b"'>c16'", b"1", b"'x'"]),
        st.sampled_from([b"False", b"True", b"0", b"None"]),
        st.one_of(
            st.lists(st.integers(-(2**70), 2**70), max_size=9).map(
                lambda dims: b"(" + b", ".join(str(d).encode() for d in dims) + b",)"
            ),
            st.sampled_from([b"()", b"(-1,)", b"[1]", b"'a'", b"(" * 200 + b")" * 200, b"((1,),)"]),
        ),
    ),
)


@FUZZ
@given(_DICT_PIECES, st.sampled_from([1, 2]))
def test_plausible_dictionaries(text: bytes, version: int) -> None:
    _check(_header_bytes(text.ljust(118) + b"\n", version))


def test_a_header_longer_than_the_cap_is_refused_without_reading_it() -> None:
    text = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" + b" " * MAX_HEADER_BYTES + b"\n"
    _check(_header_bytes(text, 2))
