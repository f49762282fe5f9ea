"""The score entries a report keeps in the store (`scores/`): a later report reads them instead of
the predictions files, recomputes a metric whose version changed and only that one, and trusts
no entry that is not whole, not about the same file, or not inside the store."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import rbench
import rbench.registry
from rbench.registry import load_registry
from rbench.store import Store

from .test_statistics import load_bench

CALLS: dict[str, int] = {}


def counting_metric(name: str, version: str) -> rbench.MetricSpec:
    """A metric that counts its `compute` calls: the mean top-1 log-probability."""

    def compute(predictions, view):
        CALLS[name] = CALLS.get(name, 0) + 1
        return {f"{name}_mean_logp": float(np.mean(np.asarray(predictions.topk_logp)[:, 0]))}

    return rbench.MetricSpec(name=name, description="test", columns=(f"{name}_mean_logp",), compute=compute,
                             version=version)


class CountingMetrics:
    def __init__(self, versions: dict[str, str]):
        self.versions = versions

    @rbench.hookimpl
    def rbench_metrics(self):
        return [counting_metric(name, version) for name, version in self.versions.items()]


def use_metrics(monkeypatch, **versions: str) -> None:
    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:counting", CountingMetrics(versions))]))


# make_store: views imagenet, -real, -a-clean, -r-clean, and V2; and the two 1000-way clean views
# that the imagenet plugin adds to the imagenet source
MODELS, VIEWS = 3, 7


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "store"
    load_bench().make_store(root, models=MODELS, samples=800, v2_samples=300, seed=7)
    return root


def csv_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.csv"))}


def report(store: Path, out: Path) -> dict[str, bytes]:
    rbench.load_report(store, out=out)
    return csv_files(out)


def fresh_copy(store: Path, to: Path) -> Path:
    """The store without its score entries: what a report computes from the predictions alone."""
    import shutil

    shutil.copytree(store, to, ignore=shutil.ignore_patterns("scores"))
    return to


def test_a_changed_metric_version_recomputes_that_metric_only(store, tmp_path, monkeypatch):
    use_metrics(monkeypatch, first="1", second="1")
    CALLS.clear()
    cold = report(store, tmp_path / "cold")
    assert CALLS == {"first": MODELS * VIEWS, "second": MODELS * VIEWS}
    CALLS.clear()
    assert report(store, tmp_path / "warm") == cold
    assert CALLS == {}  # nothing new: no metric computed
    use_metrics(monkeypatch, first="2", second="1")
    assert report(store, tmp_path / "changed") == cold
    assert CALLS == {"first": MODELS * VIEWS}  # the changed one on every view, the other not at all
    CALLS.clear()
    assert report(store, tmp_path / "again") == cold
    assert CALLS == {}


def test_a_warm_report_reads_no_predictions_file_and_equals_a_cold_one(store, tmp_path, monkeypatch):
    cold = report(store, tmp_path / "cold")
    assert "metrics-imagenet.csv" in cold and "results-imagenetv2-matched-frequency.csv" in cold
    import rbench.predictions

    def no_read(*args, **kwargs):
        raise AssertionError("a predictions file was read")

    with monkeypatch.context() as patch:
        patch.setattr(rbench.predictions, "read", no_read)
        patch.setattr(rbench.predictions, "verified_bytes", no_read)
        assert report(store, tmp_path / "warm") == cold


def test_a_predictions_file_changed_since_its_entry_is_checked_again(store, tmp_path):
    report(store, tmp_path / "first")
    files = sorted((store / "predictions").glob("*.parquet"))
    # Same content, a new modification time: read and hashed again, and still scored.
    os.utime(files[0], ns=(1, 1))
    # Damaged: a report without entries skips its record; one with entries must too.
    data = bytearray(files[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[1].write_bytes(bytes(data))
    cold = rbench.load_report(fresh_copy(store, tmp_path / "copy"), out=tmp_path / "cold")
    warm = rbench.load_report(store, out=tmp_path / "warm")
    assert csv_files(tmp_path / "warm") == csv_files(tmp_path / "cold")
    assert sum("is not the file that was written" in line for line in warm.skipped) == 1
    assert sum("is not the file that was written" in line for line in cold.skipped) == 1


def entries(store: Path) -> list[Path]:
    return sorted((store / "scores").glob("*.json"))


def test_a_tampered_or_damaged_entry_is_detected_and_recomputed(store, tmp_path):
    cold = report(store, tmp_path / "cold")
    own = [p for p in entries(store) if "-added-" not in p.name]  # the sources' own views' entries
    accuracy = [p for p in own if "-accuracy-" in p.name]
    views = [p for p in own if p.name.endswith("-views.json")]
    assert len(accuracy) == len(views) == MODELS * 2  # one predictions file per model and source
    # A value changed (the checksum no longer matches): the report must not write 99.
    tampered, changed = re.subn(rb'"top1":[-0-9.e]+', b'"top1":99.0', accuracy[0].read_bytes(), count=1)
    assert changed == 1
    accuracy[0].write_bytes(tampered)
    # A truncated one, and one that is whole but about another predictions file.
    views[0].write_bytes(views[0].read_bytes()[:100])
    accuracy[1].write_bytes(accuracy[2].read_bytes())
    result = rbench.load_report(store, out=tmp_path / "again")
    assert csv_files(tmp_path / "again") == cold
    quarantined = sorted(p.name for p in (store / "quarantine").iterdir())
    assert len(quarantined) == 2 and {q.split(".json")[0] for q in quarantined} == {accuracy[0].stem, views[0].stem}
    problems = [line for line in result.skipped if "not a score entry as rbench wrote it" in line]
    assert len(problems) == 2 and sum("checksum does not match" in line for line in problems) == 1
    # Each was written anew, whole, about its own file.
    store_ = Store(store)
    for path in (accuracy[0], views[0], accuracy[1]):
        content = store_.get_scores(path.stem)
        assert content is not None and path.name.startswith(content["predictions"])


def test_score_entries_are_json_kept_inside_the_store(store, tmp_path):
    report(store, tmp_path / "cold")
    for path in entries(store):
        data = json.loads(path.read_bytes())  # JSON, nothing that can run code
        assert set(data) == {"format", "checksum", "content"}
    held = Store(store)
    assert held.put_scores("name-1", {"a": 1.5, "b": None, "c": float("nan")})
    content = held.get_scores("name-1")
    assert content["a"] == 1.5 and content["b"] is None and np.isnan(content["c"])
    # A name that is a path is never read nor written, even where a whole entry lies.
    outside = tmp_path / "outside"
    (outside / "scores").mkdir(parents=True)
    Store(outside).put_scores("planted", {"a": 1})
    assert held.get_scores("../../outside/scores/planted") is None
    assert not held.put_scores("../../outside/scores/x", {"a": 1}) and not (outside / "scores" / "x.json").exists()
    # An entry that is a link to a whole entry elsewhere is not followed: set aside, recomputed.
    link = store / "scores" / "linked.json"
    link.symlink_to(outside / "scores" / "planted.json")
    assert held.get_scores("linked") is None and not link.is_symlink()
    assert (outside / "scores" / "planted.json").exists()  # the target is left alone


def test_a_scores_folder_that_is_a_link_is_not_used(store, tmp_path):
    cold = report(store, tmp_path / "cold")
    elsewhere = tmp_path / "elsewhere"
    (store / "scores").rename(elsewhere)
    donor = Store(tmp_path / "donor")
    for path in elsewhere.glob("*-accuracy-*.json"):  # whole entries with other values
        content = json.loads(path.read_text())["content"]
        for values in content["views"].values():
            values["top1"] = 99.0
        assert donor.put_scores(path.stem, content)
        path.write_bytes((donor.root / "scores" / path.name).read_bytes())
    (store / "scores").symlink_to(elsewhere, target_is_directory=True)
    result = rbench.load_report(store, out=tmp_path / "linked")
    assert csv_files(tmp_path / "linked") == cold
    assert any("is a link" in line for line in result.skipped)


def add_second_stack(root: Path) -> None:
    """For each model's V2 record, a reference-stack record (`cpu`) and a second stack's record
    (`cpu-amp-bf16` against `cpu`) whose top-1 differs on some images, with logit differences."""
    from rbench.record import Cell, CellRecord

    store = Store(root)
    for record in list(store.records()):
        if record.cell.source != "imagenetv2-matched-frequency":
            continue
        frame = store.get_predictions(record)
        rng = np.random.default_rng(len(record.key))
        top = np.asarray(frame["topk_class"].to_list())
        changed = rng.random(len(top)) < 0.2
        top[changed] = top[changed][:, [1, 0, 2, 3, 4]]
        other = frame.with_columns(pl.Series("topk_class", top.astype(np.uint16), dtype=pl.Array(pl.UInt16, 5)),
                                   pl.Series("logit_absdiff_max", rng.random(len(top)).astype(np.float32)),
                                   pl.Series("logit_absdiff_mean", rng.random(len(top)).astype(np.float32) / 4))
        for backend, reference, data in (("cpu", None, frame), ("cpu-amp-bf16", "cpu", other)):
            identity = {**record.cell.identity, "backend": backend, **({"reference": reference} if reference else {})}
            cell = Cell(kind="validate", model=record.cell.model, source=record.cell.source, backend=backend,
                        identity=identity)
            store.put(CellRecord(cell=cell, predictions=store.put_predictions(cell.key, data),
                                 source_listing=record.source_listing, common=dict(record.common)))


def test_conformance_of_a_warm_report_equals_a_cold_one(store, tmp_path):
    add_second_stack(store)
    cold = report(store, tmp_path / "cold")
    assert "conformance-imagenetv2-matched-frequency.csv" in cold
    rows = pl.read_csv(tmp_path / "cold" / "conformance-imagenetv2-matched-frequency.csv")
    assert rows.height == MODELS and rows["top1_agreement"].is_between(70, 90).all()
    assert report(store, tmp_path / "warm") == cold
