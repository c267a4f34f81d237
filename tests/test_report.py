"""The report's verdict rules."""

import math

import pytest

from flowbound.experiments.report import UNDETERMINED, verdict_by_threshold


@pytest.mark.parametrize(
    "value, higher, expected",
    [
        (0.05, True, "reproduced"),
        (0.04, True, "reproduced"),
        (0.01, True, "partly reproduced"),
        (0.0, True, "not reproduced"),
        (-0.2, True, "not reproduced"),
        (-0.06, False, "reproduced"),
        (-0.01, False, "partly reproduced"),
        (0.02, False, "not reproduced"),
        (math.nan, True, UNDETERMINED),
        (math.inf, False, UNDETERMINED),
    ],
)
def test_verdicts(value, higher, expected):
    full, partial = (0.04, 0.0) if higher else (-0.05, 0.0)
    assert verdict_by_threshold(value, full, partial, higher=higher) == expected


def test_table_rows_escape_pipes_and_refuse_ragged_rows():
    from flowbound.plots import table_rows

    text = table_rows(["claim", "n"], [["budget ||M r|| <= eps", 1], [r"$\|x\|$", 2]])
    lines = text.splitlines()
    assert lines[2] == r"| budget \|\|M r\|\| <= eps | 1 |"
    assert lines[3] == r"| $\|x\|$ | 2 |"  # already escaped (TeX) pipes are kept
    with pytest.raises(ValueError, match="cells"):
        table_rows(["a", "b"], [["only one"]])
