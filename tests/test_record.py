"""The cell record: typed and versioned, checked whole when read, version 2 stores still read;
records come back to the parent with their cells' outcomes; scored rows hold only values."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from .conftest import csv_rows, invoke_apart

QUICK = ["--weights", "random", "--bench", "validate", "--workers", "0", "--img-size", "32", "--executor", "local"]


def key_of(identity: dict) -> str:
    """A cell's key as every rbench version has written it: the SHA-256 of its identity's
    canonical JSON, cut to 20 hex digits."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


VERSIONS = {"rbench": "0.1.0", "torch": "2.14.1+cu130", "timm": "1.0.31"}


def v2_record(identity: dict, cell: dict, **fields) -> dict:
    """A record in the layout of record version 2 (as `rbench run` wrote it before version 3):
    the identity as `cell`, the cell itself (with its identity) as `cell_info`."""
    return {"version": 2, "key": key_of(identity), "cell": identity, "entries": [], "status": "ok", "message": "",
            "cell_info": {**cell, "identity": identity}, **fields}


def v2_benchmark_record() -> dict:
    identity = {"kind": "infer", "model": "test_vit", "backend": "cpu", "img_size": None,
                "bench": {"batch_size": 256, "warmup_steps": 1, "steps": 2, "seconds": 0.1, "retry": True,
                          "repeats": None, "latency_batch_size": 1, "latency_queries": 1024,
                          "latency_seconds": 10.0}, **VERSIONS}
    row = {"model": "test_vit", "infer_img_size": 160, "infer_batch_size": 256, "param_count": 0.37124,
           "infer_samples_per_sec": 207.24553869520352, "infer_step_time": 1235.2497506665259,
           "infer_gmacs": 0.04321, "infer_macts": 0.5, "status": "ok", "backend": "cpu"}
    cell = {"kind": "infer", "model": "test_vit", "source": None, "backend": "cpu", "device": "cpu",
            "ray_resources": {}}
    return v2_record(identity, cell, entries=[{"table": "benchmark", "kind": "infer", "tag": "fp32-nchw-t",
                                               "row": row}], seconds=9.9)


def v2_failed_record() -> dict:
    identity = {"kind": "train", "model": "test_byobnet", "backend": "cpu", "img_size": None, "bench": {}, **VERSIONS}
    cell = {"kind": "train", "model": "test_byobnet", "source": None, "backend": "cpu", "device": "cpu",
            "ray_resources": {}}
    return v2_record(identity, cell, status="crashed", message="worker process died: killed by SIGKILL")


def as_v2(record: dict) -> dict:
    """A version 3 validation record written by this rbench, in version 2's layout."""
    cell = record["cell"]
    return v2_record(cell["identity"], {k: v for k, v in cell.items() if k != "identity"},
                     status=record["status"], message=record["message"],
                     seconds=record["provenance"]["seconds"], predictions=record["predictions"],
                     source_listing=record["source_listing"], common=record["common"], partial=record["partial"],
                     unreadable=record["unreadable"])


def test_a_store_of_record_version_2_is_read_to_the_same_csvs(tmp_path, images):
    out = tmp_path / "out"
    assert invoke_apart("run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "--out", str(out)).exit_code == 0
    old = tmp_path / "old"
    shutil.copytree(out / "store", old)
    (path,) = (old / "records").glob("*.json")
    path.write_text(json.dumps(as_v2(json.loads(path.read_text()))))
    for record in (v2_benchmark_record(), v2_failed_record()):
        (old / "records" / f"{record['key']}.json").write_text(json.dumps(record))
    report = invoke_apart("report", "--store", str(old), "--out", str(tmp_path / "report"))
    assert report.exit_code == 0, report.output + report.stderr
    assert not (old / "quarantine").exists(), report.stderr
    for name in ("results-imagefolder.csv", "metrics-imagefolder.csv"):
        assert (tmp_path / "report" / name).read_bytes() == (out / name).read_bytes(), name
    # the benchmark row, rounded as timm's tables are: 2 decimals for samples/s, param count, GMACs
    assert csv_rows(tmp_path / "report" / "benchmark-infer-fp32-nchw-t.csv") == [
        {"model": "test_vit", "infer_img_size": "160", "infer_samples_per_sec": "207.25", "infer_step_time": "1235.25",
         "infer_batch_size": "256", "param_count": "0.37", "infer_gmacs": "0.04", "infer_macts": "0.5"}]
    assert csv_rows(tmp_path / "report" / "failures.csv") == [
        {"model": "test_byobnet", "dataset": "", "backend": "cpu", "bench": "train", "status": "crashed",
         "message": "worker process died: killed by SIGKILL"}]
    # read as the typed record, with its provenance from version 2's fields
    from rbench.store import Store

    record = Store(old).get(v2_benchmark_record()["key"])
    assert record.cell.kind == "infer" and record.provenance.seconds == 9.9 and record.provenance.torch == "2.14.1+cu130"


@pytest.mark.parametrize("damage, said", [
    (lambda r: r["common"].update(img_size="160"), "'common' 'img_size' is '160'"),
    (lambda r: r["predictions"].update(rows="100"), "'predictions' is not a {file, sha256, rows} object"),
    (lambda r: r.update(unreadable="x.jpg"), "'unreadable' is not a list"),
    (lambda r: r.update(partial="no"), "'partial' is 'no'"),
    (lambda r: r["cell_info"].update(model=7), "'model' is 7"),
    (lambda r: r.update(seconds="long"), "'seconds' is 'long'"),
    (lambda r: r.update(source_listing=None), "lacks 'common' or 'source_listing'"),
    (lambda r: r.update(surprise=1), "unknown field(s) 'surprise'"),
])
def test_a_record_is_checked_whole_and_a_bad_one_is_quarantined_saying_what_is_wrong(tmp_path, damage, said):
    """Fields that version 2's check left unread: each wrong one is named, and the file set aside."""
    from rbench.store import Store

    identity = {"kind": "validate", "model": "m", "source": "s", "views": ["s"], **VERSIONS}
    cell = {"kind": "validate", "model": "m", "source": "s", "backend": "cpu", "device": "cpu", "ray_resources": {}}
    record = v2_record(identity, cell, seconds=1.0, predictions={"file": "predictions/x.parquet", "sha256": "0" * 64,
                                                                 "rows": 100},
                       source_listing="sources/s-1-2.json", partial=False, unreadable=[],
                       common={"model": "m.a", "img_size": 160, "param_count": 1.0, "crop_pct": 0.9,
                               "interpolation": "bicubic", "weights": "random"})
    store = Store(tmp_path / "store")
    path = store.records_dir / f"{record['key']}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    assert store.get(record["key"]) is not None  # the undamaged record is read
    damage(record)
    path.write_text(json.dumps(record))
    assert store.get(record["key"]) is None
    (problem,) = store.problems
    assert said in problem and "quarantine" in problem, problem
    assert len(list((tmp_path / "store" / "quarantine").iterdir())) == 1


def test_a_record_goes_to_json_and_back_unchanged():
    from rbench import Cell, CellRecord
    from rbench.record import Entry, PredictionsFile, Provenance

    cell = Cell(kind="validate", model="m", source="s", backend="cpu+compile", device="cuda",
                ray_resources={"num_gpus": 1}, identity={"kind": "validate", "model": "m", "reference": "cpu"})
    record = CellRecord(cell=cell, status="ok", provenance=Provenance(rbench="1", torch="2", timm="3", host="h",
                                                                      finished="2025-01-01T00:00:00+0000", seconds=2.5),
                        predictions=PredictionsFile(file="predictions/k.parquet", sha256="ab", rows=3),
                        source_listing="sources/x.json", partial=True, unreadable=("a.jpg",),
                        common={"model": "m.t", "img_size": 32, "param_count": 1.5, "crop_pct": 0.9,
                                "interpolation": "bilinear", "weights": "random"})
    back = CellRecord.from_json(json.loads(json.dumps(record.to_json())), record.key)
    assert back == record and back.cell.ray_resources == {"num_gpus": 1} and back.cell.identity == cell.identity
    bench = CellRecord(cell=Cell(kind="infer", model="m", identity={"kind": "infer"}), status="failed", message="x",
                       entries=(Entry(table="benchmark", kind="infer", tag="t", row={"model": "m", "status": "failed"}),))
    assert CellRecord.from_json(json.loads(json.dumps(bench.to_json()))) == bench


def test_the_parent_stores_the_record_its_executor_returns_and_never_reads_it_back(tmp_path, images, monkeypatch):
    """The engine takes each record from the cell's outcome: reading a record from the store
    during the grid fails here, and the run still writes its files from the records."""
    from rbench.store import Store

    def no_held_records(self, keys):
        return {}

    def refuse(self, key):
        raise AssertionError(f"the record {key} was read back from the store")

    monkeypatch.setattr(Store, "load", no_held_records)
    monkeypatch.setattr(Store, "get", refuse)
    out = tmp_path / "out"
    result = invoke_apart("run", "-m", "test_vit", *QUICK, "--data-dir", str(images), "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    assert [r["model"] for r in csv_rows(out / "results-imagefolder.csv")] == ["test_vit@random"]
    (path,) = (out / "store" / "records").glob("*.json")
    assert json.loads(path.read_text())["version"] == 3


def test_scored_rows_hold_only_values_and_their_paired_data_beside_them(tmp_path, images):
    """Every row that the reports are written from goes into a polars frame as it is: no private
    key holds per-image arrays; the per-image hits travel beside the row, one per scored image."""
    import polars as pl

    from rbench.registry import get_registry
    from rbench.report.results import Results
    from rbench.parent.run import view_bases
    from rbench.report.scoring import Scorer
    from rbench.store import Store

    out = tmp_path / "out"
    args = ["run", "-m", "test_vit,test_efficientnet", *QUICK, "--data-dir", str(images), "--out", str(out)]
    assert invoke_apart(*args).exit_code == 0
    registry = get_registry()
    store = Store(out / "store")
    results = Results(bases=view_bases(registry), scorer=Scorer(store, list(registry.metrics.values()), registry))
    for record in store.records():
        results.add_record(record)
    scored = results.metric_rows["imagefolder"]
    rows = [s.row for s in scored]
    frame = pl.DataFrame(rows)  # raised on the per-image arrays that rows used to hold
    assert frame.height == 2 and not [c for c in frame.columns if c.startswith("_")]
    assert pl.DataFrame(results.validation["imagefolder"]).height == 2
    for s in scored:
        assert len(s.paired.hits) == s.row["count"] == 9
        assert s.paired.images == scored[0].paired.images  # the same images: the rows can be paired
