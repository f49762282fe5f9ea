"""Full scores kept on demand (`--keep scores`): what the file holds, every view computed from
it, a class restriction declared after the run, and the cells' keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from rbench import Source, ViewSpec
from rbench.predictions import DamagedPredictions, can_score, read, view_predictions, write
from rbench.registry import load_registry
from rbench.store import Store

from . import imagenet_fixtures
from .conftest import invoke_apart
from .test_imagenet import A, FAVOURED, IMG_SIZE, data_root, oracle_logits  # noqa: F401

# float16 keeps 11 significant bits: rounding to nearest moves a value x by at most |x| 2^-11
# (a subnormal by at most 2^-25), and never reorders two values (it is monotonic): classes can
# only swap where their float16 scores tie.
HALF_ULP = 2.0**-11
FLOAT32_SLACK = 1e-4  # the reducer's own float32 arithmetic on the logits


def half_bound(values) -> np.ndarray:
    """The largest change float16 rounding makes to each of `values`."""
    return np.abs(np.asarray(values, dtype=np.float64)) * HALF_ULP + 2.0**-25


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A random test_byobnet whose head is scaled up, so that its log-probabilities spread as a
    trained model's do (few float16 ties), and its weights file."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(11)
    model = timm.create_model("test_byobnet").eval()
    with torch.no_grad():
        model.get_classifier().weight.mul_(40.0)
    path = tmp_path_factory.mktemp("weights") / "spread.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def run_val(root: Path, counts, out: Path, weights: Path, *extra: str):
    with pytest.MonkeyPatch.context() as mp:
        from rbench.plugins.datasets import imagenet as imagenet_plugin

        mp.setattr(imagenet_plugin, "EXPECTED", counts)
        return invoke_apart("run", "-m", "test_byobnet", "--weights", str(weights), "-d", "imagenet",
                            "--data-root", str(root), "--bench", "validate", "--img-size", str(IMG_SIZE),
                            "--batch-size", "64", "--workers", "0", "--out", str(out), *extra)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, data_root, model_file):  # noqa: F811
    """The ImageNet val fixture run by one model twice, compact and `--keep scores`, each in a
    store of its own. Returns (data root, compact out, scores out, model)."""
    root, counts = data_root
    model, weights = model_file
    base = tmp_path_factory.mktemp("keep")
    outs = base / "compact", base / "scores"
    for out, extra in zip(outs, [(), ("--keep", "scores")]):
        result = run_val(root, counts, out, weights, *extra)
        assert result.exit_code == 0, result.output + result.stderr
    return root, *outs, model


def val_file(out: Path) -> tuple[pl.DataFrame, dict, Source]:
    """The val cell's predictions frame, record and source listing of `out`'s store."""
    store = Store(out / "store")
    (record,) = [r for r in store.records() if r.cell.source == "imagenet"]
    data = json.loads((out / "store" / "records" / f"{record.key}.json").read_text())
    frame = pl.read_parquet(out / "store" / data["predictions"]["file"])
    return frame, data, store.get_source(data["source_listing"], load_registry())


def half_scores(frame: pl.DataFrame) -> np.ndarray:
    width = frame.schema["scores"].size
    return frame["scores"].to_numpy().reshape(frame.height, width).astype(np.float64)


def test_the_compact_columns_recomputed_from_the_full_scores_equal_the_compact_file(two_runs):
    _, compact_out, scores_out, _ = two_runs
    compact, compact_record, _ = val_file(compact_out)
    full, full_record, source = val_file(scores_out)
    assert "scores" not in compact.columns and "keep" not in compact_record["cell"]["identity"]
    assert full_record["cell"]["identity"]["keep"] == "scores" and full.schema["scores"] == pl.Array(pl.Float16, 1000)
    # The scores cell's compact columns are the compact cell's, bit for bit.
    assert full.drop("scores").equals(compact)

    scores = half_scores(full)
    topk = compact["topk_class"].to_numpy().astype(np.int64)
    topk_logp = compact["topk_logp"].to_numpy().astype(np.float64)
    rows = np.arange(full.height)[:, None]
    recomputed = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    # Classes: the same, but where float16 rounding made two scores equal (then either order).
    np.testing.assert_array_equal(scores[rows, recomputed], scores[rows, topk])
    assert (recomputed == topk).mean() > 0.95
    # Log-probabilities: within float16's rounding of the exact ones.
    assert (np.abs(scores[rows, topk] - topk_logp) <= half_bound(topk_logp) + FLOAT32_SLACK).all()
    label = compact["label"].to_numpy()
    label_logp = compact["label_logp"].to_numpy().astype(np.float64)
    assert (np.abs(scores[np.arange(full.height), label] - label_logp) <= half_bound(label_logp) + FLOAT32_SLACK).all()
    # sum p^2 with each log p moved by at most d: within a factor exp(2 d) of the exact sum.
    worst = half_bound(scores).max(axis=1)
    prob_sq_sum = compact["prob_sq_sum"].to_numpy().astype(np.float64)
    assert (np.abs(np.exp(2 * scores).sum(axis=1) - prob_sq_sum) <= prob_sq_sum * np.expm1(2 * worst) + 1e-5).all()


def restriction_bound(scores_of_view: np.ndarray) -> np.ndarray:
    """Per sample, the largest change float16 rounding makes to a log-probability under a class
    restriction: that of the score itself plus that of the restriction's log-sum-exp (at most
    the largest of its terms')."""
    return 2 * half_bound(scores_of_view).max(axis=1) + FLOAT32_SLACK


def assert_same_predictions(exact, from_scores, scores_of_view: np.ndarray) -> None:
    """`from_scores` (a view's `Predictions` computed from float16 scores) is `exact` (from the
    logits) up to float16 rounding: log-probabilities within the bound, classes equal but where
    near-tied classes swapped (their exact log-probabilities within the bound of each other)."""
    bound = restriction_bound(scores_of_view)
    np.testing.assert_array_equal(exact.indices, from_scores.indices)
    assert list(exact.labels) == list(from_scores.labels)
    assert (np.abs(exact.topk_logp - from_scores.topk_logp) <= bound[:, None]).all()
    swapped = exact.topk != from_scores.topk
    assert swapped.mean() < 0.05
    assert (np.abs(np.where(swapped, exact.topk_logp - from_scores.topk_logp, 0.0)) <= bound[:, None]).all()
    both = ~np.isnan(exact.label_logp)
    np.testing.assert_array_equal(both, ~np.isnan(from_scores.label_logp))
    assert (np.abs(exact.label_logp - from_scores.label_logp)[both] <= bound[both]).all()
    assert (np.abs(exact.logsumexp - from_scores.logsumexp) <= bound).all()
    assert (np.abs(exact.prob_sq_sum - from_scores.prob_sq_sum) <= exact.prob_sq_sum * np.expm1(2 * bound) + 1e-6).all()


def test_every_view_metric_and_statistic_is_the_same_from_scores_and_from_compact_predictions(two_runs):
    _, compact_out, scores_out, _ = two_runs
    # The report files of the two runs (every view's results and metrics: accuracy, intervals,
    # calibration, ties) are the same.
    written = sorted(p.name for p in compact_out.glob("*.csv") if not p.name.startswith("benchmark"))
    assert "results-imagenet-a-clean.csv" in written and "metrics-imagenet-real.csv" in written
    for name in written:
        assert (scores_out / name).read_bytes() == (compact_out / name).read_bytes(), name
    # And computed from the scores alone (no restriction columns), every metric of every view
    # gives the compact columns' numbers, within float16's rounding.
    compact, _, source = val_file(compact_out)
    full, _, _ = val_file(scores_out)
    scores_only = full.drop([c for c in full.columns if "/" in c and not c.endswith("/labels")])
    metrics = load_registry().metrics.values()
    restricted = [view for view in source.views if view.classes is not None]
    assert {v.name for v in restricted} == {"imagenet-a-clean", "imagenet-r-clean"}
    for view in source.views:
        assert can_score(scores_only.columns, source, view)
        exact = view_predictions(compact, source, view)
        computed = view_predictions(scores_only, source, view)
        classes = list(view.classes) if view.classes is not None else list(range(1000))
        rows = np.searchsorted(full["index"].to_numpy(), exact.indices)
        assert_same_predictions(exact, computed, half_scores(full)[rows][:, classes])
        # Percent of the samples whose top-1 (top-5 set) a swap of float16-tied classes changed:
        # a top-k accuracy moves by at most that, its interval's bounds by at most twice that.
        changed = {"top1": float((exact.topk[:, 0] != computed.topk[:, 0]).mean()) * 100,
                   "top5": float((np.sort(exact.topk, axis=1) != np.sort(computed.topk, axis=1)).any(axis=1).mean()) * 100}
        for metric in metrics:
            a, b = metric.compute(exact, view), metric.compute(computed, view)
            assert a.keys() == b.keys()
            for column in a:
                if a[column] is None or b[column] is None:  # not defined for this view
                    assert a[column] is b[column], (view.name, column)
                elif column.startswith(("top1", "top5")):
                    assert abs(a[column] - b[column]) <= 2 * changed[column[:4]] + 1e-9, (view.name, column)
                else:
                    assert b[column] == pytest.approx(a[column], rel=1e-3, abs=1e-3), (view.name, column)


def test_a_class_restriction_declared_after_the_run_equals_a_brute_force_forward_pass(two_runs):
    root, compact_out, scores_out, model = two_runs
    full, _, source = val_file(scores_out)
    compact, _, _ = val_file(compact_out)
    rng = np.random.default_rng(3)
    classes = sorted({*FAVOURED[:3], *rng.choice([c for c in range(1000) if c not in A], 110, replace=False).tolist()})
    later = ViewSpec(name="objectnet-like", classes=classes)
    assert not can_score(compact.columns, source, later) and can_score(full.columns, source, later)
    predictions = view_predictions(full, source, later)

    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    files = sorted((root / "imagenet" / "val").glob("*/*.JPEG"))
    assert [Path(path).name for path, _ in source.samples] == [f.name for f in files]
    labels = torch.tensor([synsets.index(f.parent.name) for f in files])
    logits = oracle_logits(model, files).double()[:, classes]  # the model itself, on the same inputs
    logp = logits.log_softmax(dim=1)
    inside = torch.tensor([int(label) in set(classes) for label in labels])
    assert inside.sum() >= 3
    position = {c: i for i, c in enumerate(classes)}
    exact_label = torch.tensor([logp[i, position[int(c)]].item() if inside[i] else float("nan")
                                for i, c in enumerate(labels)])
    top = logp.topk(5, dim=1)
    exact = type(predictions)(indices=np.arange(len(files)), labels=labels.tolist(),
                              topk=torch.tensor(classes)[top.indices].numpy(), topk_logp=top.values.numpy(),
                              label_logp=exact_label.numpy(), logsumexp=logits.logsumexp(dim=1).numpy(),
                              prob_sq_sum=logp.exp().pow(2).sum(dim=1).numpy())
    assert_same_predictions(exact, predictions, half_scores(full)[:, classes])
    assert (predictions.topk[:, 0] == exact.topk[:, 0]).mean() > 0.95


def test_a_bad_keep_value_is_one_line_and_exit_2(tmp_path):
    for value, expected in [("full", "--keep 'full': expected compact or scores"),
                            ("nosuch=scores", "unknown dataset 'nosuch'"),
                            ("imagenet=everything", "--keep 'imagenet=everything'")]:
        result = invoke_apart("run", "--keep", value, "--bench", "validate", "--out", str(tmp_path / "out"))
        assert result.exit_code == 2, result.output + result.stderr
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert not (tmp_path / "out" / "store").exists()


def records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "store" / "records").glob("*.json")}


def test_a_compact_cell_does_not_answer_keep_scores_and_a_scores_cell_answers_compact(images, tmp_path):
    run = ["run", "-m", "test_vit", "--weights", "random", "--data-dir", str(images), "--bench", "validate",
           "--workers", "0", "--img-size", "32"]
    compact_out = tmp_path / "compact"
    assert invoke_apart(*run, "--out", str(compact_out)).exit_code == 0
    (compact_key,) = records(compact_out)
    assert "keep" not in records(compact_out)[compact_key]["cell"]["identity"]  # compact keys as they were

    again = invoke_apart(*run, "--out", str(compact_out), "--keep", "scores")  # runs the cell again, with scores
    assert again.exit_code == 0, again.output + again.stderr
    held = records(compact_out)
    assert set(held) > {compact_key} and len(held) == 2
    (scores_key,) = set(held) - {compact_key}
    assert held[scores_key]["cell"]["identity"]["keep"] == "scores"
    assert "scores" in pl.read_parquet_schema(compact_out / "store" / held[scores_key]["predictions"]["file"])

    scores_out = tmp_path / "scores"  # a store of scores only: a compact request runs nothing
    assert invoke_apart(*run, "--out", str(scores_out), "--keep", "imagefolder=scores").exit_code == 0
    assert list(records(scores_out)) == [scores_key]
    compact_again = invoke_apart(*run, "--out", str(scores_out))
    assert compact_again.exit_code == 0 and "0 ok, 0 failed, 1 already in the store" in compact_again.output
    assert list(records(scores_out)) == [scores_key]


def test_a_source_that_declares_keep_scores_keeps_them_and_its_listing_says_so():
    from rbench.listings import from_data, to_data
    from rbench.parent.plan import RunOptions

    source = Source(name="s", root=Path("."), samples=[("a.jpg", 0)], views=[ViewSpec(name="s")], keep_scores=True)
    assert RunOptions().keeps_scores(source)
    assert not RunOptions().keeps_scores(Source(name="s", root=Path("."), samples=[], views=[]))
    assert RunOptions(keep_datasets={"s": "scores"}).keeps_scores(Source(name="s", root=Path("."), samples=[], views=[]))
    assert from_data(to_data(source, None), None).keep_scores
    assert "keep_scores" not in to_data(Source(name="s", root=Path("."), samples=[], views=[]), None)


def test_a_scores_column_of_another_type_is_damaged_predictions(tmp_path):
    frame = pl.DataFrame({"index": pl.Series([0], dtype=pl.UInt32), "ok": [True], "label": pl.Series([1], dtype=pl.Int32),
                          "topk_class": pl.Series([[1, 0]], dtype=pl.Array(pl.UInt16, 2)),
                          "topk_logp": pl.Series([[-0.1, -2.0]], dtype=pl.Array(pl.Float32, 2)),
                          "label_logp": [-0.1], "logsumexp": [1.0], "prob_sq_sum": [0.8]})
    good = frame.with_columns(scores=pl.Series([[-2.0, -0.1]], dtype=pl.Array(pl.Float16, 2)))
    write(good, tmp_path / "good.parquet")
    assert read(tmp_path / "good.parquet")["scores"].dtype == pl.Array(pl.Float16, 2)
    bad = frame.with_columns(scores=pl.Series([[-2.0, -0.1]], dtype=pl.Array(pl.Float32, 2)))
    write(bad, tmp_path / "bad.parquet")
    with pytest.raises(DamagedPredictions, match="'scores' column"):
        read(tmp_path / "bad.parquet")
