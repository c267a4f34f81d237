"""The report's verdict rules."""

import math

import pytest

from flowbound.book.experiments.report import UNDETERMINED, verdict_by_threshold


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
    from flowbound.book.tables import table_rows

    text = table_rows(["claim", "n"], [["budget ||M r|| <= eps", 1], [r"$\|x\|$", 2]])
    lines = text.splitlines()
    assert lines[2] == r"| budget \|\|M r\|\| <= eps | 1 |"
    assert lines[3] == r"| $\|x\|$ | 2 |"  # already escaped (TeX) pipes are kept
    with pytest.raises(ValueError, match="cells"):
        table_rows(["a", "b"], [["only one"]])


def _summary(exact: dict[str, float], printed: dict[str, float]):
    """A LowerBoundSummary with Algorithm 1 / Theorem 1 ratios as given (Theorem 1 = 2)."""
    from flowbound.book.experiments.impossibility import LowerBoundSummary

    final = {(n, "true"): (2.0 * r, 2.0) for n, r in exact.items()}
    final |= {(n, "paper"): (2.0 * r, 2.0) for n, r in printed.items()}
    return LowerBoundSummary({n: {} for n in exact}, {}, {}, final, {})


@pytest.mark.parametrize(
    "exact, printed, expected",
    [
        # the published build: the printed Dg keeps Theorem 1's pair everywhere
        (
            {"nt": 20.0, "at_pgd": 25.0},
            {"nt": 1.0, "at_pgd": 1.0},
            "reproduced with the exact Jacobian; with Dg as printed on 0 of 2 networks",
        ),
        # a retrain where the printed Dg beats Theorem 1 on one network
        (
            {"nt": 20.0, "at_pgd": 25.0},
            {"nt": 1.0, "at_pgd": 4.82},
            "reproduced with the exact Jacobian; with Dg as printed on 1 of 2 networks (at_pgd)",
        ),
        ({"nt": 20.0, "at_pgd": 25.0}, {"nt": 3.0, "at_pgd": 4.82}, "reproduced"),
        ({"nt": 20.0, "at_pgd": 1.5}, {"nt": 1.0, "at_pgd": 1.0}, "partly reproduced"),
        ({"nt": 1.0, "at_pgd": 1.005}, {"nt": 3.0, "at_pgd": 3.0}, "not reproduced"),
    ],
)
def test_algorithm1_verdict_counts_the_networks_where_the_printed_jacobian_wins(
    exact, printed, expected
):
    from flowbound.book.experiments.report import algorithm1_verdict

    assert algorithm1_verdict(_summary(exact, printed)) == expected


def test_algorithm1_verdict_skips_networks_without_a_positive_theorem1_value():
    from flowbound.book.experiments.report import algorithm1_verdict

    s = _summary({"nt": 20.0, "rd": 20.0}, {"nt": 1.0, "rd": 1.0})
    s.final["rd", "true"] = (5.0, 0.0)  # no ratio for rd: nt alone decides
    assert algorithm1_verdict(s).startswith("reproduced with the exact")
    s.final["nt", "true"] = (5.0, -1.0)
    assert algorithm1_verdict(s) == UNDETERMINED
