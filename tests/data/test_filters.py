"""Case filters on manifest.csv (petctfm.data.filters): = and !=, several AND-ed, errors that name the column /
value (UsageError exit 2 for a malformed filter, InputError exit 3 for one the data cannot satisfy)."""

from __future__ import annotations

import pytest

from petctfm.core.errors import InputError, UsageError, cli_wording
from petctfm.data.filters import describe, parse_filter, parse_filters, partition, select_cases
from petctfm.io.tables import csv_text

ROWS = [("c0", "north_valley", "fdg"), ("c1", "harbor", "fdg"), ("c2", "harbor", "psma"), ("c3", "ridge", "FDG "),
        ("c4", "", "psma")]
IDS = [r[0] for r in ROWS]


@pytest.fixture
def root(tmp_path):
    (tmp_path / "manifest.csv").write_text(csv_text([{"case_id": c, "site": s, "tracer": t} for c, s, t in ROWS]))
    return tmp_path


def test_parse_equal_not_equal_and_several_values():
    f = parse_filter(" tracer = fdg ")
    assert (f.column, f.op, f.values) == ("tracer", "=", ("fdg",)) and str(f) == "tracer=fdg"
    g = parse_filter("site!=a, b")
    assert (g.column, g.op, g.values) == ("site", "!=", ("a", "b")) and str(g) == "site!=a,b"
    assert describe(parse_filters(["tracer=fdg", "site!=x"])) == ["tracer=fdg", "site!=x"]
    assert parse_filters(None) == [] and len(parse_filters("tracer=fdg")) == 1


@pytest.mark.parametrize("bad", ["tracer", "=fdg", "tracer=", "tracer=fdg,", "tracer==fdg", "a!b=c", ""])
def test_a_malformed_filter_is_a_usage_error_naming_the_argument(bad):
    with pytest.raises(UsageError, match="must be COLUMN=V") as exc:
        parse_filter(bad, "test_filter")
    assert exc.value.exit_code == 2 and cli_wording(exc.value).startswith("--test-filter ")


def test_select_keeps_the_matching_cases_in_order(root):
    assert select_cases(root, IDS, ["tracer=fdg"]) == ["c0", "c1", "c3"]  # case-insensitive, spaces stripped
    assert select_cases(root, IDS, ["tracer=psma"]) == ["c2", "c4"]
    assert select_cases(root, IDS, ["site!=north_valley"]) == ["c1", "c2", "c3", "c4"]  # an empty site stays
    assert select_cases(root, IDS, ["site=harbor,ridge"]) == ["c1", "c2", "c3"]
    assert select_cases(root, IDS, ["tracer=fdg", "site!=north_valley"]) == ["c1", "c3"]  # AND
    assert select_cases(root, IDS, []) == IDS
    assert select_cases(root, ["c2", "c1", "zz"], ["site=harbor"]) == ["c2", "c1"]  # no manifest row: out
    assert partition(root, IDS, ["tracer=fdg"]) == (["c0", "c1", "c3"], ["c2", "c4"])


def test_errors_name_the_column_or_value_and_exit_3(root, tmp_path):
    with pytest.raises(InputError, match=r"no column 'tracr' \(has case_id, site, tracer\)") as exc:
        select_cases(root, IDS, ["tracr=fdg"], "test_filter")
    assert exc.value.exit_code == 3 and "--test-filter 'tracr=fdg'" in cli_wording(exc.value)
    # a value no case has is refused, also with != (a typo would otherwise exclude nothing)
    with pytest.raises(InputError, match=r"site!=north_valey.*no case has site 'north_valey'.*harbor, north_valley"):
        select_cases(root, IDS, ["site!=north_valey"])
    with pytest.raises(InputError, match=r"'tracer=psma' and 'site=north_valley': leaves none of split 'test'"):
        select_cases(root, IDS, ["tracer=psma", "site=north_valley"], what="split 'test'")
    with pytest.raises(InputError, match="leaves none"):  # the value exists in the manifest, not among these cases
        select_cases(root, ["c0", "c1"], ["tracer=psma"])
    with pytest.raises(InputError, match="manifest.csv: not found"):
        select_cases(tmp_path / "nowhere", IDS, ["tracer=fdg"])
    with pytest.raises(InputError, match="no column 'scanner'"):
        partition(root, IDS, ["scanner=x"])
