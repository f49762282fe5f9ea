"""rbench as a library: `rbench.evaluate`, `rbench.load_report`, `rbench.compare` and the
`Report` they return, checked against the files on disk and against counts made here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import rbench
import rbench.worker.cells

QUICK = dict(weights="random", workers=0, img_size=32, executor="local", batch_size=4)
BENCH = dict(warmup_steps=0, bench_steps=2, bench_seconds=0, bench_repeats=1)


def csv_stems(out: Path) -> set[str]:
    """Each CSV file under `out` (its store left out), as its path relative to `out` without `.csv`."""
    return {p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.csv")
            if "store" not in p.relative_to(out).parts}


def assert_tables_are_the_files(report, out: Path) -> None:
    assert set(report.tables) == csv_stems(out)
    for name, table in report.tables.items():
        assert_frame_equal(table, pl.read_csv(out / f"{name}.csv"))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Two tiny models on the synthetic source (validate, infer, metadata), and a third whose
    validation fails: `(out, report, progress events)`."""
    out = tmp_path_factory.mktemp("api") / "out"
    create_model = rbench.worker.cells.create_model

    def failing(name, *args, **kwargs):
        if name == "test_efficientnet":
            raise RuntimeError("test_efficientnet cannot be built today")
        return create_model(name, *args, **kwargs)

    events = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rbench.worker.cells, "create_model", failing)
        report = rbench.evaluate(["test_vit", "test_byobnet", "test_efficientnet"], datasets="synthetic",
                                 bench="validate,infer,metadata", out=out, progress=events.append, **QUICK, **BENCH)
    return out, report, events


def test_evaluate_returns_every_csv_file_as_a_table_and_a_second_call_runs_nothing(evaluated):
    out, report, events = evaluated
    assert_tables_are_the_files(report, out)
    names = set(report.tables)
    assert {"results-synthetic", "metrics-synthetic", "model_metadata", "failures"} <= names
    assert any(n.startswith("detailed/benchmark-infer-") for n in names)
    assert sorted(report.tables["results-synthetic"]["model"]) == ["test_byobnet@random", "test_vit@random"]
    assert report.failures["model"].to_list() == ["test_efficientnet@random"]
    assert report.failures["bench"].to_list() == ["validate"]
    assert_frame_equal(report.failures, pl.read_csv(out / "failures.csv"))
    assert report.out == out and report.store == out / "store"

    # The grid starts with one event, then each cell's; every cell started this time.
    assert events[0]["event"] == "grid" and events[0]["held"] == 0
    todo = {cell.key for cell in events[0]["todo"]}
    assert len(todo) == 3 * 3  # 3 models x (metadata, validate, infer)
    assert {e["key"] for e in events if e["event"] == "start"} | {
        e["key"] for e in events if e["event"] == "done"} == todo

    again = []
    second = rbench.evaluate(["test_vit", "test_byobnet", "test_efficientnet"], datasets="synthetic",
                             bench="validate,infer,metadata", out=out, progress=again.append, **QUICK, **BENCH)
    assert again[0]["event"] == "grid" and again[0]["todo"] == [] and again[0]["held"] == 9
    assert not [e for e in again if e["event"] in ("start", "done")]
    assert second.new_rows == 0 and second.rows == report.rows
    assert set(second.tables) == set(report.tables)
    for name in report.tables:
        assert_frame_equal(second.tables[name], report.tables[name])
    assert_tables_are_the_files(second, out)


def test_a_bad_model_or_option_name_is_raised_not_printed_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(rbench.UnknownNameError, match="no_such_model"):
        rbench.evaluate("no_such_model", datasets="synthetic", bench="validate", out=out, **QUICK)
    with pytest.raises(rbench.UnknownNameError, match="'batchsize'.*'batch_size'"):
        rbench.evaluate("test_vit", out=out, batchsize=4)
    # A value out of the command line's range is the command line's error, named as given here.
    for option, value, span in (("batch_size", 0, "from 1 to 65,536"), ("bench_seconds", float("inf"), "to 86,400"),
                                ("cell_timeout", 0, "above 0 and at most 604,800"), ("limit", 2.5, "to 1,000,000,000")):
        with pytest.raises(rbench.RbenchError, match=f"^{option} {value}: expected .*{span}$"):
            rbench.evaluate("test_vit", out=out, **{option: value})
    assert capsys.readouterr().out == ""
    assert not list(out.rglob("*.csv")) and not (out / "store").exists()


LOAD_WITHOUT_TORCH = """
import json, sys

sys.modules["torch"] = None  # `import torch` raises ImportError from here on
import rbench

report = rbench.load_report(sys.argv[1])
predictions = report.predictions("test_vit@random")
print(json.dumps({"tables": {name: report.tables[name].write_json() for name in report.tables},
                  "out": report.out, "failures": report.failures["model"].to_list(),
                  "files": predictions["file"].head(2).to_list(), "torch": sys.modules["torch"] is not None}))
"""


def test_load_report_rebuilds_the_tables_with_torch_unimportable_and_writes_nothing(evaluated, tmp_path):
    out, report, _ = evaluated
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    found = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_TORCH, str(out)], capture_output=True, text=True,
                           cwd=tmp_path, timeout=600)
    assert found.returncode == 0, found.stderr
    loaded = json.loads(found.stdout)
    assert loaded["torch"] is False and loaded["out"] is None
    assert set(loaded["tables"]) == set(report.tables)
    for name, text in loaded["tables"].items():
        assert text == report.tables[name].write_json(), name
    assert loaded["failures"] == ["test_efficientnet@random"]
    assert loaded["files"] == ["class_000/img_0000.jpg", "class_000/img_0001.jpg"]  # the synthetic set's layout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before

    # With out=, the files `rbench report` writes; the same tables.
    rebuilt = rbench.load_report(out / "store", out=tmp_path / "rebuilt")
    assert_tables_are_the_files(rebuilt, tmp_path / "rebuilt")
    for name in report.tables:
        assert_frame_equal(rebuilt.tables[name], report.tables[name])


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b among b + c at one half."""
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


def test_predictions_name_each_file_and_compare_equals_a_count_over_them(tmp_path, images):
    # Folders 0, 1, 2 as classes that these random models predict for some of these images, so
    # that each model has hits the other lacks (here 3 and 2; not asserted: only the count matters).
    class_map = tmp_path / "classes.txt"
    names = [f"other{i}" for i in range(1000)]
    for folder, index in (("0", 888), ("1", 234), ("2", 869)):
        names[index] = folder
    class_map.write_text("\n".join(names) + "\n")
    out = tmp_path / "out"
    report = rbench.evaluate("test_vit,test_byobnet", bench="validate", data_dir=images, out=out,
                             data_options={"imagefolder": {"class_map": str(class_map)}}, **QUICK)
    labels = {"0": 888, "1": 234, "2": 869}
    on_disk = {p.relative_to(images).as_posix(): labels[p.parent.name] for p in images.rglob("*.JPEG")}
    frames = {model: report.predictions(model) for model in ("test_vit", "test_byobnet@random")}
    for frame in frames.values():
        assert dict(zip(frame["file"], frame["label"])) == on_disk
        assert frame["index"].to_list() == list(range(len(on_disk)))
    vit = frames["test_vit"]
    top1 = 100 * sum(p == y for p, y in zip(vit["top1"], vit["label"])) / len(on_disk)
    row = report.tables["results-imagefolder"].filter(pl.col("model") == "test_vit@random")
    assert row["top1"].item() == pytest.approx(top1, abs=5e-4)

    a = {f: p == y for f, p, y in zip(vit["file"], vit["top1"], vit["label"])}
    byob = frames["test_byobnet@random"]
    b = {f: p == y for f, p, y in zip(byob["file"], byob["top1"], byob["label"])}
    only_a = sum(a[f] and not b[f] for f in on_disk)
    only_b = sum(b[f] and not a[f] for f in on_disk)
    (compared,) = rbench.compare("test_vit", "test_byobnet", out).to_dicts()
    assert compared["view"] == "imagefolder" and compared["images"] == len(on_disk)
    assert (compared["only_a"], compared["only_b"]) == (only_a, only_b)
    assert compared["both"] == sum(a[f] and b[f] for f in on_disk)
    assert compared["top1_a"] == pytest.approx(100 * sum(a.values()) / len(a))
    assert compared["top1_b"] == pytest.approx(100 * sum(b.values()) / len(b))
    assert compared["p_value"] == pytest.approx(mcnemar_exact(only_a, only_b))

    with pytest.raises(rbench.UnknownNameError, match="resnet50"):
        report.predictions("resnet50")
    with pytest.raises(rbench.UnknownNameError, match="resnet50"):
        rbench.compare("test_vit", "resnet50", out)
