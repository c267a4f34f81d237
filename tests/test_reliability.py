"""Configuration, training, CLI and cache failures: one clear error, nothing cached wrong."""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowbound import cache
from flowbound.book import profiles
from flowbound.book.cli import main
from flowbound.book.profiles import ProfileError, load_profile, validate_profile
from flowbound.book.trained import get_model
from flowbound.training.fit import TrainingError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    """Profiles read from tmp_path/profile_data instead of the package."""
    (tmp_path / "profile_data").mkdir()
    monkeypatch.setattr(profiles.resources, "files", lambda _pkg: tmp_path)
    profiles._read.cache_clear()
    yield tmp_path / "profile_data"
    profiles._read.cache_clear()


def test_json_syntax_error_names_the_file_and_line(profile_dir):
    (profile_dir / "smoke.json").write_text('{"name": "smoke",\n  "hidden": }')
    with pytest.raises(ProfileError, match=r"smoke\.json: not valid JSON \(line 2"):
        load_profile("smoke")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda p: p["train"].update(batch_size=-1), "train.batch_size must be an integer >= 1"),
        (lambda p: p["hidden"].update(section4=0), "hidden.section4 must be an integer >= 1"),
        (lambda p: p["train"].update(epochs=0), "train.epochs"),
        (lambda p: p["train"].update(lr=1e30), "train.lr must be a finite number"),
        (lambda p: p["train"].update(lr="fast"), "train.lr"),
        (lambda p: p["train"].update(seeed=1), "unknown key 'train.seeed', misspelt"),
        (lambda p: p["train"].pop("seed"), "missing key 'train.seed'"),
        (lambda p: p["eval"].update(test_subset=0), "eval.test_subset must be null or"),
        (lambda p: p["possibility"].update(claim_success="best"), "claim_success"),
        (lambda p: p["possibility"].update(claim_tau=0.123), "claim_tau"),
        (lambda p: p["impossibility"].update(eps=[]), "impossibility.eps"),
        (lambda p: p.update(variants=[]), "variants"),
        (lambda p: p["possibility"].update(linear_kinds=["bogus"]), "linear_kinds.*'bogus'"),
        (lambda p: p["possibility"].update(kinds=["sdp", "bogus"]), "possibility.kinds.*'bogus'"),
        (lambda p: p["possibility"].update(kinds=["linear"]), "possibility.kinds.*'linear'"),
        (lambda p: p["local"].update(kinds=["bogus"]), "local.kinds.*'bogus'"),
        (lambda p: p["local"].update(variants=["nt", "bogus"]), "local.variants.*'bogus'"),
        (lambda p: p["local"]["sides"].update(variant="bogus"), "local.sides.variant.*'bogus'"),
        (lambda p: p["possibility"].update(variants=["lin_nt"]), "possibility.variants"),
        (lambda p: p["possibility"].update(linear_variants=["nt"]), "linear_variants.*'nt'"),
        (lambda p: p["impossibility"].update(networks=["bogus"]), "impossibility.networks"),
        (lambda p: p["intro"].update(eval_variants=["bogus"]), "intro.eval_variants"),
        (lambda p: p["local"].update(report_eps=[0.123]), "report_eps.*local.eps"),
        (lambda p: p["local"].update(attack=5), "local.attack must be an object with the keys"),
    ],
)
def test_profile_schema_names_the_key(profile_dir, edit, match):
    data = copy.deepcopy(_shipped("smoke"))
    edit(data)
    (profile_dir / "smoke.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=match) as err:
        load_profile("smoke")
    assert "smoke.json" in str(err.value)


def _shipped(name):
    return json.loads((ROOT / "src" / "flowbound" / "profile_data" / f"{name}.json").read_text())


def test_shipped_profiles_are_valid():
    for name in profiles.PROFILES:
        validate_profile(_shipped(name), name)


def test_a_diverging_run_stops_and_caches_nothing(tiny, mnist_dir):
    tiny["train"]["lr"] = 1.0
    tiny["variants"]["fro"]["lambda"] = 1e38  # the float32 loss overflows to inf
    with pytest.raises(TrainingError, match="lower the learning rate"):
        get_model("fro", tiny, section=4, progress=False)
    assert not list((cache.cache_dir() / "models").glob("*.pt"))


def test_a_run_at_chance_is_an_error_not_a_cached_network(tiny, mnist_dir, monkeypatch):
    from flowbound.book import trained as models

    monkeypatch.setattr(models, "MIN_TRAINED_ACCURACY", 1.01)  # nothing can pass
    with pytest.raises(TrainingError, match="about chance"):
        get_model("nt", tiny, section=4, progress=False)
    assert not list((cache.cache_dir() / "models").glob("*.pt"))


def test_dict_profiles_are_validated_too(tiny):
    tiny["train"]["epochs"] = 0
    with pytest.raises(ProfileError, match="train.epochs"):
        get_model("nt", tiny)


def test_a_record_without_test_accuracy_is_recomputed(tiny, mnist_dir):
    first = get_model("nt", tiny, section=4, progress=False)
    (js,) = (cache.cache_dir() / "models").glob("*.json")
    record = json.loads(js.read_text())
    del record["meta"]["test_accuracy"]
    js.write_text(json.dumps(record))
    again = get_model("nt", tiny, section=4, progress=False)
    assert not again.from_cache and again.test_accuracy == pytest.approx(first.test_accuracy)


def test_orphan_temporary_files_are_removed_on_the_next_write():
    config = {"k": 1}
    pt, _ = cache._paths("things", config)
    pt.parent.mkdir(parents=True, exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    orphan = pt.parent / f".{pt.name}.{dead}.abc123"
    orphan.write_bytes(b"half a write")
    live = pt.parent / f".{pt.name}.{os.getpid()}.live"
    live.write_bytes(b"another writer, still running")
    cache.store("things", config, torch.ones(2))
    assert not orphan.exists() and live.exists()


def _writer(root: str, who: int, rounds: int) -> None:
    os.environ["FLOWBOUND_CACHE"] = root
    for _ in range(rounds):
        cache.store("race", {"key": 0}, torch.full((2000,), float(who)), {"writer": who})


def test_concurrent_writers_never_mix_a_value_with_the_other_writers_record(tmp_path):
    root = str(tmp_path / "cache")
    os.environ["FLOWBOUND_CACHE"] = root
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(root, w, 60)) for w in (1, 2)]
    for p in procs:
        p.start()
    loads = mismatched = 0
    while any(p.is_alive() for p in procs) or loads < 50:
        hit = cache.load_cached("race", {"key": 0})
        if hit is not None:
            value, meta = hit
            loads += 1
            mismatched += int(float(value[0]) != meta["writer"] or bool((value != value[0]).any()))
        if loads > 2000:
            break
    for p in procs:
        p.join()
    assert loads >= 50 and mismatched == 0


def test_unusable_cache_folder_fails_before_training(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "cache-file"
    afile.write_text("x")
    monkeypatch.setenv("FLOWBOUND_CACHE", str(afile))
    assert main(["train", "nt", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "cache folder" in err and "FLOWBOUND_CACHE" in err and len(err.splitlines()) == 1


def test_missing_mnist_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    from flowbound import data

    target = tmp_path / "not-there" / "mnist"
    monkeypatch.setenv("MNIST_DIR", str(target))
    monkeypatch.setattr(data, "MIRRORS", [(tmp_path / "no-mirror").as_uri() + "/"])
    monkeypatch.chdir(tmp_path)
    data._load.cache_clear()
    assert main(["train", "nt", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "MNIST" in err and "MNIST_DIR" in err and len(err.strip().splitlines()) == 1
    assert not target.exists() and not target.parent.exists()


def test_mnist_dir_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "mnist.gz"
    afile.write_text("x")
    monkeypatch.setenv("MNIST_DIR", str(afile))
    assert main(["train", "nt", "--profile", "smoke"]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


def test_figure_with_a_wrong_root_creates_nothing(tmp_path, capsys):
    assert main(["figure", "2", "--profile", "smoke", "--root", str(tmp_path)]) == 1
    assert "holds no book" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert main(["book", "--profile", "smoke", "--root", str(tmp_path)]) == 1


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "f"
    afile.write_text("x")
    monkeypatch.setenv("FLOWBOUND_CACHE", str(afile))
    assert main(["--debug", "train", "nt", "--profile", "smoke"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_says_the_work_is_kept_and_exits_130(tmp_path, mnist_dir):
    env = {**os.environ, "FLOWBOUND_CACHE": str(tmp_path / "c"), "MNIST_DIR": mnist_dir}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowbound.book.cli", "train", "sdp", "--profile", "paper"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        # a test run started in the background (`make test &`) ignores SIGINT, and a
        # child inherits that: give the command the default a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "cached" in err and "Traceback" not in err


def test_a_dead_kernel_names_the_chapter_and_keeps_the_notebook(tmp_path):
    from flowbound.book.build import BookError, execute_chapter

    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "dies.md").write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = 'x'\n```\n\n"
        "```{code-cell} ipython3\nimport os\nos._exit(1)\n```\n"
    )
    with pytest.raises(BookError, match="chapter dies"):
        execute_chapter(tmp_path, "dies", "smoke", progress=False)
    assert not list((tmp_path / "book" / "_executed").glob(".dies.*"))


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("FLOWBOUND_STACK", "yes", "FLOWBOUND_STACK must be 1"),
        ("FLOWBOUND_DEVICE", "bogus", "FLOWBOUND_DEVICE must be cpu, cuda or cuda:N"),
        ("FLOWBOUND_DEVICE", "tpu", "FLOWBOUND_DEVICE must be cpu, cuda or cuda:N"),
    ],
)
def test_a_bad_environment_setting_is_one_line_before_any_work(
    monkeypatch, capsys, name, value, fragment
):
    monkeypatch.setenv(name, value)
    assert main(["train", "nt", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list((cache.cache_dir() / "models").glob("*.pt"))


def _refuse_writes_in(monkeypatch, folder_name: str) -> None:
    """Make the cache folder ``folder_name`` refuse new files, as a read-only folder
    does for a user who is not root (tests may run as root, which ignores the mode)."""
    real = cache.tempfile.TemporaryFile

    def temporary(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).name == folder_name:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(cache.tempfile, "TemporaryFile", temporary)


def test_a_read_only_models_folder_fails_before_training(monkeypatch, capsys, mnist_dir):
    (cache.cache_dir() / "models").mkdir(parents=True)
    _refuse_writes_in(monkeypatch, "models")
    assert main(["train", "nt", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "cannot write to the cache folder" in err and "models" in err
    assert len(err.strip().splitlines()) == 1


def test_cached_checks_its_folder_before_computing(monkeypatch):
    _refuse_writes_in(monkeypatch, "results")
    ran = []
    with pytest.raises(cache.CacheError, match="results"):
        cache.cached("results", {"k": 1}, lambda: ran.append(1) or (torch.ones(1), {}))
    assert not ran  # the work never started, so none is lost


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules imported at the top of ``path``, modules imported inside functions)."""
    import ast

    tree = ast.parse(path.read_text())
    top, inner = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            (top if node in tree.body or _guarded(tree, node) else inner).update(
                n.split(".")[0] for n in names
            )
    return top, inner


def _guarded(tree, node) -> bool:
    """An import inside a top-level try/if (an optional dependency's guard)."""
    import ast

    return any(
        isinstance(stmt, ast.Try | ast.If) and node in list(ast.walk(stmt)) for stmt in tree.body
    )


def test_a_core_install_imports_every_module_the_cli_needs():
    """Every third-party module imported at the top of a library module is a core
    dependency (pyproject), so that a core-only install gives the CLI's one-line
    errors rather than ModuleNotFoundError; the book's extras are imported where used."""
    import sys as _sys

    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    provides = {"pyyaml": "yaml"}
    core = {provides.get(n, n) for n in (d.split("=")[0].split(">")[0].strip() for d in deps)}
    stdlib = set(_sys.stdlib_module_names) | {"flowbound", "fcntl"}
    for path in sorted((ROOT / "src" / "flowbound").rglob("*.py")):
        top, _ = _imports(path)
        third = {m for m in top if m not in stdlib}
        assert third <= core, f"{path.name} imports {sorted(third - core)} at the top"
