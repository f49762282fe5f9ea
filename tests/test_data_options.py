"""Data set options: every key a plugin does not declare is an error before any model runs, and
the image folder's class map (as timm's validate.py --class-map) and ImageNet wnid folders."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbench import DataError, DataRequest, DatasetSpec, Source
from rbench.frontend.cli import main
from rbench.registry import BUILTIN_DISTRIBUTION, check_data_options, get_registry

from . import imagenet_fixtures
from .conftest import write_jpegs

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rbench-example-plugin" / "rbench_example_plugin.py"


def run(*args: str):
    return CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", "random", "--bench", "validate",
                                     "--workers", "0", *args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    return line


def test_every_builtin_and_the_example_data_set_declares_its_options():
    registry = get_registry()
    builtin = [spec for name, spec in registry.datasets.items()
               if any(f"datasets:{name}" in p.provides and p.distribution.startswith(f"{BUILTIN_DISTRIBUTION} ")
                      for p in registry.plugins.values())]
    assert {s.name for s in builtin} >= {"synthetic", "imagefolder", "imagenet", "imagenet-c", "sketch"}
    assert all(spec.options is not None for spec in builtin), [s.name for s in builtin if s.options is None]
    assert set(registry.datasets["imagenet"].options) == {"labels"}
    assert set(registry.datasets["imagenet-c"].options) == {"per_class", "corruptions", "severities", "val",
                                                            "build_dir", "build_workers"}
    assert set(registry.datasets["imagenet-c-native"].options) == {"per_class", "corruptions", "severities"}
    assert set(registry.datasets["imagenet-p"].options) == {"per_class", "class_step", "perturbations", "difficulty",
                                                            "reference", "build_dir", "build_workers"}
    assert set(registry.datasets["imagefolder"].options) == {"class_map", "labels"}
    assert registry.datasets["synthetic"].options == {}
    spec = importlib.util.spec_from_file_location("example_plugin_source", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    (csvfolder,) = example.rbench_datasets()
    assert csvfolder.options == {}


@pytest.mark.parametrize(("option", "expected"), [
    ("synthetic.seed=3", "unknown --data-option synthetic.seed; it takes no options"),
    ("imagenet.lables=x.csv",
     "unknown --data-option imagenet.lables (did you mean imagenet.labels?); it takes imagenet.labels"),
    ("imagenet-c.severity=3", "unknown --data-option imagenet-c.severity (did you mean imagenet-c.severities?); "
                              "it takes imagenet-c.per_class, imagenet-c.corruptions, imagenet-c.severities, "
                              "imagenet-c.val, imagenet-c.build_dir, imagenet-c.build_workers, "
                              "imagenet-c.reference_model"),
])
def test_an_unknown_data_option_is_one_line_naming_the_accepted_keys(option, expected, tmp_path):
    name = option.split(".")[0]
    result = run("-d", name, "--data-option", option, "--data-root", str(tmp_path), "--out", str(tmp_path / "out"))
    assert one_error_line(result) == f"rbench: error: {expected}"
    assert not (tmp_path / "out" / "store").exists()


def test_an_unknown_image_folder_option_is_an_error(image_folder, tmp_path):
    result = run("--data-dir", str(image_folder), "--data-option", "imagefolder.classmap=x.txt",
                 "--out", str(tmp_path / "out"))
    assert "unknown --data-option imagefolder.classmap (did you mean imagefolder.class_map?)" in one_error_line(result)


def test_undeclared_options_are_passed_through_and_declared_ones_checked():
    seen = {}

    def load(request):
        seen.update(request.options)
        return Source(name="x", root=Path("."), samples=[], views=[])

    check_data_options(DatasetSpec(name="x", description="-", load=load), {"anything": "1"})  # None: not declared
    check_data_options(DatasetSpec(name="x", description="-", load=load, options={"a": "A"}), {"a": "1"})
    with pytest.raises(DataError, match="unknown --data-option x.b; it takes x.a$"):
        check_data_options(DatasetSpec(name="x", description="-", load=load, options={"a": "A"}), {"a": "1", "b": "2"})


# --- the image folder's class numbering ------------------------------------------------------

def wnid_folder(root: Path, wnids: list[str]) -> Path:
    for i, wnid in enumerate(wnids):
        write_jpegs(root / wnid, 2, seed=i)
    return root


def load_imagefolder(root: Path, **options: str):
    return get_registry().datasets["imagefolder"].load(DataRequest(path=root, cache_dir=root.parent, options=options))


def test_wnid_folders_that_are_not_all_of_imagenet_get_their_imagenet_indices_and_a_note(tmp_path):
    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    chosen = [synsets[i] for i in (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)]  # Imagenette's classes
    source = load_imagefolder(wnid_folder(tmp_path / "imagenette", chosen))
    labels = {Path(path).parent.name: label for path, label in source.samples}
    assert labels == {wnid: synsets.index(wnid) for wnid in chosen}
    assert "10 class folders are ImageNet wnids, not all 1000: labelled with their ImageNet-1k indices" in source.note


def test_other_folder_names_are_numbered_in_natural_order_and_the_note_says_so(image_folder):
    source = load_imagefolder(image_folder)
    labels = {Path(path).parent.name: label for path, label in source.samples}
    assert labels == {"1": 0, "2": 1, "3": 2, "4": 3, "5": 4, "9": 5, "10": 6, "11": 7}
    assert source.note.startswith("labels=sorted: ")


def test_a_class_map_numbers_the_folders_by_its_lines(image_folder, tmp_path):
    class_map = tmp_path / "classes.txt"
    class_map.write_text("zero\n11\n\n10\n1\n2\n3\n4\n5\n9\n")  # line 2 is blank: "10" is class 3, as in timm
    source = load_imagefolder(image_folder, class_map=str(class_map))
    labels = {Path(path).parent.name: label for path, label in source.samples}
    assert labels == {"11": 1, "10": 3, "1": 4, "2": 5, "3": 6, "4": 7, "5": 8, "9": 9}
    assert f"classes numbered by the class map {class_map}: 8 of its 9 classes" in source.note


def test_a_class_map_scores_a_run(image_folder, tmp_path):
    """The labels reach the scores: a model whose head predicts class 3 for every image scores
    100% when folder "10"'s images are the only ones left and the map makes "10" class 3."""
    import shutil

    for folder in image_folder.iterdir():
        if folder.name != "10":
            shutil.rmtree(folder)
    weights = tmp_path / "w.safetensors"
    imagenet_fixtures.pinned_head_model(3, [3], weights, name="test_vit")
    class_map = tmp_path / "classes.txt"
    class_map.write_text("a\nb\nc\n10\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", str(weights), "--data-dir",
                                       str(image_folder), "--data-option", f"imagefolder.class_map={class_map}",
                                       "--bench", "validate", "--workers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "classes numbered by the class map" in result.output
    (row,) = list(csv.DictReader((out / "results-imagefolder.csv").open()))
    assert float(row["top1"]) == 100.0


@pytest.mark.parametrize(("content", "says"), [
    (None, "does not exist"),
    ("", "is empty"),
    ("1\n2\n1\n", "names '1' twice (lines 1 and 3)"),
    ("1\n2\n3\n", "has the class folder '4', which is not in the class map"),
])
def test_a_bad_class_map_is_a_one_line_error(content, says, image_folder, tmp_path):
    class_map = tmp_path / "classes.txt"
    if content is not None:
        class_map.write_text(content)
    result = run("--data-dir", str(image_folder), "--data-option", f"imagefolder.class_map={class_map}",
                 "--out", str(tmp_path / "out"))
    assert says in one_error_line(result)


# --- the image folder's labelling, from the command line --------------------------------------

def imagenet_wnids() -> list[str]:
    """ImageNet-1k's wnids in timm's class order (its own list, not rbench's reading of it)."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def run_pinned(folder: Path, predicted: int, tmp_path: Path, *args: str, out: str = "out"):
    """`rbench run` of a test_vit that predicts class `predicted` for every image, on `folder`."""
    weights = tmp_path / f"pinned{predicted}.safetensors"
    if not weights.exists():
        imagenet_fixtures.pinned_head_model(3, [predicted], weights, name="test_vit")
    return CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", str(weights), "--data-dir", str(folder),
                                     "--bench", "validate", "--workers", "0", "--out", str(tmp_path / out), *args])


def top1_of(result, tmp_path: Path, out: str = "out") -> float:
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader((tmp_path / out / "results-imagefolder.csv").open()))
    return float(row["top1"])


def data_line(result) -> str:
    (line,) = [line for line in result.output.splitlines() if line.startswith("  imagefolder: ")]
    return line


@pytest.mark.parametrize(("names", "options", "predicted", "top1", "labels"), [
    # wnid folders: class i is the wnid's line in timm's list; the model predicts the middle folder's
    (["w3", "w217", "w701"], [], "w217", 100 / 3, "labels=imagenet"),
    (["w3", "w217", "w701"], ["imagefolder.labels=imagenet"], "w217", 100 / 3, "labels=imagenet"),
    # the same folders numbered 0, 1, 2 in sorted order when asked: class 1 is the middle folder
    (["w3", "w217", "w701"], ["imagefolder.labels=sorted"], 1, 100 / 3, "labels=sorted"),
    (["w3", "w217", "w701"], ["imagefolder.labels=sorted"], "w217", 0.0, "labels=sorted"),
    # no wnid: sorted ("dog" is class 1), and a wnid's index is no class
    (["cat", "dog", "emu"], [], 1, 100 / 3, "labels=sorted"),
    # a stray folder numbered with the others when sorted labels are asked for: "coins" is class 0
    (["coins", "w3", "w217", "w701"], ["imagefolder.labels=sorted"], 0, 25.0, "labels=sorted"),
])
def test_the_labelling_follows_the_folder_names_or_the_option(names, options, predicted, top1, labels, tmp_path):
    wnids = imagenet_wnids()
    real = [wnids[int(n[1:])] if n.startswith("w") else n for n in names]
    folder = wnid_folder(tmp_path / "images", real)
    if isinstance(predicted, str):
        predicted = int(predicted[1:])
    args = [a for option in options for a in ("--data-option", option)]
    result = run_pinned(folder, predicted, tmp_path, *args)
    assert top1_of(result, tmp_path) == pytest.approx(top1, abs=1e-3)
    assert f"({labels}: " in data_line(result)


def test_a_stray_folder_among_wnid_folders_is_an_error_naming_it(tmp_path):
    wnids = imagenet_wnids()
    folder = wnid_folder(tmp_path / "images", [wnids[0], wnids[217], "coins", wnids[701]])
    result = run("--data-dir", str(folder), "--out", str(tmp_path / "out"))
    line = one_error_line(result)
    assert "mixes 3 ImageNet-1k wnid class folder(s) with 1 that are not wnids ('coins')" in line
    assert "--data-option imagefolder.labels=sorted" in line
    assert not (tmp_path / "out" / "store").exists()


def test_the_error_names_a_few_stray_folders_and_counts_the_others(tmp_path):
    wnids = imagenet_wnids()
    folder = wnid_folder(tmp_path / "images", [wnids[0], "coins", "d", "e", "f", "g"])
    assert "('coins', 'd', 'e' and 2 more)" in one_error_line(run("--data-dir", str(folder),
                                                                  "--out", str(tmp_path / "out")))


@pytest.mark.parametrize(("options", "says"), [
    (["imagefolder.labels=imagenet"], "has 1 class folder(s) that are not ImageNet-1k wnids ('coins')"),
    (["imagefolder.labels=wnid"], "imagefolder.labels=wnid: takes imagenet or sorted"),
    (["imagefolder.labels=sorted", "imagefolder.class_map=x.txt"], "labels and imagefolder.class_map both choose"),
])
def test_a_labelling_that_cannot_be_is_a_one_line_error(options, says, tmp_path):
    folder = wnid_folder(tmp_path / "images", [imagenet_wnids()[5], "coins"])
    args = [a for option in options for a in ("--data-option", option)]
    result = run("--data-dir", str(folder), "--out", str(tmp_path / "out"), *args)
    assert says in one_error_line(result)
    assert not (tmp_path / "out" / "store").exists()


def test_cells_of_two_labellings_are_not_mixed_in_one_store(tmp_path):
    """The first three wnids are classes 0, 1, 2 both ways, so only the labelling in the source's
    identity keeps a sorted run from reusing the cell of the ImageNet-labelled one."""
    folder = wnid_folder(tmp_path / "images", imagenet_wnids()[:3])
    first = run_pinned(folder, 1, tmp_path)
    assert top1_of(first, tmp_path) == pytest.approx(100 / 3, abs=1e-3)
    again = run_pinned(folder, 1, tmp_path)
    assert "1 already in the store" in again.output  # the same labelling is reused
    second = run_pinned(folder, 1, tmp_path, "--data-option", "imagefolder.labels=sorted")
    assert second.exit_code == 0, second.output
    assert "0 already in the store" in second.output and "labels=sorted" in data_line(second)
