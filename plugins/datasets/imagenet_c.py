"""ImageNet-C made on the fly: the 15 common corruptions at 5 severities (Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019),
applied to a deterministic subset of the ImageNet val images the user already has.

The published ImageNet-C is 15 x 5 x 50,000 JPEG files baked at 224 px; here each image is
corrupted after timm's eval resize and centre crop, at the model's own input size, in the
loader workers (`rbench.Source.sample_transform`). Each corruption is seeded from the image's
file name, the corruption and the severity, so every model sees the same corrupted pixels.

The corruption functions are the `corrupt-tta` package's (`pip install 'rbench[corruptions]'`),
a maintained fork of `imagecorruptions`; `imagecorruptions` 1.1.2 itself fails with numpy 2
(fog uses `np.float_`) and scikit-image >= 0.19 (glass blur passes `multichannel`).

Data options (`--data-option imagenet-c.KEY=VALUE`): `per_class` (default 10 val images per
class; 50 is the whole val set), `corruptions` and `severities` (comma-separated subsets, for
a quick look; mCE then averages over the corruptions run).

Only `rbench`'s public API is imported here, and numpy/torch only inside functions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import rbench

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
DEFAULT_PER_CLASS = 10
CLASSES = 1000
SEED_SCHEME = "sha256(path, corruption, severity) v1"
INSTALL_HINT = "pip install 'rbench[corruptions]' (or: pip install corrupt-tta)"

# AlexNet's top-1 error on ImageNet-C, per corruption, averaged over the 5 severities (a
# fraction). Published with Hendrycks & Dietterich (ICLR 2019), the normalisers of their mCE
# (github.com/hendrycks/robustness, ImageNet-C; the same constants as AugMix's imagenet.py and
# mmpretrain's mCE metric). A mean over severities is the sum over severities divided by 5,
# so CE = sum_s E_s,c / sum_s E^AlexNet_s,c = mean_s E_s,c / ALEXNET_ERR[c].
ALEXNET_ERR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592,
    "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
# AlexNet's clean top-1 error, the normaliser of relative mCE: 100 - 56.522, torchvision's
# published top-1 of the AlexNet that Hendrycks & Dietterich evaluated (their "Clean error 43.5").
ALEXNET_CLEAN_ERR = 0.43478


# --- the corruption library --------------------------------------------------------------

def check_library() -> None:
    """Raise a one-line `UnavailableError` when the optional extra is not installed."""
    if importlib.util.find_spec("corrupt_tta") is None:
        raise rbench.UnavailableError(f"imagenet-c needs the corruption functions: {INSTALL_HINT}")


@cache
def corrupt_function():
    """`corrupt_tta.corrupt`, made deterministic under `numpy.random.seed`.

    Every corruption draws from numpy's global generator except impulse noise, which calls
    scikit-image's `random_noise` with a fresh unseeded generator: it is given a seed drawn from
    the global generator instead, so one seed fixes every corruption's pixels.
    """
    check_library()
    import cv2
    import numpy as np
    from corrupt_tta import corrupt, corruptions

    # This runs in each loader worker: the workers are the parallelism, and OpenCV's own thread
    # pool in every one of them would oversubscribe the cores.
    cv2.setNumThreads(1)

    original = corruptions.random_noise
    if not getattr(original, "_rbench_seeded", False):
        def seeded_random_noise(image, *args, **kwargs):
            kwargs.setdefault("rng", int(np.random.randint(0, 2**31 - 1)))
            return original(image, *args, **kwargs)

        seeded_random_noise._rbench_seeded = True
        corruptions.random_noise = seeded_random_noise
    return corrupt


def corruption_seed(key: str, corruption: str, severity: int) -> int:
    """A seed from an image's key (its path under the val folder), the corruption and severity:
    the same on every machine and for every model."""
    digest = hashlib.sha256(f"{key}\0{corruption}\0{severity}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def apply_corruption(image, corruption: str, severity: int, seed: int):
    """`image` (PIL RGB or `HxWx3` uint8) corrupted, as an `HxWx3` uint8 array of the same size.

    The library returns floats in [0, 255] for most corruptions; they are clipped and truncated
    to uint8 as Hendrycks' `make_imagenet_c.py` does (`np.uint8(...)`).
    """
    import numpy as np

    corrupt = corrupt_function()
    pixels = np.asarray(image, dtype=np.uint8)
    np.random.seed(seed)
    out = corrupt(pixels, severity=severity, corruption_name=corruption)
    return np.uint8(np.clip(out, 0, 255))


class Corrupter:
    """The `sample_transform` of the imagenet-c source (picklable: it runs in loader workers).

    Samples come in blocks of `len(keys)` images: block 0 clean, then one block per
    `(corruption, severity)` in `blocks`.
    """

    def __init__(self, keys: Sequence[str], blocks: Sequence[tuple[str, int]]):
        self.keys = list(keys)
        self.blocks = list(blocks)

    def __call__(self, index: int, image):
        block, i = divmod(index, len(self.keys))
        if block == 0:
            return image
        corruption, severity = self.blocks[block - 1]
        return apply_corruption(image, corruption, severity, corruption_seed(self.keys[i], corruption, severity))


# --- scores --------------------------------------------------------------------------------

def severity_column(corruption: str, severity: int) -> str:
    return f"{corruption}_{severity}"


class Scorer:
    """The `score` of both imagenet-c views: top-1/top-5 over the corrupted images, mCE,
    relative mCE, and top-1 per corruption and per corruption and severity (percent)."""

    def __init__(self, n: int, blocks: Sequence[tuple[str, int]]):
        self.n = n
        self.blocks = list(blocks)

    def __call__(self, predictions: rbench.Predictions) -> dict[str, float]:
        hit1, hit5 = predictions.hits(1), predictions.hits(5)
        groups: dict[int, list[int]] = {}
        for row, index in enumerate(predictions.indices.tolist()):
            groups.setdefault(index // self.n, []).append(row)

        def acc(rows: list[int], hits: list[bool]) -> float:
            return 100.0 * sum(hits[r] for r in rows) / len(rows) if rows else float("nan")

        corrupted = [r for block, rows in groups.items() if block > 0 for r in rows]
        clean_err = 100.0 - acc(groups.get(0, []), hit1)
        result = {"top1": acc(corrupted, hit1), "top5": acc(corrupted, hit5)}
        result["top1_err"], result["top5_err"] = 100.0 - result["top1"], 100.0 - result["top5"]
        per_corruption: dict[str, list[float]] = {}
        for block, (corruption, severity) in enumerate(self.blocks, start=1):
            top1 = acc(groups.get(block, []), hit1)
            result[severity_column(corruption, severity)] = top1
            per_corruption.setdefault(corruption, []).append(top1)
        ces, relative = [], []
        for corruption, accs in per_corruption.items():
            mean_top1 = sum(accs) / len(accs)
            result[corruption] = mean_top1
            err = 100.0 - mean_top1
            ces.append(err / (100.0 * ALEXNET_ERR[corruption]))
            relative.append((err - clean_err) / (100.0 * (ALEXNET_ERR[corruption] - ALEXNET_CLEAN_ERR)))
        result["mce"] = 100.0 * sum(ces) / len(ces) if ces else float("nan")
        result["relative_mce"] = 100.0 * sum(relative) / len(relative) if relative else float("nan")
        result["clean_top1"] = 100.0 - clean_err
        return result


MAIN_COLUMNS = ("model", "img_size", "top1", "top1_err", "top5", "top5_err", "mce", "relative_mce",
                "param_count", "crop_pct", "interpolation")


# --- the source ----------------------------------------------------------------------------

def _wnids() -> tuple[str, ...]:
    return tuple(rbench.timm_info_file("imagenet_synsets.txt").read_text().split())


def _subset(text: str | None, allowed: Sequence, kind: str, convert=str) -> list:
    if text is None:
        return list(allowed)
    try:
        chosen = [convert(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        chosen = [None]
    wrong = [c for c in chosen if c not in allowed]
    if wrong or not chosen:
        raise rbench.DataError(f"--data-option imagenet-c.{kind}={text!r}: choose from {','.join(map(str, allowed))}")
    return [c for c in allowed if c in chosen]  # the canonical order, whatever was typed


def load(request: rbench.DataRequest) -> rbench.Source:
    """The val images (`per_class` per class, the first in file-name order), each clean and under
    every corruption and severity asked for."""
    check_library()
    options = dict(request.options)  # its keys are checked by the plan, against the spec's `options`
    try:
        per_class = int(options.get("per_class", DEFAULT_PER_CLASS))
        if per_class < 1:
            raise ValueError
    except ValueError:
        raise rbench.DataError(f"--data-option imagenet-c.per_class={options['per_class']!r}: give a whole number >= 1 (50 is all of val)") from None
    corruptions = _subset(options.get("corruptions"), CORRUPTIONS, "corruptions")
    severities = _subset(options.get("severities"), SEVERITIES, "severities", int)
    if request.path is None:
        raise rbench.DataError("where is imagenet-c's val folder? pass --data-root ROOT (with ROOT/imagenet/val) or --data imagenet-c=PATH")
    root = Path(request.path)
    folders, listed = rbench.list_class_folders(root)
    index = {wnid: i for i, wnid in enumerate(_wnids())}
    wrong = [f for f in folders if f not in index]
    if wrong:
        raise rbench.DataError(f"{root} has the folder {wrong[0]!r}, which is not an ImageNet class; imagenet-c needs the val folder with one folder per wnid")
    by_class: dict[int, list[str]] = {}
    for path, folder in listed:
        by_class.setdefault(folder, []).append(path)
    chosen: list[tuple[str, int]] = []
    short = 0
    for folder, paths in sorted(by_class.items()):
        short += len(paths) < per_class
        chosen.extend((path, index[folders[folder]]) for path in paths[:per_class])
    partial = len(folders) < CLASSES or short > 0
    if partial and not request.allow_partial:
        raise rbench.DataError(
            f"imagenet-c at {root}: {len(folders)} of {CLASSES} classes, {short} with fewer than {per_class} images; "
            "use the complete val folder, a smaller --data-option imagenet-c.per_class, or --allow-partial")
    blocks = [(c, s) for c in corruptions for s in severities]
    samples = list(chosen) * (1 + len(blocks))
    keys = [str(Path(path).relative_to(root)) for path, _ in chosen]
    n = len(chosen)
    scorer = Scorer(n, blocks)
    wanted = request.views or set(VIEWS)
    views = []
    if "imagenet-c" in wanted:
        views.append(rbench.ViewSpec(name="imagenet-c", score=scorer,
                                     columns=(*MAIN_COLUMNS, *corruptions)))
    if "imagenet-c-severity" in wanted:
        views.append(rbench.ViewSpec(name="imagenet-c-severity", score=scorer, columns=(
            "model", "img_size", "top1", "clean_top1",
            *(severity_column(c, s) for c, s in blocks))))
    # The cost, shown with the plan before any model runs.
    note = (f"{n:,} images x {len(corruptions)} corruptions x {len(severities)} severities + {n:,} clean "
            f"= {len(samples):,} images per model")
    if partial:
        note = f"partial: {len(folders)} classes, {short} short of {per_class} images; " + note
    # A new library version or seeding scheme changes the pixels: stored results are not reused.
    identity = f"corrupt-tta {importlib.metadata.version('corrupt-tta')}; seed {SEED_SCHEME}"
    return rbench.Source(name="imagenet-c", root=root, samples=samples, views=views, partial=partial, note=note,
                         sample_transform=Corrupter(keys, blocks), identity=identity)


VIEWS = {"imagenet-c": "imagenet", "imagenet-c-severity": None}


@rbench.hookimpl
def rbench_datasets():
    return [
        rbench.DatasetSpec(
            name="imagenet-c", load=load, default_folder="imagenet/val", views=VIEWS,
            options={"per_class": f"N: val images per class (default {DEFAULT_PER_CLASS}; 50 is all of val)",
                     "corruptions": "NAMES: comma-separated corruptions (default all 15)",
                     "severities": "LEVELS: comma-separated severities 1-5 (default all)"},
            description="ImageNet-C on the fly from ImageNet val: 15 corruptions x 5 severities at the model's "
                        "eval size, mCE and relative mCE (needs rbench[corruptions])"),
    ]
