"""The flowbound command: help, one-line errors with status 2, training."""

from __future__ import annotations

import pytest

from flowbound.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "book" in out


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
