"""One CSV cell encoding for every table: None and NaN empty, containers as sorted-key JSON, numpy scalars
as numbers, extra keys ignored, missing keys empty."""

from __future__ import annotations

import csv
import io

import numpy as np

from petctfm.io.tables import csv_text


def test_csv_text_cells_and_columns():
    rows = [{"a": 1.5, "b": None, "c": float("nan"), "d": {"y": 2, "x": [1, 2]}, "e": np.float32(0.25),
             "ignored": "z"},
            {"a": np.int64(3), "d": (4, 5)}]
    text = csv_text(rows, ["a", "b", "c", "d", "e"])
    assert text.splitlines()[0] == "a,b,c,d,e"
    back = list(csv.DictReader(io.StringIO(text)))
    assert back[0] == {"a": "1.5", "b": "", "c": "", "d": '{"x": [1, 2], "y": 2}', "e": "0.25"}
    assert back[1] == {"a": "3", "b": "", "c": "", "d": "[4, 5]", "e": ""}


def test_csv_text_default_columns_and_empty():
    assert csv_text([{"x": 1, "y": 2}]) == "x,y\n1,2\n"
    assert csv_text([]) == ""
    assert csv_text([], ["x"]) == "x\n"
