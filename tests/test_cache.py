"""The cache: verified round trips, no partial files, mismatches recomputed."""

from __future__ import annotations

import json

import torch

from flowbound import cache


def test_round_trip_and_compute_once():
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(5.0)}, {"note": "x"}

    config = {"a": 1, "b": [1, 2]}
    v1, m1 = cache.cached("things", config, compute)
    v2, m2 = cache.cached("things", config, compute)
    assert len(calls) == 1 and torch.equal(v1["w"], v2["w"]) and m1 == m2 == {"note": "x"}


def test_hash_is_order_independent_and_value_sensitive():
    assert cache.config_hash({"a": 1, "b": 2}) == cache.config_hash({"b": 2, "a": 1})
    assert cache.config_hash({"a": 1}) != cache.config_hash({"a": 1.5})


def test_a_record_for_another_config_is_not_trusted():
    cache.store("things", {"a": 1}, torch.zeros(2))
    h = cache.config_hash({"a": 1})
    js = cache.cache_dir() / "things" / f"{h}.json"
    record = json.loads(js.read_text())
    record["config"] = {"a": 2}
    js.write_text(json.dumps(record))
    assert cache.load_cached("things", {"a": 1}) is None


def test_missing_record_means_recompute():
    cache.store("things", {"a": 3}, torch.zeros(2))
    h = cache.config_hash({"a": 3})
    (cache.cache_dir() / "things" / f"{h}.json").unlink()
    assert cache.load_cached("things", {"a": 3}) is None


def test_no_temporary_files_are_left():
    cache.store("things", {"a": 4}, torch.zeros(1000))
    assert not list((cache.cache_dir() / "things").glob(".*"))
