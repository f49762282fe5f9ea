"""Predictions as data: what a validation cell stores, and every report rebuilt from it alone."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch

import rbench
import rbench.worker.cells
import rbench.registry
import rbench.worker.validate
from rbench import MetricSpec, hookimpl
from rbench.worker.benchmark import BenchSettings
from rbench.worker.cells import Job
from rbench.record import Cell
from rbench.registry import load_registry

from .conftest import invoke_apart
from . import imagenet_fixtures
from .test_imagenet import A, FAVOURED, IMG_SIZE, complete, data_root, model_file, oracle_logits  # noqa: F401

SOURCES = "imagenet,imagenetv2-matched-frequency,sketch,imagenet-a,imagenet-r"




def run_fixtures(root, counts, out, models: str, weights: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        from rbench.plugins.datasets import imagenet as imagenet_plugin

        mp.setattr(imagenet_plugin, "EXPECTED", counts)
        result = invoke_apart("run", "-m", models, "--weights", weights, "-d", SOURCES, "--data-root", str(root),
                         "--bench", "validate", "--img-size", str(IMG_SIZE), "--batch-size", "64",
                         "--workers", "0", "--out", str(out))
        assert result.exit_code == 0, result.output + result.stderr


@pytest.fixture(scope="module")
def two_model_run(tmp_path_factory, data_root):  # noqa: F811
    """The ImageNet fixtures scored by two tiny random models in one run. Returns (data root, out)."""
    root, counts = data_root
    out = tmp_path_factory.mktemp("run") / "out"
    run_fixtures(root, counts, out, "test_byobnet,test_vit", "random")
    return root, out


@pytest.fixture(scope="module")
def pinned_run(tmp_path_factory, data_root, model_file):  # noqa: F811
    """The ImageNet fixtures scored by the pinned test_byobnet. Returns (data root, out, model)."""
    root, counts = data_root
    model, weights = model_file
    out = tmp_path_factory.mktemp("pinned") / "out"
    run_fixtures(root, counts, out, "test_byobnet", str(weights))
    return root, out, model


def no_forward_pass(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a report ran a model")

    monkeypatch.setattr(rbench.worker.cells, "create_model", refuse)
    monkeypatch.setattr(rbench.worker.validate, "predict", refuse)


def test_report_rebuilds_every_csv_byte_for_byte_from_the_predictions_alone(two_model_run, tmp_path, monkeypatch):
    root, out = two_model_run
    no_forward_pass(monkeypatch)
    rebuilt = tmp_path / "rebuilt"
    result = invoke_apart("report", "--store", str(out / "store"), "--out", str(rebuilt))
    assert result.exit_code == 0, result.output + result.stderr
    written = sorted(p.name for p in out.glob("*.csv"))
    assert "results-imagenet-real.csv" in written and "metrics-imagenet-a.csv" in written
    assert sorted(p.name for p in rebuilt.glob("*.csv")) == written
    for name in written:
        assert (rebuilt / name).read_bytes() == (out / name).read_bytes(), name
    with open(out / "results-imagenet.csv", newline="") as f:
        assert {row["model"] for row in csv.DictReader(f)} == {"test_byobnet@random", "test_vit@random"}


def val_predictions(out: Path, model: str) -> tuple[pl.DataFrame, dict]:
    for path in (out / "store" / "records").glob("*.json"):
        record = json.loads(path.read_text())
        if record["cell"].get("source") == "imagenet" and record["cell"]["model"] == model:
            return pl.read_parquet(out / "store" / record["predictions"]["file"]), record
    raise AssertionError(f"no val record of {model}")


def test_the_predictions_file_equals_an_independent_forward_pass(pinned_run):
    root, out, model = pinned_run
    frame, record = val_predictions(out, "test_byobnet")
    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    files = sorted((root / "imagenet" / "val").glob("*/*.JPEG"))
    labels = torch.tensor([synsets.index(f.parent.name) for f in files])
    log_probs = oracle_logits(model, files).log_softmax(dim=1)
    top = log_probs.topk(5, dim=1)

    assert frame.height == len(files) == record["predictions"]["rows"]
    assert frame["index"].to_list() == list(range(len(files)))
    assert frame["label"].to_list() == labels.tolist()
    assert frame["ok"].all()
    assert frame["topk_class"].to_list() == top.indices.tolist()
    stored_logp = torch.tensor(frame["topk_logp"].to_list())
    assert torch.allclose(stored_logp, top.values, atol=1e-4)
    true_logp = log_probs.gather(1, labels[:, None])[:, 0]
    assert torch.allclose(torch.tensor(frame["label_logp"].to_list()), true_logp, atol=1e-4)
    assert torch.allclose(torch.tensor(frame["prob_sq_sum"].to_list()), log_probs.exp().pow(2).sum(1), atol=1e-5)

    # ImageNet-A's 200 classes: restricted top-5 for the val images of those classes only.
    restricted = frame["imagenet-a-clean/topk_class"]
    members = [i for i, c in enumerate(labels.tolist()) if c in set(A)]
    assert restricted.is_null().sum() == len(files) - len(members)
    sub = log_probs[members][:, A].log_softmax(dim=1).topk(5, dim=1).indices
    assert restricted.gather(members).to_list() == torch.tensor(A)[sub].tolist()
    # Well under the 40 bytes a sample per class restriction that the format promises.
    size = (out / "store" / record["predictions"]["file"]).stat().st_size
    assert size < 40 * (len(files) + 2 * len(members)) + 20_000


class MeanTrueProbability:
    """A metric plugin installed after the run: the mean probability of the true label."""

    @hookimpl
    def rbench_metrics(self):
        def compute(predictions, view):
            import numpy as np

            known = ~np.isnan(predictions.label_logp)
            if not known.any():  # label sets only (ImageNet-ReaL)
                return {"mean_true_prob": None}
            return {"mean_true_prob": float(np.exp(predictions.label_logp[known].astype(np.float64)).mean())}

        return [MetricSpec(name="true-prob", description="mean true-label probability",
                           columns=("mean_true_prob",), compute=compute)]


def test_a_metric_installed_after_the_run_gets_its_column_from_report(pinned_run, tmp_path, monkeypatch):
    root, out, model = pinned_run
    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:true-prob", MeanTrueProbability())]))
    no_forward_pass(monkeypatch)
    rebuilt = tmp_path / "rebuilt"
    result = invoke_apart("report", "--store", str(out / "store"), "--out", str(rebuilt))
    assert result.exit_code == 0, result.output + result.stderr
    with open(rebuilt / "metrics-imagenet.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["model"].startswith("test_byobnet@ckpt-")  # a checkpoint's rows are named by its content
    rows = {"test_byobnet.r160_in1k": row}
    assert list(rows["test_byobnet.r160_in1k"]) == ["model", "img_size", "weights", "top1", "top1_err", "top5",
                                                    "top5_err", "ece", "nll", "brier", "top1_low", "top1_high",
                                                    "top5_low", "top5_high", "mean_true_prob", "tied_with_best",
                                                    "p_vs_best"]
    assert rows["test_byobnet.r160_in1k"]["weights"] == "checkpoint:byob.safetensors"
    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    files = sorted((root / "imagenet" / "val").glob("*/*.JPEG"))
    probs = oracle_logits(model, files).softmax(dim=1)
    total = 0.0
    for p, f in zip(probs.tolist(), files):  # the brute-force loop
        total += p[synsets.index(f.parent.name)]
    expected = total / len(files)
    assert float(rows["test_byobnet.r160_in1k"]["mean_true_prob"]) == pytest.approx(expected, rel=1e-4)
    assert 0.001 < expected < 0.9
    # The timm-schema file keeps exactly its columns.
    with open(rebuilt / "results-imagenet.csv", newline="") as f:
        assert "mean_true_prob" not in next(csv.reader(f))


def test_a_run_with_only_a_plugin_metric_works(data_root, tmp_path, monkeypatch):  # noqa: F811
    root, _ = data_root
    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:true-prob", MeanTrueProbability())]))
    out = tmp_path / "out"
    result = invoke_apart("run", "-m", "test_vit", "--weights", "random", "--data-dir", str(root / "sketch"),
                     "--bench", "validate", "--metrics", "true-prob", "--img-size", "32", "--workers", "0",
                     "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    assert sorted(p.name for p in out.glob("*.csv")) == ["metrics-imagefolder.csv"]
    with open(out / "metrics-imagefolder.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert list(row) == ["model", "img_size", "weights", "mean_true_prob"] and 0 < float(row["mean_true_prob"]) < 1
    assert row["weights"] == "random"


def test_job_round_trips_through_json():
    cell = Cell(kind="validate", model="test_vit", source="imagenet", backend="cpu", weights="random",
                name="test_vit@random", identity={"kind": "validate", "x": 1})
    job = Job(cells=(cell,), stacks=("cpu", "cpu+channels-last"), sources={"imagenet": "sources/imagenet-1.pickle"},
              store="/tmp/store", batch_size=8, workers=2, img_size=None, trust_checkpoint=False,
              bench=BenchSettings(batch_size=4, steps=3), input_cache=True, input_cache_dir=None,
              input_cache_size=10**9)
    again = Job.from_json(json.loads(json.dumps(job.to_json())))
    assert again == job
    assert again.cells[0].identity == cell.identity and again.cells[0].key == cell.key


def damage_and_rerun(out: Path, root: Path, damage) -> tuple[str, str]:
    """Damage the sketch predictions file of a one-model run, then run the same command again."""
    args = ["run", "-m", "test_vit", "--weights", "random", "--data-dir", str(root / "sketch"), "--bench", "validate",
            "--img-size", "32", "--workers", "0", "--out", str(out)]
    first = invoke_apart(*args)
    assert first.exit_code == 0, first.output + first.stderr
    (record_path,) = (out / "store" / "records").glob("*.json")
    record = json.loads(record_path.read_text())
    path = out / "store" / record["predictions"]["file"]
    damage(path, record_path, record)
    report = invoke_apart("report", "--store", str(out / "store"), "--out", str(out / "report"))
    again = invoke_apart(*args)
    assert again.exit_code == 0, again.output + again.stderr
    assert "1 cell(s) to run" in again.output
    return report.stderr, again.output


def test_a_truncated_predictions_file_is_named_and_its_cell_runs_again(tmp_path, data_root):  # noqa: F811
    root, _ = data_root

    def truncate(path, record_path, record):
        path.write_bytes(path.read_bytes()[:100])

    report_err, run_out = damage_and_rerun(tmp_path / "out", root, truncate)
    assert "predictions file" in report_err and "truncated" in report_err and "skipped" in report_err
    assert "running the cell again" in run_out
    assert not (tmp_path / "out" / "report" / "results-imagefolder.csv").exists()  # never silently scored
    assert (tmp_path / "out" / "results-imagefolder.csv").is_file()


def test_a_predictions_file_of_the_wrong_schema_is_named_and_its_cell_runs_again(tmp_path, data_root):  # noqa: F811
    root, _ = data_root

    def reshape(path, record_path, record):
        import hashlib

        pl.DataFrame({"index": [0, 1], "other": [1.0, 2.0]}).write_parquet(path)
        record["predictions"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()  # as if written so
        record_path.write_text(json.dumps(record))

    report_err, run_out = damage_and_rerun(tmp_path / "out", root, reshape)
    assert "lacks the column" in report_err and str(tmp_path) in report_err
    assert "running the cell again" in run_out


def test_a_cell_memory_holds_predictions_not_logits():
    """The reducer keeps a few numbers a sample, whatever the number of classes."""
    source = rbench.Source(name="s", root=Path("."), samples=[(f"f{i}", i % 1000) for i in range(512)],
                           views=[rbench.ViewSpec(name="s")])
    from rbench.predictions import Reducer

    reducer = Reducer(source)
    for start in range(0, 512, 128):
        idx = torch.arange(start, start + 128)
        reducer.add(torch.randn(128, 1000), idx, torch.ones(128, dtype=torch.bool))
    held = sum(a.nbytes for a in reducer.arrays.values())
    assert held / 512 < 50  # bytes a sample; the logits were 4000
    assert not math.isnan(reducer.frame()["label_logp"].mean())
