"""A row's `model` names the weights actually used: pretrained tags, random weights, checkpoints
(by content, or by a name the user sets), from the command line to the site's data."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from .conftest import csv_rows, invoke_apart, write_jpegs
from .test_site import page_data, plot_points

# Class folders of different sizes: a model that predicts class k for every image has the top-1
# of folder k's share of the images, whatever the images are.
FOLDERS = {"a": 2, "b": 4, "c": 6}
TOTAL = sum(FOLDERS.values())
QUICK = ["--workers", "0", "--batch-size", "4", "--executor", "local", "-b", "cpu"]
BENCH = ["--bench", "validate,infer", "--warmup-steps", "0", "--bench-steps", "1", "--bench-seconds", "0",
         "--bench-repeats", "1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("names") / "images"
    for i, (name, count) in enumerate(FOLDERS.items()):
        write_jpegs(root / name, count, seed=i)
    return root


def always(klass: int) -> dict[str, torch.Tensor]:
    """test_vit weights that predict `klass` for every image: a zero head with a one-hot bias."""
    import timm

    torch.manual_seed(klass)
    state = timm.create_model("test_vit").state_dict()
    state["head.weight"] = torch.zeros_like(state["head.weight"])
    state["head.bias"] = torch.zeros_like(state["head.bias"])
    state["head.bias"][klass] = 10.0
    return {k: v.contiguous() for k, v in state.items()}


def checkpoint(path: Path, klass: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(always(klass), str(path))
    return path


def top1_of(klass: int) -> str:
    """The top-1 (as written) of weights that always predict `klass`: its folder's share."""
    return f"{100 * list(FOLDERS.values())[klass] / TOTAL:.3f}"


def content_name(architecture: str, path: Path) -> str:
    return f"{architecture}@ckpt-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def fake_hub(root: Path, klass: int) -> None:
    """A Hugging Face cache holding test_vit.r160_in1k's weights file, as the hub client lays it out."""
    commit = "0" * 40
    repo = root / "models--timm--test_vit.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(always(klass), str(repo / "snapshots" / commit / "model.safetensors"))


def ok(*args: str):
    result = invoke_apart(*args)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def by_model(path: Path) -> dict[str, dict[str, str]]:
    return {row["model"]: row for row in csv_rows(path)}


def test_checkpoint_random_and_pretrained_rows_are_three_each_joined_to_its_own_benchmark(folder, tmp_path,
                                                                                           monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # pretrained weights, offline
    fake_hub(tmp_path / "hub", klass=0)
    weights = checkpoint(tmp_path / "ckpt" / "vit.safetensors", klass=1)
    out = tmp_path / "out"
    common = ["-m", "test_vit.r160_in1k", "--data-dir", str(folder), *QUICK, *BENCH, "--out", str(out)]
    for choice in ("pretrained", "random", str(weights)):
        ok("run", *common, "--weights", choice)
    # timm's published row of the tag, imported: this store's own pretrained row replaces it, and
    # no other weights' row is joined to it.
    published = tmp_path / "published" / "results-imagefolder.csv"
    published.parent.mkdir()
    published.write_text("model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
                         "test_vit.r160_in1k,160,41.000,59.000,70.000,30.000,0.37,0.950,bicubic\n")
    ok("report", "--out", str(out), "--import", str(published), "--html", str(tmp_path / "site"))

    pretrained, random, own = "test_vit.r160_in1k", "test_vit.r160_in1k@random", content_name("test_vit", weights)
    results = by_model(out / "results-imagefolder.csv")
    assert sorted(results) == sorted([pretrained, random, own])
    assert results[pretrained]["top1"] == top1_of(0) and results[own]["top1"] == top1_of(1)
    assert {m: r["weights"] for m, r in by_model(out / "metrics-imagefolder.csv").items()} == {
        pretrained: "pretrained", random: "random", own: "checkpoint:vit.safetensors"}
    (bench_file,) = out.glob("benchmark-infer-*.csv")
    bench = by_model(bench_file)
    # Pretrained weights' benchmark row names the architecture, as timm's files do; the others their own.
    assert sorted(bench) == sorted(["test_vit", random, own])

    data = page_data(tmp_path / "site" / "index.html")
    (plot,) = [p for p in data["plots"] if p["id"] == f"throughput-{bench_file.stem}"]
    points = plot_points(plot, data["models"])
    assert sorted(points) == sorted([pretrained, random, own])
    for model, bench_model in ((pretrained, "test_vit"), (random, random), (own, own)):
        x, y, _, _ = points[model]
        assert x == float(bench[bench_model]["infer_samples_per_sec"]), model
        assert y == float(results[model]["top1"]), model
    assert points[pretrained][1] != 41.0


def test_the_same_checkpoint_is_one_row_wherever_it_is_and_two_checkpoints_are_two(folder, tmp_path):
    first = checkpoint(tmp_path / "one" / "epoch.safetensors", klass=1)
    copy = tmp_path / "elsewhere" / "renamed.safetensors"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    second = checkpoint(tmp_path / "two" / "epoch.safetensors", klass=2)  # the same file name, other weights
    out = tmp_path / "out"
    common = ["-m", "test_vit", "--data-dir", str(folder), *QUICK, "--bench", "validate", "--out", str(out)]
    ok("run", *common, "--weights", str(first))
    again = ok("run", *common, "--weights", str(copy))
    assert "0 ok, 0 failed, 1 already in the store" in again.output
    ok("run", *common, "--weights", str(second))
    ok("report", "--out", str(out))
    results = by_model(out / "results-imagefolder.csv")
    assert results == {content_name("test_vit", first): results[content_name("test_vit", first)],
                       content_name("test_vit", second): results[content_name("test_vit", second)]}
    assert results[content_name("test_vit", first)]["top1"] == top1_of(1)
    assert results[content_name("test_vit", second)]["top1"] == top1_of(2)


def test_names_set_by_the_user_and_compare_picks_the_one_named(folder, tmp_path):
    epochs = tmp_path / "epochs"
    checkpoint(epochs / "e1.safetensors", klass=1)
    checkpoint(epochs / "e2 final.safetensors", klass=2)
    listing = tmp_path / "models.txt"
    # Relative weights paths are relative to the list's folder.
    listing.write_text("test_vit --weights epochs/e1.safetensors --name vit-e1  # epoch 1\n"
                       "test_vit --weights 'epochs/e2 final.safetensors' --name vit-e2\n")
    out = tmp_path / "out"
    common = ["--data-dir", str(folder), *QUICK, "--bench", "validate", "--out", str(out)]
    ok("run", "-m", f"@{listing}", *common)
    results = by_model(out / "results-imagefolder.csv")
    assert {m: r["top1"] for m, r in results.items()} == {"vit-e1": top1_of(1), "vit-e2": top1_of(2)}
    # The option names the same weights the same way: those cells are already in the store.
    again = ok("run", "-m", "test_vit", "--weights", str(epochs / "e1.safetensors"), "--weights-name", "vit-e1",
               *common)
    assert "1 already in the store" in again.output

    # Both are test_vit: compare takes the one named. Folder b's images against folder c's.
    forward = ok("compare", "vit-e1", "vit-e2", "--out", str(out))
    backward = ok("compare", "vit-e2", "vit-e1", "--out", str(out))
    diff = float(top1_of(1)) - float(top1_of(2))  # A's top-1 minus B's
    assert "vit-e1 (A) vs vit-e2 (B)" in forward.output and f"{diff:+.2f} points" in forward.output, forward.output
    assert "vit-e2 (A) vs vit-e1 (B)" in backward.output and f"{-diff:+.2f} points" in backward.output, backward.output
    ambiguous = invoke_apart("compare", "test_vit", "vit-e2", "--out", str(out))
    assert ambiguous.exit_code == 2 and "'test_vit' names 2 validated models" in ambiguous.stderr, ambiguous.stderr
    assert "vit-e1 at 160 px, vit-e2 at 160 px" in ambiguous.stderr


@pytest.mark.parametrize("args, message", [
    (["-m", "test_vit", "--weights", "random", "--weights-name", "test_vit.r160_in1k"], "is a timm model name"),
    (["-m", "test_vit,test_byobnet", "--weights", "random", "--weights-name", "mine"],
     "two models of this run would have the rows of 'mine' (test_vit with random, and test_byobnet with random)"),
    (["-m", "test_vit*", "--weights", "random", "--weights-name", "mine"], "the row name 'mine' would name 3 models"),
    (["-m", "test_vit", "--weights", "pretrained", "--weights-name", "mine"], "set for pretrained weights"),
])
def test_a_name_that_cannot_name_the_rows_is_one_line(folder, tmp_path, args, message):
    result = invoke_apart("run", *args, "--data-dir", str(folder), *QUICK, "--bench", "validate",
                          "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out" / "store").exists()


def test_two_weights_given_one_name_in_a_list_are_one_line_before_any_model_runs(folder, tmp_path):
    checkpoint(tmp_path / "e1.safetensors", klass=1)
    checkpoint(tmp_path / "e2.safetensors", klass=2)
    listing = tmp_path / "models.txt"
    listing.write_text("test_vit --weights e1.safetensors --name mine\ntest_vit --weights e2.safetensors --name mine\n")
    result = invoke_apart("run", "-m", f"@{listing}", "--data-dir", str(folder), *QUICK, "--bench", "validate",
                          "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "two models of this run would have the rows of 'mine'" in result.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("test_vit --weigths e1.safetensors\n")
    result = invoke_apart("run", "-m", f"@{bad}", "--data-dir", str(folder), *QUICK, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and f"model list {bad}, line 1: '--weigths'" in result.stderr, result.stderr


def test_a_store_of_an_older_rbench_names_its_random_rows_by_the_rule(folder, tmp_path):
    """Records written before this rule named random weights by the pretrained tag, with no row
    name in the cell: `rbench report` names them `<model>@random`, never the tag."""
    out = tmp_path / "out"
    ok("run", "-m", "test_vit", "--weights", "random", "--data-dir", str(folder), *QUICK, "--bench", "validate",
       "--out", str(out))
    for path in (out / "store" / "records").glob("*.json"):  # as the older rbench (record version 2) wrote it
        record = json.loads(path.read_text())
        cell, provenance = record.pop("cell"), record.pop("provenance")
        record.update(version=2, cell=cell["identity"], seconds=provenance["seconds"],
                      cell_info={k: cell[k] for k in ("kind", "model", "source", "backend", "device", "ray_resources")})
        record["common"]["model"] = "test_vit.r160_in1k"
        path.write_text(json.dumps(record))
    ok("report", "--out", str(tmp_path / "rebuilt"), "--store", str(out / "store"))
    with open(tmp_path / "rebuilt" / "results-imagefolder.csv", newline="") as f:
        assert [row["model"] for row in csv.DictReader(f)] == ["test_vit@random"]


def test_row_names_by_the_rule():
    from rbench.worker.models import row_name

    assert row_name("test_vit", "pretrained") == "test_vit.r160_in1k"  # the default tag, as timm loads it
    assert row_name("test_vit.r160_in1k", "pretrained") == "test_vit.r160_in1k"
    assert row_name("test_vit", "random") == "test_vit@random"  # seeded by the name given
    assert row_name("test_vit.r160_in1k", "random") == "test_vit.r160_in1k@random"
    assert row_name("test_vit.r160_in1k", "x.safetensors", "sha256:" + "ab" * 32) == "test_vit@ckpt-abababababab"
    assert row_name("test_vit", "x.safetensors", "sha256:" + "ab" * 32, "mine") == "mine"
