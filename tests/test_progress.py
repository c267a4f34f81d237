"""Progress reaches the terminal while a chapter runs, and never the notebook."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import nbformat

from flowbound import progress
from flowbound.book.build import execute_chapter

_HEADER = (
    "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
    "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
    "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = 'x'\n```\n\n"
)


def test_the_relay_copies_what_a_child_process_writes(tmp_path):
    out = io.StringIO()
    path = tmp_path / "progress.txt"
    before = os.environ.get(progress.ENV)
    with progress.Relay(path, out=out, interval=0.05):
        code = (
            "from flowbound import progress\n"
            "progress.stage('training nt')\n"
            "for _ in progress.bar(range(3), desc='work'): pass\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
    assert "training nt" in out.getvalue() and "work" in out.getvalue()
    assert os.environ.get(progress.ENV) == before and not path.exists()


def test_a_silent_relay_drops_the_progress(tmp_path):
    out = io.StringIO()
    with progress.Relay(tmp_path / "p.txt", out=out, show=False):
        progress.stage("hidden")
    assert out.getvalue() == ""


def test_a_chapters_progress_reaches_the_terminal_not_the_notebook(tmp_path, capfd):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "talks.md").write_text(
        _HEADER + "```{code-cell} ipython3\nfrom flowbound import progress\n"
        "with progress.timed_stage('computing figure 99'):\n"
        "    for _ in progress.bar(range(5), desc='inner loop'):\n"
        "        pass\n"
        "print('page text')\n```\n"
    )
    notebook = execute_chapter(tmp_path, "talks", "smoke")
    err = capfd.readouterr().err
    assert "computing figure 99 ..." in err and "computing figure 99: done in" in err
    assert "inner loop" in err
    assert "IPKernelApp" not in err  # the kernel's own log stays quiet
    outputs = [o for c in nbformat.read(notebook, as_version=4).cells for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "page text" in text
    assert "computing" not in text and "inner loop" not in text
    assert all(o.get("name") != "stderr" for o in outputs)
    assert not list((tmp_path / "book" / "_executed").glob(".talks.*"))


def test_a_computed_experiment_announces_itself_once(tmp_path, monkeypatch, capsys):
    from flowbound.book.experiments._common import cached_experiment

    monkeypatch.setenv("FLOWBOUND_CACHE", str(tmp_path))
    monkeypatch.delenv(progress.ENV, raising=False)
    config = {"model": {"variant": "nt", "seed": 1, "hidden": 8}, "tau": 0.05, "images": 10}
    value = {"a": __import__("torch").zeros(2)}
    cached_experiment("toy", {"toy": 1}, config, lambda: (value, {}))
    err = capsys.readouterr().err
    assert "computing toy (nt, seed 1, hidden 8; tau 0.05, images 10) ..." in err
    assert "computing toy (nt, seed 1, hidden 8; tau 0.05, images 10): done in" in err
    cached_experiment("toy", {"toy": 1}, config, lambda: (value, {}))
    assert capsys.readouterr().err == ""  # from the cache: nothing to announce


def test_a_long_setting_is_shortened_in_the_progress_line():
    from flowbound.book.experiments._common import experiment_label

    label = experiment_label("zero_one", {"eps": [0.0, 0.01, 0.02, 0.05, 0.1], "images": None})
    assert label == "zero_one (eps 0 to 0.1 (5 values))"
    label = experiment_label("lower_bounds", {"model": {"variant": "nt"}, "jacobian": "true"})
    assert label == "lower_bounds (nt, seed None; jacobian true)"
    label = experiment_label("decrease_bounds", {"model": {"variant": "nt"}, "kind": "sdp"})
    assert label == "decrease_bounds (nt, seed None; kind sdp)"


def test_training_announces_its_start_and_its_seconds_once(tiny, mnist_dir, monkeypatch, capsys):
    from flowbound.book.trained import get_model

    monkeypatch.delenv(progress.ENV, raising=False)
    get_model("nt", tiny, section=4, progress=False)
    err = capsys.readouterr().err
    hidden = tiny["hidden"]["section4"]  # the line tells Section 3's network from Section 4's
    assert f"training nt (seed 0, hidden {hidden}, smoke profile) ..." in err
    assert f"training nt (seed 0, hidden {hidden}, smoke profile): done in" in err
    assert "test accuracy" in err
    get_model("nt", tiny, section=4, progress=False)
    assert capsys.readouterr().err == ""  # from the cache: nothing to announce
