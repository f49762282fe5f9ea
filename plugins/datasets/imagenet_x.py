"""ImageNet-X (Idrissi et al., "ImageNet-X: Understanding Model Mistakes with Factor of Variation
Annotations", ICLR 2023): 16 factors of variation (pose, background, pattern, ...) annotated on
ImageNet val, as views added over a val run's stored predictions. No model runs for them.

Two views, one per annotation of the `imagenet-x` package (`pip install 'rbench[imagenet-x]'`):

- `imagenet-x`: each image's top factor (the one its annotators chose as the most salient);
- `imagenet-x-multi`: every factor its annotators marked (about 2.6 an image).

Both score the annotated val images without the package's 3,000 prototypical ones (its default:
the images most typical of their class, which the paper leaves out), matched by file name
(`ILSVRC2012_val_XXXXXXXX`). Per model: top-1 over those images and, for each factor, the top-1
of the images that have it, its 95% Wilson interval, its image count, and its error ratio, as the
package defines it: (1 - factor accuracy) / (1 - overall accuracy), above 1 where the factor
makes the model err more than it does on average.

The annotations are data of the installed package (JSON lines and CSV files, licensed CC BY-NC
4.0), read once per process; rbench ships none of them. Only `rbench`'s public API and the
imagenet plugin's file-name pattern are imported here; numpy only inside the score.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import rbench
from rbench import statistics

from . import imagenet

# In the package's order (`imagenet_x.FACTORS`): the order of the columns.
FACTORS = (
    "pose", "background", "pattern", "color", "smaller", "shape", "partial_view", "subcategory",
    "texture", "larger", "darker", "object_blocking", "person_blocking", "style", "brighter",
    "multiple_objects",
)
ANNOTATION_FILES = {"imagenet-x": "imagenet_x_val_top_factor.jsonl",
                    "imagenet-x-multi": "imagenet_x_val_multi_factor.jsonl"}
PROTOTYPES_FILE = "prototypical_paths.csv"
VIEWS = {"imagenet-x": None, "imagenet-x-multi": None}
PACKAGE = "imagenet-x"
INSTALL_HINT = "pip install 'rbench[imagenet-x]'"
FACTOR_FIELDS = ("top1", "top1_low", "top1_high", "error_ratio", "count")
COLUMNS = ("model", "img_size", "top1", "top1_err", "top1_low", "top1_high", "top5", "top5_err", "count",
           *(f"{factor}_{field}" for factor in FACTORS for field in FACTOR_FIELDS),
           "param_count", "crop_pct", "interpolation")


# --- the package's annotations -------------------------------------------------------------

@functools.cache
def annotation_folder() -> Path | None:
    """The installed `imagenet_x` package's `annotations/` folder (found without importing the
    package, which imports pandas), or None when it is not installed."""
    spec = importlib.util.find_spec("imagenet_x")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "annotations"
    return folder if folder.is_dir() else None


def unavailable() -> str | None:
    """Why the ImageNet-X views cannot be made here (one line), or None."""
    if annotation_folder() is None:
        return f"the ImageNet-X views need the annotations of the imagenet-x package: {INSTALL_HINT}"
    return None


def package_version() -> str:
    """The installed annotations' distribution and version, as the scores record them."""
    try:
        return f"{PACKAGE} {importlib.metadata.version(PACKAGE)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{PACKAGE} (version unknown)"


@functools.cache
def annotations(view: str) -> dict[str, tuple[int, tuple[str, ...]]]:
    """`{file name: (class index, its factors)}` of one view's annotation file (JSON lines)."""
    table: dict[str, tuple[int, tuple[str, ...]]] = {}
    with open(annotation_folder() / ANNOTATION_FILES[view], encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                table[row["file_name"]] = (int(row["class"]), tuple(f for f in FACTORS if row[f]))
    return table


@functools.cache
def prototypes() -> frozenset[str]:
    """The file names of the package's prototypical images, which the views leave out."""
    with open(annotation_folder() / PROTOTYPES_FILE, newline="", encoding="utf-8") as f:
        return frozenset(row["file_name"] for row in csv.DictReader(f))


def val_file_name(path: str) -> str | None:
    """`ILSVRC2012_val_XXXXXXXX.JPEG`, the annotations' name of a val image at `path`, or None
    for a file not named as ImageNet val names its images."""
    match = imagenet.VAL_FILE.search(Path(path).name)
    return f"ILSVRC2012_val_{match.group(1)}.JPEG" if match else None


# --- the views -----------------------------------------------------------------------------

class FactorScorer:
    """The ImageNet-X columns of a view, from per-sample predictions.

    `members` maps each factor to the source indices of the view's images that have it;
    `annotations` names the package and version they come from. Accuracies are percent, as in
    timm's files; an error ratio is a plain ratio, empty where the factor has no image or the
    model no error.
    """

    def __init__(self, members: Mapping[str, Sequence[int]], annotations: str):
        self.members = {factor: list(indices) for factor, indices in members.items()}
        self.annotations = annotations

    def __call__(self, predictions: rbench.Predictions) -> dict[str, float]:
        import numpy as np

        hit, scored = predictions.correct(1)
        indices = np.asarray(predictions.indices, dtype=np.int64)
        result, accuracy = _accuracy_columns("", hit, scored)
        result["top1_err"] = 100.0 - result["top1"]
        for factor in FACTORS:
            has = np.isin(indices, np.asarray(self.members.get(factor, []), dtype=np.int64))
            columns, factor_accuracy = _accuracy_columns(f"{factor}_", hit, scored & has)
            # The package's ratio; NaN where the factor has no image or the model no error.
            columns[f"{factor}_error_ratio"] = ((1.0 - factor_accuracy) / (1.0 - accuracy)
                                                if accuracy < 1.0 else math.nan)
            result.update(columns)
        return result


def _accuracy_columns(prefix: str, hit, chosen) -> tuple[dict[str, float], float]:
    """Top-1 (percent), its 95% Wilson interval and the image count of the `chosen` samples;
    and their accuracy as a fraction (NaN for none)."""
    n = int(chosen.sum())
    k = int(hit[chosen].sum())
    accuracy = k / n if n else math.nan
    low, high = statistics.wilson_interval(k, n)
    return {f"{prefix}top1": 100.0 * accuracy, f"{prefix}count": n,
            # ten decimals of a percent, as the intervals metric writes them
            f"{prefix}top1_low": round(100.0 * low, 10), f"{prefix}top1_high": round(100.0 * high, 10)}, accuracy


def make(source: rbench.Source) -> list[rbench.ViewSpec]:
    """The ImageNet-X views over a val source, as its listing stored it: its annotated images
    (matched by file name) without the prototypical ones.

    No views where the package is not installed, where no image is annotated, or where an
    annotated image's label is not the class the annotations give it (not the annotated val set: its
    numbers would be wrong).
    """
    if annotation_folder() is None:
        return []
    names = [val_file_name(path) for path, _ in source.samples]
    left_out = prototypes()
    version = package_version()
    views = []
    for view in VIEWS:
        table = annotations(view)
        kept: list[int] = []
        members: dict[str, list[int]] = {factor: [] for factor in FACTORS}
        for index, (name, (_, label)) in enumerate(zip(names, source.samples)):
            if name is None or name not in table or name in left_out:
                continue
            annotated_class, factors = table[name]
            if label != annotated_class:
                return []
            kept.append(index)
            for factor in factors:
                members[factor].append(index)
        if kept:
            views.append(rbench.ViewSpec(name=view, samples=kept, score=FactorScorer(members, version),
                                         columns=COLUMNS))
    return views


@rbench.hookimpl
def rbench_added_views():
    """ImageNet-X's views over ImageNet val (`make`), with no model run."""
    reason = unavailable()
    return [rbench.AddedViews(
        name="imagenet-x", source="imagenet", views=VIEWS, make=make,
        description="ImageNet-X: top-1 and error ratio per factor of variation on ImageNet val, top-factor "
                    "(imagenet-x) and multi-factor (imagenet-x-multi) annotations, prototypical images left out"
                    + (f" (not installed: {INSTALL_HINT})" if reason else ""))]
