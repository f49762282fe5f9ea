"""Views added after the run (`rbench.AddedViews`): their rows come from the stored predictions,
with no model run, checked against counts made here from the Parquet files; the 1000-way
ImageNet-A/-R views against a forward pass of the model in the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import rbench
from rbench.errors import PluginError
from rbench.registry import load_registry

from . import imagenet_fixtures
from .conftest import csv_rows, invoke_run, make_distribution
from .test_imagenet import (A, FAVOURED, IMG_SIZE, R, checkpoint_row, complete, data_root,  # noqa: F401 (fixtures)
                            oracle_logits, read_rows, topk_score)

CLASSES = 10  # the synthetic data set's

ADDED_PLUGIN = '''
import rbench


def make(source):
    even = [i for i in range(len(source.samples)) if i % 2 == 0]
    return [
        # a sample subset with a label mapping: each label becomes a set of two classes
        rbench.ViewSpec(name="synthetic-even-pairs", samples=even,
                        labels=[(source.samples[i][1], (source.samples[i][1] + SHIFT) % 10) for i in even]),
        # every sample, each label mapped to another class
        rbench.ViewSpec(name="synthetic-flipped", labels=[9 - label for _, label in source.samples]),
        # a class subset the run did not keep
        rbench.ViewSpec(name="synthetic-first5", classes=[0, 1, 2, 3, 4],
                        samples=[i for i, (_, label) in enumerate(source.samples) if label < 5]),
    ]


@rbench.hookimpl
def rbench_added_views():
    return [rbench.AddedViews(name="synthetic-extra", description="test views", source="synthetic", make=make,
                              views={"synthetic-even-pairs": "synthetic", "synthetic-flipped": "synthetic",
                                     "synthetic-first5": None})]
'''


def install(site: Path, shift: int, version: str = "1.0") -> None:
    """The plugin above as the distribution `addedviews` of `version` in `site` (replacing any)."""
    import shutil

    shutil.rmtree(site, ignore_errors=True)
    make_distribution(site, "addedviews", {"rbench.datasets": {"extra": "addedviews_mod"}},
                      {"addedviews_mod": f"SHIFT = {shift}\n" + ADDED_PLUGIN})
    metadata = site / "addedviews-1.0.dist-info" / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 1.0", f"Version: {version}"))


def rbench_cli(*args: str, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rbench", *args], capture_output=True, text=True, env=env)


def store_files(store: Path) -> dict[str, tuple[int, int]]:
    """Every record and predictions file of a store, with its size and modification time."""
    return {p.relative_to(store).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for folder in ("records", "predictions") for p in sorted((store / folder).iterdir())}


def brute_force(parquet: Path, samples: list[int], labels: list[set[int]]) -> tuple[str, str]:
    """Top-1 and top-5 (percent, as written) of the stored top-5 classes of `samples` against
    `labels`, counted here from the Parquet file."""
    frame = pl.read_parquet(parquet, columns=["index", "ok", "topk_class"])
    by_index = {row["index"]: row for row in frame.iter_rows(named=True)}
    right1 = right5 = n = 0
    for i, accepted in zip(samples, labels):
        row = by_index[i]
        if not row["ok"]:
            continue
        top = list(row["topk_class"])
        n += 1
        right1 += top[0] in accepted
        right5 += bool(accepted & set(top[:5]))
    return f"{100 * right1 / n:.3f}", f"{100 * right5 / n:.3f}"


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A run on the synthetic data set with no plugin adding views: a model that can only predict
    the data set's 10 classes (so that every count is far from zero), its store and out."""
    root = tmp_path_factory.mktemp("added")
    weights = root / "model.safetensors"
    imagenet_fixtures.pinned_head_model(3, list(range(CLASSES)), weights)
    out = root / "out"
    result = invoke_run("-m", "test_byobnet", "--weights", str(weights), "-d", "synthetic", "--bench", "validate",
                        "--img-size", "64", "--workers", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert not list(out.glob("results-synthetic-*.csv"))
    return root, out, checkpoint_row("test_byobnet", weights)


def test_a_view_added_after_the_run_is_scored_by_report_from_the_stored_predictions(ran, tmp_path):
    root, out, model = ran
    store = out / "store"
    before = store_files(store)
    site = tmp_path / "site"
    install(site, shift=1)
    report = tmp_path / "report"
    result = rbench_cli("report", "--store", str(store), "--out", str(report), site=site)
    assert result.returncode == 0, result.stderr
    assert store_files(store) == before  # no cell ran: no record nor predictions file is new or changed

    parquet = next((store / "predictions").glob("*.parquet"))
    labels = [label for _, label in rbench.registry.get_registry().datasets["synthetic"].load(
        rbench.DataRequest(path=None, cache_dir=rbench.cache_dir())).samples]
    even = list(range(0, len(labels), 2))
    expected = {"synthetic-even-pairs": brute_force(parquet, even, [{labels[i], (labels[i] + 1) % 10} for i in even]),
                "synthetic-flipped": brute_force(parquet, list(range(len(labels))), [{9 - c} for c in labels])}
    base = read_rows(report / "results-synthetic.csv")[model]
    for view, (top1, top5) in expected.items():
        row = read_rows(report / f"results-{view}.csv")[model]
        assert (row["top1"], row["top5"]) == (top1, top5), view
        assert row["top1_diff"] == f"{float(top1) - float(base['top1']):+.3f}"  # against its declared base
        metrics = read_rows(report / f"metrics-{view}.csv")[model]
        assert {"ece", "nll", "brier", "top1_low"} <= set(metrics)  # every metric
    assert float(expected["synthetic-even-pairs"][0]) > 0 and float(expected["synthetic-flipped"][1]) > 0

    # The class-restricted view: the compact file cannot give it; nothing is written for it, and
    # one line names the cell and the command to run it again.
    assert not (report / "results-synthetic-first5.csv").exists()
    assert not (report / "metrics-synthetic-first5.csv").exists()
    lines = [line for line in result.stderr.splitlines() if "synthetic-first5" in line]
    assert len(lines) == 1, result.stderr
    assert model in lines[0] and "rbench run -m test_byobnet -d synthetic --keep scores (" in lines[0]

    # `rbench run` of the same command with the plugin installed: nothing runs, the same files.
    rerun = tmp_path / "rerun"
    result = rbench_cli("run", "-m", "test_byobnet", "--weights", str(root / "model.safetensors"), "-d", "synthetic",
                        "--bench", "validate", "--img-size", "64", "--workers", "0", "--out", str(rerun),
                        "--store", str(store), site=site)
    assert result.returncode == 0, result.stderr
    assert "0 row(s) from this run" in result.stdout
    assert store_files(store) == before
    for view in expected:
        assert (rerun / f"results-{view}.csv").read_bytes() == (report / f"results-{view}.csv").read_bytes()
    assert sum("synthetic-first5" in line for line in result.stderr.splitlines()) == 1


def test_added_view_entries_are_reused_only_by_the_same_plugin_version(ran, tmp_path):
    _, out, model = ran
    store = tmp_path / "store"
    import shutil

    shutil.copytree(out / "store", store)
    site = tmp_path / "site"
    install(site, shift=1)
    assert rbench_cli("report", "--store", str(store), "--out", str(tmp_path / "first"), site=site).returncode == 0
    entries = sorted(p.name for p in (store / "scores").glob("*-added-*.json"))
    assert entries and any(name.endswith("-views.json") for name in entries)
    first = read_rows(tmp_path / "first" / "results-synthetic-even-pairs.csv")[model]

    # Another mapping under the same version: the kept entries are used (what that version computed).
    install(site, shift=2)
    assert rbench_cli("report", "--store", str(store), "--out", str(tmp_path / "same"), site=site).returncode == 0
    assert read_rows(tmp_path / "same" / "results-synthetic-even-pairs.csv")[model] == first

    # A new version of the plugin: its views are scored again, not taken from the old entries.
    install(site, shift=2, version="2.0")
    assert rbench_cli("report", "--store", str(store), "--out", str(tmp_path / "new"), site=site).returncode == 0
    labels = [row["label"] for row in pl.read_parquet(next((store / "predictions").glob("*.parquet")),
                                                       columns=["label"]).iter_rows(named=True)]
    even = list(range(0, len(labels), 2))
    expected = brute_force(next((store / "predictions").glob("*.parquet")), even,
                           [{labels[i], (labels[i] + 2) % 10} for i in even])
    row = read_rows(tmp_path / "new" / "results-synthetic-even-pairs.csv")[model]
    assert (row["top1"], row["top5"]) == expected != (first["top1"], first["top5"])


# --- the registry ----------------------------------------------------------------------------

class Adds:
    def __init__(self, *specs):
        self.specs = specs

    @rbench.hookimpl
    def rbench_added_views(self):
        return list(self.specs)


def added(name: str, *views: str, source: str = "synthetic") -> rbench.AddedViews:
    return rbench.AddedViews(name=name, description="d", source=source, views={v: None for v in views},
                             make=lambda s: [])


@pytest.mark.parametrize("plugins, message", [
    ([("test:wrong", Adds(rbench.ViewSpec(name="v")))], r"test:wrong.*ViewSpec from rbench_added_views, expected AddedViews"),
    ([("test:one", Adds(added("twin", "v1"))), ("test:two", Adds(added("twin", "v2")))],
     r"added views name 'twin' is provided twice: by plugin test:one .* and by plugin test:two"),
    ([("test:clash", Adds(added("mine", "imagenet-real", source="imagenet")))],
     r"the view 'imagenet-real' of added views 'mine' of plugin test:clash .* also a view of data set 'imagenet' of "
     r"plugin rbench.datasets:imagenet"),
    ([("test:one", Adds(added("first", "v"))), ("test:two", Adds(added("second", "v")))],
     r"the view 'v' of added views 'second' of plugin test:two .* also a view of added views 'first' of plugin test:one"),
])
def test_registry_errors_name_the_plugin(plugins, message):
    with pytest.raises(PluginError, match=message):
        load_registry(extra=plugins)


def test_a_view_make_does_not_declare_is_an_error_naming_the_plugin(ran, monkeypatch):
    _, out, _ = ran
    spec = rbench.AddedViews(name="sloppy", description="d", source="synthetic", views={"declared": None},
                             make=lambda source: [rbench.ViewSpec(name="undeclared")])
    monkeypatch.setattr(rbench.registry, "_REGISTRY", load_registry(extra=[("test:sloppy", Adds(spec))]))
    with pytest.raises(PluginError, match="added views 'sloppy' of plugin test:sloppy .*'undeclared'"):
        rbench.load_report(out)


def test_list_datasets_shows_the_added_views(tmp_path):
    install(tmp_path / "site", shift=1)
    result = rbench_cli("list", "datasets", site=tmp_path / "site")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "synthetic-extra" in line)
    assert "synthetic-even-pairs (base synthetic)" in line and "synthetic-first5" in line
    assert "imagenet-a-1k (base imagenet-a-clean-1k)" in result.stdout


# --- the 1000-way ImageNet-A and -R views ------------------------------------------------------

OUTSIDE = [c for c in range(1000) if c not in A and c not in R][:8]  # classes outside both subsets


def test_1000_way_imagenet_a_and_r_views_match_an_independent_forward_pass(complete, tmp_path):
    # A model that predicts classes of A and R and classes of neither: scored over all 1000 classes,
    # A's and R's images lose what they gain over 200 only.
    weights = tmp_path / "model.safetensors"
    model = imagenet_fixtures.pinned_head_model(11, FAVOURED + OUTSIDE, weights)
    out = tmp_path / "out"
    result = invoke_run("-m", "test_byobnet", "--weights", str(weights), "--data-root", str(complete),
                        "-d", "imagenet,imagenet-a,imagenet-r", "--bench", "validate", "--img-size", str(IMG_SIZE),
                        "--workers", "0", "--out", str(out))
    assert result.exit_code == 0, result.output

    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    val = [(f, synsets.index(f.parent.name)) for f in sorted((complete / "imagenet" / "val").glob("*/*.JPEG"))]
    val_logits = oracle_logits(model, [f for f, _ in val])
    expected = {}
    for name, subset in (("imagenet-a", A), ("imagenet-r", R)):
        keep = [i for i, (_, c) in enumerate(val) if c in subset]
        clean_labels = [val[i][1] for i in keep]
        expected[f"{name}-clean-1k"] = topk_score(val_logits[keep], clean_labels)
        expected[f"{name}-clean"] = topk_score(val_logits[keep], clean_labels, subset)
        files = sorted((complete / name).glob("*/*.jpg"))
        logits, labels = oracle_logits(model, files), [synsets.index(f.parent.name) for f in files]
        expected[f"{name}-1k"] = topk_score(logits, labels)
        expected[name] = topk_score(logits, labels, subset)
    row_name = checkpoint_row("test_byobnet", weights)
    rows = {view: read_rows(out / f"results-{view}.csv")[row_name] for view in expected}
    for view, (top1, top5) in expected.items():
        assert (rows[view]["top1"], rows[view]["top5"]) == (top1, top5), view
    for name in ("imagenet-a", "imagenet-r"):
        assert expected[f"{name}-1k"] != expected[name]  # the model tells 1000-way from 200-way apart
        assert (out / f"results-{name}-1k.csv").read_text().splitlines()[0] == (
            "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation,top1_diff,top5_diff,rank_diff")
        diff = float(expected[f"{name}-1k"][0]) - float(expected[f"{name}-clean-1k"][0])
        assert rows[f"{name}-1k"]["top1_diff"] == f"{diff:+.3f}"  # against the clean 1000-way view
        assert "top1_diff" not in csv_rows(out / f"results-{name}-clean-1k.csv")[0]


def test_a_class_restricted_view_added_after_a_keep_scores_run_is_scored_from_the_full_scores(tmp_path):
    """The class subset the compact file cannot give: after `--keep scores`, a report gives its
    row, equal to the argmax over those classes of the stored scores, counted here."""
    import numpy as np

    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "spread.safetensors"
    pinned = imagenet_fixtures.pinned_head_model(3, list(range(CLASSES)), weights)
    with torch.no_grad():  # logits far apart: the answer depends on the image, no float16 ties
        pinned.get_classifier().weight[:CLASSES] *= 40.0
    save_file({k: v.contiguous() for k, v in pinned.state_dict().items()}, str(weights))
    model = checkpoint_row("test_byobnet", weights)
    out = tmp_path / "out"
    result = invoke_run("-m", "test_byobnet", "--weights", str(weights), "-d", "synthetic",
                        "--bench", "validate", "--img-size", "64", "--workers", "0", "--keep", "scores",
                        "--out", str(out))
    assert result.exit_code == 0, result.output
    site = tmp_path / "site"
    install(site, shift=1)
    report = tmp_path / "report"
    result = rbench_cli("report", "--store", str(out / "store"), "--out", str(report), site=site)
    assert result.returncode == 0, result.stderr
    assert "synthetic-first5" not in result.stderr

    frame = pl.read_parquet(next((out / "store" / "predictions").glob("*.parquet")))
    classes = [0, 1, 2, 3, 4]
    right1 = n = 0
    nll = []
    changed = 0  # samples whose top-1 over the five classes is not their top-1 over all
    for row in frame.iter_rows(named=True):
        if not row["ok"] or row["label"] >= 5:
            continue
        scores = np.asarray(row["scores"], dtype=np.float64)[classes]
        n += 1
        right1 += int(np.argmax(scores)) == row["label"]
        changed += int(np.argmax(scores)) != row["topk_class"][0]
        nll.append(np.logaddexp.reduce(scores) - scores[row["label"]])  # the label's log-probability over the five
    assert n == 50 and changed > 0
    written = read_rows(report / "results-synthetic-first5.csv")[model]
    # five classes: every label is in the top-5
    assert (written["top1"], written["top5"]) == (f"{100 * right1 / n:.3f}", "100.000")
    metrics = read_rows(report / "metrics-synthetic-first5.csv")[model]
    # from the same float16 scores: only float32 arithmetic (~1e-6 relative) between the two
    assert float(metrics["nll"]) == pytest.approx(float(np.mean(nll)), rel=1e-5)
    assert abs(float(metrics["nll"]) - float(read_rows(report / "metrics-synthetic.csv")[model]["nll"])) > 0.1
