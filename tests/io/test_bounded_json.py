"""Bounded JSON parsing: size, depth, long numbers, non-finite numbers, non-regular files."""

from __future__ import annotations

import os

import pytest

from petctfm.core.errors import InputError
from petctfm.io.bounded_json import MAX_DEPTH, load_bounded_file, loads_bounded


def test_plain_documents_parse():
    assert loads_bounded('{"a": [1, 2.5, "x]]]{{{", {"b": null}]}', what="t") == {
        "a": [1, 2.5, "x]]]{{{", {"b": None}]}
    assert loads_bounded(b'[[1e3]]', what="t") == [[1000.0]]


@pytest.mark.parametrize("text, words", [
    ("[" * 50_000 + "]" * 50_000, "nested deeper"),
    ('{"v": ' + "9" * 4000 + "}", "number longer"),
    ('{"v": 1e999}', "out of range"),
    ('{"v": NaN}', "not valid JSON"),
    ('{"v": ', "not valid JSON"),
])
def test_hostile_documents_give_one_line(text, words):
    with pytest.raises(InputError) as exc:
        loads_bounded(text, what="body")
    msg = str(exc.value)
    assert msg.startswith("body: ") and words in msg and "\n" not in msg


def test_depth_limit_is_exact():
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads_bounded(ok, what="t") is not None
    with pytest.raises(InputError):
        loads_bounded("[" + ok + "]", what="t")


def test_size_cap_and_bytes_decoding():
    with pytest.raises(InputError, match="more than the limit"):
        loads_bounded("[" + "1," * 100 + "1]", what="t", max_bytes=50)
    with pytest.raises(InputError, match="not UTF-8"):
        loads_bounded(b'"\xff"', what="t")


def test_files_regular_only(tmp_path):
    good = tmp_path / "p.json"
    good.write_text('{"points": []}')
    assert load_bounded_file(good) == {"points": []}
    with pytest.raises(InputError, match="a folder"):
        load_bounded_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_bounded_file(fifo)  # must not block
    with pytest.raises(InputError, match="file not found"):
        load_bounded_file(tmp_path / "missing.json")
    big = tmp_path / "big.json"
    big.write_text("[" + "0," * 100 + "0]")
    with pytest.raises(InputError, match="more than the JSON limit"):
        load_bounded_file(big, max_bytes=64)
