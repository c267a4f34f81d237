"""The flowbound command: help, one-line errors with status 2, training."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowbound.book.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "book" in out and "figure" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "nope"], "invalid choice: 'nope'"),
        (["train", "nt", "--profile", "huge"], "invalid choice: 'huge'"),
        (["train", "nt", "--section", "5"], "invalid choice: 5"),
        ([], "the following arguments are required: COMMAND"),
        (["dance"], "invalid choice: 'dance'"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


def test_train_prints_accuracy_and_then_loads_from_cache(capsys, mnist_dir):
    assert main(["train", "rd", "--profile", "smoke", "--section", "3"]) == 0
    first = capsys.readouterr().out
    assert "rd (smoke, hidden 64): trained, test accuracy" in first
    assert main(["train", "rd", "--profile", "smoke", "--section", "3"]) == 0
    assert "loaded from cache" in capsys.readouterr().out


def test_figure_that_does_not_exist_is_a_clear_error(capsys):
    assert main(["figure", "99", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "figure 99 does not exist" in err and "1, 2, 3" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["figure", "two", "--profile", "smoke"]) == 2
    assert "integers (1-12) or 'all'" in capsys.readouterr().err


def test_figure_regenerates_one_figure(tmp_path, monkeypatch, mnist_dir):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    target = root / "_build" / "smoke" / "_build" / "figures" / "fig07.png"
    target.unlink(missing_ok=True)
    assert main(["figure", "7", "--profile", "smoke", "--root", str(root)]) == 0
    assert target.stat().st_size > 1000 and target.with_suffix(".pdf").is_file()


def test_help_imports_no_solver_attack_or_plotting():
    code = (
        "import sys\n"
        "from flowbound.book.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ['scipy', 'cvxpy', 'matplotlib', 'flowbound.certificates.bounds',\n"
        "         'flowbound.attacks.stadv', 'flowbound.training.sdp',\n"
        "         'flowbound.training.objectives', 'flowbound.certificates.registry']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
