"""Markdown tables for the chapters: cells escaped, rows checked against the header.

The experiments' table builders (``experiments.*_table``) return a header and rows of
formatted cells; :func:`table_rows` turns them into Markdown. The two tables that
format their own rows (the Introduction's evaluation, Background's midpoint errors)
live here too. No plotting: figures are in :mod:`flowbound.book.plots`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["table_cell", "table_evaluation", "table_midpoint", "table_rows"]


def table_cell(value: Any) -> str:
    """One Markdown table cell: bare pipes escaped (a "|", as in ||M r||, would
    split the cell; an already escaped one, as in TeX's \\|, is kept) and line
    breaks folded into spaces."""
    return re.sub(r"(?<!\\)\|", r"\\|", " ".join(str(value).split("\n")))


def table_rows(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table from a header and rows of already formatted cells.

    Every cell goes through :func:`table_cell`; a row with another number of
    cells than the header is an error, not a broken table.
    """
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells, the header {len(header)}: {row}")
    lines = ["| " + " | ".join(map(table_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(table_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def table_midpoint(d: dict[str, Any]) -> str:
    """Markdown table of the midpoint errors (the data of plot_midpoint_convergence)."""
    lines = [
        "| n | mean error, exact Jacobian | mean error, Dg as printed |",
        "|---:|---:|---:|",
    ]
    for n, t, p in zip(d["n"], d["abs_err_true"], d["abs_err_paper"], strict=True):
        lines.append(f"| {int(n)} | {t:.2e} | {p:.2e} |")
    return "\n".join(lines)


def table_evaluation(rows: list[dict[str, Any]]) -> str:
    """Markdown table of clean accuracy and stAdv results per variant, with
    95% Wilson intervals, under both success definitions."""
    header = [
        "variant",
        "hidden",
        "seed",
        "clean accuracy",
        "median logit margin",
        "stAdv success, any iterate",
        "stAdv success, last iterate",
        "accuracy under stAdv, any / last iterate",
        "mean l_diff of successes",
        "training time (s)",
    ]
    body = [
        [
            f"`{r['variant']}`",
            r["hidden"],
            r["seed"],
            f"{r['clean_accuracy']:.4f}",
            f"{r['median_margin']:.2f}",
            r["stadv_success"].text(),
            r["stadv_success_final"].text(),
            f"{r['stadv_accuracy'].value:.3f} / {r['stadv_accuracy_final'].value:.3f}",
            f"{r['mean_l_diff']:.2f}",
            f"{r['train_seconds']:.1f}",
        ]
        for r in rows
    ]
    return table_rows(header, body)
