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
