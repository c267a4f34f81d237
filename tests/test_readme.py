"""The README's library example runs as printed (on the smoke profile's network)."""

from __future__ import annotations

import contextlib
import io
import re

from conftest import ROOT


def test_the_five_line_example_runs(mnist_dir):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The library in five lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) == 5
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace('"paper"', '"smoke"'), {})  # the smoke network trains in seconds
    printed = out.getvalue()
    assert printed.startswith("tensor([") and printed.count("True") + printed.count("False") == 8


def test_the_own_network_example_runs(mnist_dir):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own network in eleven lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) == 11  # five imports, six lines
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        subset = '[t[:2048] for t in load_mnist("train")]'  # a smaller training set
        exec(code.replace('load_mnist("train")', subset), {})
    printed = out.getvalue()
    assert printed.startswith("tensor([") and printed.count("True") + printed.count("False") == 8
