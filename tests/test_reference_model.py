"""`reference_model`: ImageNet-C's mCE and ImageNet-P's mFR/mT5D normalised by a model of the same
store, at report time, against a hand computation from the stored per-sample predictions, for
the reference run first and last; and the rules of the option (shared runs only, a missing
reference)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import rbench
from rbench.plugins.datasets import imagenet_c, imagenet_p

from . import imagenet_fixtures
from .conftest import csv_rows, invoke_apart, invoke_run

needs_library = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("skimage", "cv2", "scipy")),
    reason="the corruptions extra is not installed")

SYNSETS = imagenet_fixtures.info_lines("imagenet_synsets.txt")
CLASSES = [0, 6, 12, 100, 200]  # 0, 6 and 12 are imagenet-p's (every 6th class)
LIVE = CLASSES  # the classes the pinned heads can predict: accuracy far from 0, depending on the image
CORRUPTIONS = ["gaussian_noise", "contrast"]
SEVERITIES = [2, 4]
PERTURBATIONS = ["scale", "translate"]
REFERENCE = "ref-vit"
MODELS = {REFERENCE: ("test_vit", 3), "byob": ("test_byobnet", 2), "other-vit": ("test_vit", 1)}


# --- the rules, on rows made here ---------------------------------------------------------------

def c_row(model, errors: dict[tuple[str, int], float], clean_error: float | None, img_size=32):
    row = {"model": model, "img_size": img_size, "top1": 50.0, "mce": 123.0, "relative_mce": 123.0}
    row.update({imagenet_c.severity_column(c, s): 100.0 * (1 - e) for (c, s), e in errors.items()})
    row["clean_top1"] = math.nan if clean_error is None else 100.0 * (1 - clean_error)
    return row


def request(view, rows, name, final=True, **options):
    return rbench.ReportRequest(view=view, rows=rows, options={"reference_model": name, **options},
                                store=Path("/the/store"), final=final)


def test_imagenet_c_uses_only_the_runs_shared_with_the_reference():
    """The reference ran fog 2 and snow 1 only; the model fog 2, fog 4, snow 1 and frost 3.
    By hand: CE_fog = 0.5 / 0.4, CE_snow = 0.9 / 0.6 (fog 4 and frost 3 left out, noted);
    relative: (0.5 - 0.2) / (0.4 - 0.1), (0.9 - 0.2) / (0.6 - 0.1)."""
    ref = c_row("ref", {("fog", 2): 0.4, ("snow", 1): 0.6}, 0.1)
    model = c_row("m", {("fog", 2): 0.5, ("fog", 4): 0.7, ("snow", 1): 0.9, ("frost", 3): 0.3}, 0.2)
    rows, notes = imagenet_c.report_rows(request("imagenet-c", [ref, model], "ref"))
    by_model = {r["model"]: r for r in rows}
    assert by_model["m"]["mce"] == pytest.approx(100 * (0.5 / 0.4 + 0.9 / 0.6) / 2)
    assert by_model["m"]["relative_mce"] == pytest.approx(100 * (0.3 / 0.3 + 0.7 / 0.5) / 2)
    assert by_model["ref"]["mce"] == pytest.approx(100) and by_model["ref"]["relative_mce"] == pytest.approx(100)
    assert notes == ["imagenet-c: mce and relative_mce of m are over the 2 of its 4 corruption-severities that ref "
                     "ran too"]
    assert model["mce"] == 123.0  # the rows given are not changed
    # No clean images on one side: relative mCE is empty (NaN), mCE is not.
    rows, _ = imagenet_c.report_rows(request("imagenet-c", [c_row("ref", {("fog", 2): 0.4}, None), model], "ref"))
    assert math.isnan(rows[1]["relative_mce"]) and rows[1]["mce"] == pytest.approx(100 * 0.5 / 0.4)
    # The severity view has no normalised columns: left as it is.
    rows, notes = imagenet_c.report_rows(request("imagenet-c-severity", [model], "ref"))
    assert rows == [model] and notes == []


def test_imagenet_p_uses_only_the_shared_perturbations_and_a_zero_reference_is_empty():
    ref = {"model": "ref", "img_size": 32, "brightness_fp": 2.0, "brightness_t5d": 0.5, "snow_fp": 4.0, "snow_t5d": 1.0}
    model = {"model": "m", "img_size": 32, "brightness_fp": 3.0, "brightness_t5d": 0.25, "snow_fp": 1.0,
             "snow_t5d": 2.0, "tilt_fp": 9.0, "tilt_t5d": 9.0}
    rows, notes = imagenet_p.report_rows(request("imagenet-p", [ref, model], "ref"))
    assert rows[1]["mfr"] == pytest.approx(100 * (3.0 / 2.0 + 1.0 / 4.0) / 2)
    assert rows[1]["mt5d"] == pytest.approx(100 * (0.25 / 0.5 + 2.0 / 1.0) / 2)
    assert rows[0]["mfr"] == pytest.approx(100) and rows[0]["mt5d"] == pytest.approx(100)
    assert notes == ["imagenet-p: mfr and mt5d of m are over the 2 of its 3 perturbations that ref ran too"]
    still = {**ref, "snow_fp": 0.0}
    rows, notes = imagenet_p.report_rows(request("imagenet-p", [still, model], "ref"))
    assert math.isnan(rows[1]["mfr"]) and rows[1]["mt5d"] == pytest.approx(rows[1]["mt5d"])
    assert notes[0] == "imagenet-p: ref at 32 px never flips on snow: mfr and mt5d against it are empty"


def test_a_missing_reference_is_an_error_on_a_report_and_empty_columns_during_a_run():
    model = c_row("m", {("fog", 2): 0.5}, 0.2)
    with pytest.raises(rbench.DataError) as error:
        imagenet_c.report_rows(request("imagenet-c", [model], "nobody"))
    assert str(error.value) == ("--data-option imagenet-c.reference_model=nobody: the store /the/store has no "
                                "imagenet-c row of nobody; validate it on imagenet-c into that store, or name a "
                                "model that has one; models with a row: m")
    rows, notes = imagenet_c.report_rows(request("imagenet-c", [model], "nobody", final=False))
    assert rows[0]["mce"] is None and rows[0]["relative_mce"] is None
    assert notes == ["imagenet-c: mce and relative_mce are empty until nobody (imagenet-c.reference_model) has a row"]
    rows, notes = imagenet_p.report_rows(request("imagenet-p", [{"model": "m", "img_size": 32}], "nobody", final=False))
    assert rows[0]["mfr"] is None and notes[0].startswith("imagenet-p: mfr and mt5d are empty until nobody")


# --- a store of three models, by hand from its predictions files -----------------------------------

@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    """5 wnid folders of 3 small real JPEGs each (imagenet-c takes 2 of each, imagenet-p 1)."""
    root = tmp_path_factory.mktemp("reference") / "imagenet" / "val"
    from PIL import Image

    rng = np.random.default_rng(7)
    for c in CLASSES:
        for k in range(3):
            # Coarse blobs of colour, so that the corruptions and perturbations change what a random model sees.
            grid = Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8))
            path = root / SYNSETS[c] / f"ILSVRC2012_val_{c * 10 + k + 1:08d}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            grid.resize((int(rng.integers(48, 80)), int(rng.integers(48, 80))), Image.BILINEAR).save(path, quality=90)
    return root


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """`{row name: @FILE line}`: random models whose heads can only predict `LIVE` (no ties)."""
    folder = tmp_path_factory.mktemp("weights")
    lines = {}
    for name, (architecture, seed) in MODELS.items():
        path = folder / f"{name}.safetensors"
        imagenet_fixtures.pinned_head_model(seed, LIVE, path, name=architecture)
        lines[name] = f"{architecture} --weights {path} --name {name}"
    return lines


def models_file(folder: Path, lines: list[str]) -> str:
    path = folder / f"models-{len(list(folder.glob('models-*')))}.txt"
    path.write_text("\n".join(lines) + "\n")
    return f"@{path}"


def listing_paths(store: Path, record: dict) -> list[str]:
    """Each sample's file, in the source's order, from the record's listing (JSON)."""
    listing = json.loads((store / record["source_listing"]).read_text())
    return [listing["files"][i] for i in listing["sample_files"]]


def stored(store: Path, source: str) -> dict[str, tuple[list[str], pl.DataFrame]]:
    """`{model: (sample files, predictions frame)}` of the store's validation records of `source`."""
    found = {}
    for path in sorted((store / "records").glob("*.json")):
        record = json.loads(path.read_text())
        if record["cell"]["kind"] != "validate" or record["cell"]["source"] != source:
            continue
        frame = pl.read_parquet(store / "predictions" / Path(record["predictions"]["file"]).name)
        found[record["cell"]["name"]] = (listing_paths(store, record), frame)
    return found


def hand_c(paths: list[str], frame: pl.DataFrame) -> tuple[dict[tuple[str, int], float], float]:
    """Top-1 error of each corruption-severity (the block told by the file's folders) and of the
    clean images."""
    wrong: dict[object, list[int]] = {}
    for index, ok, label, top in zip(frame["index"], frame["ok"], frame["label"], frame["topk_class"]):
        if not ok:
            continue
        parts = Path(paths[index]).parts
        block = (parts[-4], int(parts[-3])) if parts[-4] in imagenet_c.CORRUPTIONS else "clean"
        wrong.setdefault(block, []).append(int(top[0] != label))
    return {b: sum(w) / len(w) for b, w in wrong.items() if b != "clean"}, sum(wrong["clean"]) / len(wrong["clean"])


def hand_p(paths: list[str], frame: pl.DataFrame) -> dict[str, tuple[float, float]]:
    """Flip probability (percent) and top-5 distance of each perturbation, difficulty 3: noise
    frames against frame 0, the others against the frame 3 later; per sequence, then the mean."""
    top5: dict[tuple[str, str], dict[int, list[int]]] = {}
    for index, top in zip(frame["index"], frame["topk_class"]):
        parts = Path(paths[index]).parts  # .../<perturbation>[_<difficulty>]/<wnid>/<stem>/<frame>.png
        kind = parts[-4].removesuffix("_3")
        top5.setdefault((kind, f"{parts[-3]}/{parts[-2]}"), {})[int(Path(parts[-1]).stem)] = list(top)
    result = {}
    for perturbation in PERTURBATIONS:
        flips, distances = [], []
        for (kind, _), frames in top5.items():
            if kind != perturbation:
                continue
            n = len(frames)
            pairs = [(0, j) for j in range(1, n)] if "noise" in kind else [(j, j + 3) for j in range(n - 3)]
            flips.append(sum(frames[a][0] != frames[b][0] for a, b in pairs) / len(pairs))
            total = 0
            for a, b in pairs:
                for k in range(5):
                    second = frames[b]
                    total += abs(k - (second.index(frames[a][k]) if frames[a][k] in second else 5))
            distances.append(total / len(pairs))
        result[perturbation] = (100 * sum(flips) / len(flips), sum(distances) / len(distances))
    return result


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def expected_rows(store: Path) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """mce and relative_mce, mfr and mt5d of every model against REFERENCE, by hand."""
    c_runs = {m: hand_c(*data) for m, data in stored(store, "imagenet-c").items()}
    p_runs = {m: hand_p(*data) for m, data in stored(store, "imagenet-p").items()}
    assert set(c_runs) == set(p_runs) == set(MODELS)
    ref_errors, ref_clean = c_runs[REFERENCE]
    c_expected = {}
    for model, (errors, clean) in c_runs.items():
        ces, relative = [], []
        for c in CORRUPTIONS:
            ces.append(ratio(sum(errors[(c, s)] for s in SEVERITIES), sum(ref_errors[(c, s)] for s in SEVERITIES)))
            relative.append(ratio(sum(errors[(c, s)] - clean for s in SEVERITIES),
                                  sum(ref_errors[(c, s)] - ref_clean for s in SEVERITIES)))
        c_expected[model] = {"mce": 100 * sum(ces) / len(ces), "relative_mce": 100 * sum(relative) / len(relative)}
    ref_p = p_runs[REFERENCE]
    assert all(fp > 0 and t5d > 0 for fp, t5d in ref_p.values())  # the reference flips: ratios exist
    p_expected = {model: {"mfr": 100 * sum(runs[p][0] / ref_p[p][0] for p in PERTURBATIONS) / len(PERTURBATIONS),
                          "mt5d": 100 * sum(runs[p][1] / ref_p[p][1] for p in PERTURBATIONS) / len(PERTURBATIONS)}
                  for model, runs in p_runs.items()}
    return c_expected, p_expected


def check_files(out: Path, store: Path) -> None:
    """The normalised columns of `out`'s files are the hand computation from `store`'s predictions."""
    c_expected, p_expected = expected_rows(store)
    for view, expected in (("imagenet-c", c_expected), ("imagenet-p", p_expected)):
        rows = {r["model"]: r for r in csv_rows(out / f"results-{view}.csv")}
        assert set(rows) == set(MODELS)
        for model, values in expected.items():
            for column, value in values.items():
                assert math.isfinite(value), (view, model, column)  # the fixture's models give every ratio
                assert float(rows[model][column]) == pytest.approx(value, abs=5e-4), (view, model, column)
                if model == REFERENCE:
                    assert rows[model][column] == "100.000", (view, column)


@needs_library
def test_normalised_by_a_model_of_the_store_whichever_runs_first(val_root, model_files, tmp_path):
    build = tmp_path / "made"
    args = ["-d", "imagenet-c,imagenet-p", "--data", f"imagenet-c={val_root}", "--data", f"imagenet-p={val_root}",
            "--allow-partial", "-b", "cpu", "--bench", "validate", "--img-size", "32", "--batch-size", "64",
            "--workers", "0",
            "--data-option", "imagenet-c.per_class=2", "--data-option", f"imagenet-c.corruptions={','.join(CORRUPTIONS)}",
            "--data-option", f"imagenet-c.severities={','.join(map(str, SEVERITIES))}",
            "--data-option", f"imagenet-c.build_dir={build / 'c'}", "--data-option", "imagenet-c.build_workers=1",
            "--data-option", f"imagenet-p.perturbations={','.join(PERTURBATIONS)}", "--data-option", "imagenet-p.difficulty=3",
            "--data-option", f"imagenet-p.build_dir={build / 'p'}", "--data-option", "imagenet-p.build_workers=1"]
    normalise = ["--data-option", f"imagenet-c.reference_model={REFERENCE}",
                 "--data-option", f"imagenet-p.reference_model={REFERENCE}"]
    others = [line for name, line in model_files.items() if name != REFERENCE]

    # The reference first, the others after it: the run's files are normalised.
    first = tmp_path / "first"
    ran = invoke_run("-m", models_file(tmp_path, [model_files[REFERENCE]]), *args, *normalise, "--out", str(first))
    assert ran.exit_code == 0, ran.output
    ran = invoke_run("-m", models_file(tmp_path, others), *args, *normalise, "--out", str(first))
    assert ran.exit_code == 0, ran.output
    check_files(first, first / "store")

    # The reference last: a run before it leaves the normalised columns empty and says so; after
    # it (run without the option: AlexNet's mCE), a report alone normalises.
    last = tmp_path / "last"
    ran = invoke_run("-m", models_file(tmp_path, others), *args, *normalise, "--out", str(last))
    assert ran.exit_code == 0, ran.output
    said = " ".join(ran.output.split())
    assert f"imagenet-c: mce and relative_mce are empty until {REFERENCE} (imagenet-c.reference_model) has a row" in said
    assert f"imagenet-p: mfr and mt5d are empty until {REFERENCE} (imagenet-p.reference_model) has a row" in said
    for view, column in (("imagenet-c", "mce"), ("imagenet-p", "mfr")):
        assert {r[column] for r in csv_rows(last / f"results-{view}.csv")} == {""}
    ran = invoke_run("-m", models_file(tmp_path, [model_files[REFERENCE]]), *args, "--out", str(last))
    assert ran.exit_code == 0, ran.output
    alexnet = {r["model"]: r["mce"] for r in csv_rows(last / "results-imagenet-c.csv")}
    assert alexnet[REFERENCE] not in ("", "100.000")
    report = invoke_apart("report", "--store", str(last / "store"), "--out", str(tmp_path / "report"), *normalise)
    assert report.exit_code == 0, report.output
    check_files(tmp_path / "report", last / "store")
    # The same cells, whatever the option: the second store ran each model once per data set.
    assert len(list((last / "store" / "records").glob("*.json"))) == 2 * len(MODELS)

    # A name with no row in the store: one line naming it and the store, exit 2, nothing written.
    bad = invoke_apart("report", "--store", str(last / "store"), "--out", str(tmp_path / "bad"),
                       "--data-option", "imagenet-c.reference_model=nobody")
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [
        f"rbench: error: --data-option imagenet-c.reference_model=nobody: the store {last / 'store'} has no "
        "imagenet-c row of nobody; validate it on imagenet-c into that store, or name a model that has one; "
        f"models with a row: byob, other-vit, {REFERENCE}"]
    assert not (tmp_path / "bad" / "results-imagenet-c.csv").exists()
    # An option read when listing is not a report's.
    wrong = invoke_apart("report", "--store", str(last / "store"), "--out", str(tmp_path / "bad"),
                         "--data-option", "imagenet-c.per_class=2")
    assert wrong.exit_code == 2
    assert "imagenet-c.per_class is read when the data is listed" in wrong.stderr
