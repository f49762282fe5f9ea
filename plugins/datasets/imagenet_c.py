"""ImageNet-C: the 15 common corruptions at 5 severities (Hendrycks & Dietterich, "Benchmarking
Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019).

Three ways to run it:

- `-d imagenet-c` on an ImageNet val folder (`<wnid>/*.JPEG`): ImageNet-C made as its authors
  made it. Each chosen val image is resized (short side 256, bilinear) and centre-cropped to
  224, corrupted by rbench's own functions (`corrupt`, bit for bit the reference's under the
  same seed), and written as a JPEG of quality 85, as the published files were. The JPEGs are
  made once, on disk, for the whole zoo, by the first cells that read them (slice by slice:
  `CorruptionTasks`), and every model then reads them through its own eval transform, as it
  would read the published files. mCE and relative mCE are
  normalised by AlexNet's published errors, or by a model of the same store (`reference_model`).
- `-d imagenet-c --data imagenet-c=PATH` on the published ImageNet-C folder
  (`<corruption>/<severity>/<wnid>/*.JPEG`, or the four archives' `noise/`, `blur/`,
  `weather/`, `digital/` above that): scored the same way. Which of the two a folder is, is
  told by its layout (wnid folders or corruption folders).
- `-d imagenet-c-native` on a val folder: each image corrupted after the model's own eval
  resize and crop, at its input size. The corruption constants are pixels at 224, so at 288 or
  384 this is a different, mostly milder benchmark: its files have no AlexNet-normalised
  columns.

Data options (`--data-option imagenet-c.KEY=VALUE`, or `imagenet-c-native.KEY=VALUE`):
`per_class` (val images per class, default 10; 50 is all of val; on the published folder the
default is all of it), `corruptions` and `severities` (comma-separated subsets). For a val
folder also `build_dir` (where the JPEGs are made, default `imagenet-c/` in the rbench cache
folder) and `build_workers` (processes, default all cores); for the published folder `val`
(an ImageNet val folder, for the clean error of relative mCE). `reference_model` (imagenet-c
only) is a report option: mCE and relative mCE against that model of the store, applied by
`report_rows` when the files are written, never part of the listing.

Only `rbench`'s public API and the imagenet plugin's class list are imported here, and
numpy/torch/OpenCV only inside functions.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import rbench

from . import imagenet, reference

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
DEFAULT_PER_CLASS = 10
CLASSES = 1000
PUBLISHED_PER_CLASS = 50  # the published set: all 50,000 val images per corruption and severity
GROUPS = ("noise", "blur", "weather", "digital")  # the published archives' top folders
SEED_SCHEME = "sha256(path, corruption, severity) v1"
INSTALL_HINT = "pip install 'rbench[corruptions]'"
# Bump with any change of the made files' pixels (corruptions.VERSION, the preparation, the
# JPEG settings): it names the build folder, so files made otherwise are never read.
BUILD_VERSION = "v1"
# The files a build writes (its marker says so: `rbench cache clear` removes these and no others).
BUILD_FILES = ("*.JPEG", ".complete", "build.json", ".*.tmp")
JPEG_QUALITY = 85

# AlexNet's top-1 error on the published ImageNet-C, per corruption and severity (fractions of
# the 50,000 images), the normalisers of Hendrycks & Dietterich's CE. The per-severity table is
# the one published in timm's `bits_and_tpu` branch (`imagenetc_alexnet_error_rates_list`);
# each row's mean is the per-corruption average published with the benchmark (the constants of
# AugMix's imagenet.py and mmpretrain's mCE metric), which `ALEXNET_ERR` keeps, and the tests
# check that the two agree.
ALEXNET_ERR_BY_SEVERITY = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}
ALEXNET_ERR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592,
    "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
# AlexNet's clean top-1 error, the normaliser of relative mCE: 100 - 56.522, torchvision's
# published top-1 of the AlexNet that Hendrycks & Dietterich evaluated (their "Clean error 43.5").
ALEXNET_CLEAN_ERR = 0.43478


# --- the corruptions -----------------------------------------------------------------------

def check_library() -> None:
    """Raise a one-line `UnavailableError` when the corruptions extra is not installed."""
    missing = [m for m in ("scipy", "skimage", "cv2") if importlib.util.find_spec(m) is None]
    if missing:
        raise rbench.UnavailableError(f"imagenet-c needs {', '.join(missing)}: {INSTALL_HINT}")
    from . import corruptions

    if corruptions.frost_folder() is None:
        raise rbench.UnavailableError(f"imagenet-c needs the reference's frost pictures (shipped by corrupt-tta): {INSTALL_HINT}")


def corrupt(pixels, corruption: str, severity: int):
    """ImageNet-C's `corruption` at `severity` (1..5) of a uint8 `[224, 224, 3]` RGB image, as a
    uint8 array of the same shape, computed as Hendrycks & Dietterich's `make_imagenet_c.py`
    computes it.

    Every random draw comes from numpy's global legacy generator, in the reference's order, so
    `np.random.seed(s)` before this call gives the reference's pixels for the same seed (the
    reference's golden outputs are reproduced bit for bit). `corruption` is one of
    `CORRUPTIONS`. Needs `rbench[corruptions]` (scipy, scikit-image, OpenCV and the frost
    pictures).
    """
    from . import corruptions

    return corruptions.corrupt(pixels, corruption, severity)


def corruption_seed(key: str, corruption: str, severity: int) -> int:
    """The seed of one made image: from its key (its path under the val folder, `wnid/file`),
    the corruption and severity; the same on every machine."""
    digest = hashlib.sha256(f"{key}\0{corruption}\0{severity}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def prepare(image):
    """A PIL image as the published set's loader made it: torchvision's `Resize(256)` (PIL
    bilinear, short side 256, long side `int(256 * long / short)`) then `CenterCrop(224)`
    (top-left corner at the rounded half of the margins)."""
    from PIL import Image

    w, h = image.size
    if w <= h:
        size = (256, int(256 * h / w))
    else:
        size = (int(256 * w / h), 256)
    image = image.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
    return image.crop((left, top, left + 224, top + 224))


def encode_jpeg(pixels) -> bytes:
    """A uint8 image as the published files were written: Pillow JPEG, quality 85, optimised
    Huffman tables, Pillow's default 4:2:0 chroma subsampling."""
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def made_image(source_path: str, key: str, corruption: str, severity: int):
    """The uint8 pixels (before JPEG) of one made ImageNet-C image: the val file prepared,
    seeded from `key`, corrupted."""
    import numpy as np
    from PIL import Image

    from . import corruptions

    with Image.open(source_path) as image:
        pixels = np.asarray(prepare(image.convert("RGB")))
    np.random.seed(corruption_seed(key, corruption, severity))
    return corruptions.corrupt(pixels, corruption, severity)


# --- the build: the corrupted JPEGs, once on disk ------------------------------------------

def _build_image(task: tuple[str, str, list[tuple[str, int, str]]]) -> int:
    """One val image under every `(corruption, severity, target)` of `task`; returns how many
    files it wrote (none for an unreadable val image, which the models' passes then count as
    unreadable, as they would the val file). Runs in the build's worker processes."""
    import numpy as np
    from PIL import Image

    from . import corruptions

    source_path, key, targets = task
    try:
        with Image.open(source_path) as image:
            pixels = np.asarray(prepare(image.convert("RGB")))
    except (OSError, SyntaxError, ValueError):  # PIL's errors for unreadable, truncated or bad files
        return 0
    for corruption, severity, target in targets:
        np.random.seed(corruption_seed(key, corruption, severity))
        rbench.write_bytes(Path(target), encode_jpeg(corruptions.corrupt(pixels, corruption, severity)))
    return len(targets)


def _worker_setup() -> None:
    import cv2

    cv2.setNumThreads(1)  # the processes are the parallelism


def build(root: Path, chosen: Sequence[tuple[str, str]], cells: Sequence[tuple[str, int]], workers: int,
          progress: Callable[[int, str], rbench.BuildProgress] = rbench.BuildProgress) -> int:
    """Make every missing `root/<corruption>/<severity>/<key>.JPEG` of the `chosen` val images
    (`(path, key)`, key `wnid/file`) under every `(corruption, severity)` of `cells`, in
    `workers` processes; returns how many files were made.

    Each file is written under a temporary name and renamed into place, so a stopped build
    leaves only whole files, and a rerun makes only the missing ones. A complete
    `(corruption, severity)` folder gets a `.complete` marker, so that later runs (and each
    model's worker process) do not list it again. (A run makes its build through
    `CorruptionTasks`, slice by slice, in the cells that read it.)
    """
    tasks, done_cells = _missing(root, chosen, cells)
    total = sum(len(t[2]) for t in tasks)
    made = failed = 0
    if total:
        bar = progress(total, f"imagenet-c: making {total:,} JPEGs in {root}")
        try:
            made, failed = rbench.run_build(tasks, _build_image, workers, _worker_setup, bar, lambda task: len(task[2]))
        finally:
            bar.close()
        if failed:
            print(f"imagenet-c: {failed:,} val image(s) could not be read; "
                  "their ImageNet-C files are counted as unreadable", file=sys.stderr)
    for folder in done_cells:
        rbench.write_bytes(folder / ".complete", f"{len(chosen)}\n".encode())
    return made


def _missing(root: Path, chosen: Sequence[tuple[str, str]], cells: Sequence[tuple[str, int]]):
    """The tasks that make the missing files of `cells` (one per val image: `(path, key,
    [(corruption, severity, target), ...])`), and the folders of the cells not marked complete."""
    todo: dict[str, list[tuple[str, int, str]]] = {}
    open_cells = []
    for corruption, severity in cells:
        folder = root / corruption / str(severity)
        marker = folder / ".complete"
        if marker.is_file() and marker.read_text().strip() == str(len(chosen)):
            continue
        existing: set[str] = set()
        if folder.is_dir():
            for entry in os.scandir(folder):
                if entry.is_dir():
                    existing.update(f"{entry.name}/{f}" for f in os.listdir(entry.path) if not f.startswith("."))
        for path, key in chosen:
            name = _made_name(key)
            if name not in existing:
                todo.setdefault(path, []).append((corruption, severity, str(folder / name)))
        open_cells.append(folder)
    keys = dict(chosen)
    return [(path, keys[path], targets) for path, targets in todo.items()], open_cells


class CorruptionTasks:
    """The work left in slices of an ImageNet-C build (`rbench.SourceBuild.tasks`): a slice is
    `<corruption>/<severity>`, a task one val image under the slices asked for together (it
    is decoded and prepared once for all of them). Its attributes are JSON data, kept in the
    store's listing: the build folder and the chosen val images `[path, key]`."""

    def __init__(self, folder: Path, chosen: Sequence[tuple[str, str]]):
        self.folder = str(folder)
        self.chosen = [[str(path), key] for path, key in chosen]

    def __call__(self, slices: Sequence[str]) -> list[tuple[tuple, int]]:
        cells = [(name.split("/")[0], int(name.split("/")[1])) for name in slices]
        tasks, _ = _missing(Path(self.folder), [tuple(c) for c in self.chosen], cells)
        return [(task, len(task[2])) for task in tasks]


def _made_name(key: str) -> str:
    """`wnid/ILSVRC2012_val_00000001.JPEG`: the published set's names (the val file's, as JPEG)."""
    wnid, name = key.split("/", 1)
    return f"{wnid}/{Path(name).stem}.JPEG"


def build_folder(base: Path, per_class: int, chosen: Sequence[tuple[str, str]]) -> Path:
    """The folder of one build: rbench's corruption version, the seeding scheme, the images per
    class, and a hash of the chosen files' keys and sizes (another val set is another build)."""
    from . import corruptions

    digest = hashlib.sha256(f"{corruptions.VERSION}\0{BUILD_VERSION}\0{SEED_SCHEME}\0{per_class}".encode())
    for path, key in chosen:
        digest.update(f"{key}\0{os.stat(path).st_size}\n".encode())
    return base / f"{BUILD_VERSION}-per_class{per_class}-{digest.hexdigest()[:12]}"


# --- scores --------------------------------------------------------------------------------

def severity_column(corruption: str, severity: int) -> str:
    return f"{corruption}_{severity}"


class CorruptionScorer:
    """The scores of the imagenet-c views, from per-sample predictions.

    Samples come in consecutive blocks: block 0 the clean images (possibly empty), then one
    block per `(corruption, severity)` of `cells`; `starts` are the first sample index of each
    block (and the end). Columns: top-1/top-5 over the corrupted images, top-1 per corruption
    (mean over its severities) and per corruption and severity, `clean_top1`, and with
    `normalise`:

    - `mce`: 100 x the mean over corruptions of CE_c = sum_s E_c,s / sum_s E^AlexNet_c,s, the
      sums over the severities run (all five: the published mCE; a subset: AlexNet's errors at
      those severities, never its five-severity mean);
    - `relative_mce`: 100 x the mean of sum_s (E_c,s - E_clean) / sum_s (E^AlexNet_c,s -
      E^AlexNet_clean), empty without clean images.

    Errors are fractions here; the columns are percent.
    """

    def __init__(self, starts: Sequence[int], cells: Sequence[tuple[str, int]], normalise: bool = True):
        self.starts = list(starts)
        self.cells = list(cells)
        self.normalise = normalise

    def __call__(self, predictions: rbench.Predictions) -> dict[str, float]:
        hit1, hit5 = predictions.hits(1), predictions.hits(5)
        blocks: dict[int, list[int]] = {}
        for row, index in enumerate(predictions.indices.tolist()):
            blocks.setdefault(bisect.bisect_right(self.starts, index) - 1, []).append(row)
        return self.scores({b: [hit1[r] for r in rows] for b, rows in blocks.items()},
                           [hit5[r] for b, rows in blocks.items() if b > 0 for r in rows])

    def scores(self, hits: dict[int, list[bool]], corrupted_hit5: list[bool]) -> dict[str, float]:
        """The columns from each block's top-1 hits (block 0 clean) and the corrupted images'
        top-5 hits."""
        nan = float("nan")

        def acc(values: list[bool]) -> float:
            return 100.0 * sum(values) / len(values) if values else nan

        corrupted = [h for b, values in hits.items() if b > 0 for h in values]
        clean = hits.get(0, [])
        clean_err = 1.0 - sum(clean) / len(clean) if clean else None
        result = {"top1": acc(corrupted), "top5": acc(corrupted_hit5)}
        result["top1_err"], result["top5_err"] = 100.0 - result["top1"], 100.0 - result["top5"]
        result["clean_top1"] = acc(clean)
        by_corruption: dict[str, list[tuple[int, float]]] = {}
        for block, (corruption, severity) in enumerate(self.cells, start=1):
            top1 = acc(hits.get(block, []))
            result[severity_column(corruption, severity)] = top1
            by_corruption.setdefault(corruption, []).append((severity, top1))
        ces, relative = [], []
        for corruption, runs in by_corruption.items():
            result[corruption] = sum(a for _, a in runs) / len(runs)
            errors = [(s, 1.0 - a / 100.0) for s, a in runs]
            alexnet = [ALEXNET_ERR_BY_SEVERITY[corruption][s - 1] for s, _ in runs]
            ces.append(sum(e for _, e in errors) / sum(alexnet))
            if clean_err is not None:
                relative.append(sum(e - clean_err for _, e in errors) / sum(a - ALEXNET_CLEAN_ERR for a in alexnet))
        if self.normalise:
            result["mce"] = 100.0 * sum(ces) / len(ces) if ces else nan
            result["relative_mce"] = 100.0 * sum(relative) / len(relative) if relative else nan
        return result


MAIN_COLUMNS = ("model", "img_size", "top1", "top1_err", "top5", "top5_err", "mce", "relative_mce",
                "param_count", "crop_pct", "interpolation")
NATIVE_COLUMNS = ("model", "img_size", "top1", "top1_err", "top5", "top5_err", "clean_top1",
                  "param_count", "crop_pct", "interpolation")


def _views(name: str, starts: Sequence[int], cells: Sequence[tuple[str, int]], request: rbench.DataRequest,
           normalise: bool) -> list[rbench.ViewSpec]:
    scorer = CorruptionScorer(starts, cells, normalise=normalise)
    corruptions = list(dict.fromkeys(c for c, _ in cells))
    wanted = request.views or {name, f"{name}-severity"}
    views = []
    if name in wanted:
        views.append(rbench.ViewSpec(name=name, score=scorer,
                                     columns=(*(MAIN_COLUMNS if normalise else NATIVE_COLUMNS), *corruptions)))
    if f"{name}-severity" in wanted:
        views.append(rbench.ViewSpec(name=f"{name}-severity", score=scorer, columns=(
            "model", "img_size", "top1", "clean_top1", *(severity_column(c, s) for c, s in cells))))
    return views


# --- normalised by a model of the store (a report option) -----------------------------------

NORMALISED = "mce and relative_mce"


def report_rows(request: rbench.ReportRequest) -> tuple[list[dict], list[str]]:
    """The imagenet-c rows with `mce` and `relative_mce` normalised by the `reference_model` of
    the same store instead of AlexNet: CE_c = sum_s E_c,s / sum_s E^ref_c,s and the relative
    CE_c = sum_s (E_c,s - E_clean) / sum_s (E^ref_c,s - E^ref_clean), the sums over the
    corruption-severities that both the row and the reference ran (a note names a row that ran
    others too), then 100 x their mean over the corruptions. Other views are left as they are."""
    if request.view != "imagenet-c":
        return [dict(row) for row in request.rows], []
    name, found, notes = reference.reference_rows(request, "imagenet-c", NORMALISED)
    rows = []
    for row in request.rows:
        ref = reference.reference_for(found, row, name, "imagenet-c", NORMALISED, notes)
        if ref is None:
            rows.append({**row, "mce": None, "relative_mce": None})
            continue
        shared = reference.shared_runs(row, ref, [(c, s) for c in CORRUPTIONS for s in SEVERITIES],
                                       lambda run: severity_column(*run), "corruption-severities", name,
                                       "imagenet-c", NORMALISED, notes)
        by_corruption: dict[str, list[tuple[float, float]]] = {}
        for c, s in shared:
            column = severity_column(c, s)
            by_corruption.setdefault(c, []).append((1.0 - reference.number(row[column]) / 100.0,
                                                    1.0 - reference.number(ref[column]) / 100.0))
        clean = 1.0 - reference.number(row.get("clean_top1")) / 100.0
        ref_clean = 1.0 - reference.number(ref.get("clean_top1")) / 100.0
        ces = [reference.ratio(sum(e for e, _ in errors), sum(r for _, r in errors)) for errors in by_corruption.values()]
        relative = [reference.ratio(sum(e - clean for e, _ in errors), sum(r - ref_clean for _, r in errors))
                    for errors in by_corruption.values()]
        rows.append({**row, "mce": 100.0 * reference.mean(ces), "relative_mce": 100.0 * reference.mean(relative)})
    return rows, notes


# --- options and folders -------------------------------------------------------------------

def _val_samples(name: str, root: Path, per_class: int, request: rbench.DataRequest):
    """The first `per_class` images of each wnid folder (file-name order) as `(path, label,
    key)`, whether the folder is partial, and the number of classes and short classes."""
    folders, listed = rbench.list_class_folders(root)
    index = imagenet.wnid_index()
    wrong = [f for f in folders if f not in index]
    if wrong:
        raise rbench.DataError(f"{root} has the folder {wrong[0]!r}, which is neither an ImageNet class nor an "
                               f"ImageNet-C corruption; {name} needs a val folder of wnid folders or the published "
                               "ImageNet-C folder (<corruption>/<severity>/<wnid>/*.JPEG)")
    by_class: dict[int, list[str]] = {}
    for path, folder in listed:
        by_class.setdefault(folder, []).append(path)
    chosen, short = [], 0
    for folder, paths in sorted(by_class.items()):
        short += len(paths) < per_class
        chosen.extend((path, index[folders[folder]], f"{folders[folder]}/{Path(path).name}") for path in paths[:per_class])
    partial = len(folders) < CLASSES or short > 0
    if partial and not request.allow_partial:
        raise rbench.DataError(
            f"{name} at {root}: {len(folders)} of {CLASSES} classes, {short} with fewer than {per_class} images; "
            f"use the complete val folder, a smaller --data-option {name}.per_class, or --allow-partial")
    note = f"partial: {len(folders)} classes, {short} short of {per_class} images; " if partial else ""
    return chosen, partial, note


def _layout(root: Path) -> tuple[str, Path]:
    """`("published", folder of corruption folders)` or `("val", root)`, told by the folders."""
    if not root.is_dir():
        raise rbench.DataError(f"imagenet-c folder {root} does not exist; pass --data-root ROOT (with ROOT/imagenet/val) "
                               "or --data imagenet-c=PATH (a val folder or the published ImageNet-C folder)")
    names = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if names and names <= set(GROUPS):  # the four published archives unpacked side by side
        return "published", root
    if names & set(CORRUPTIONS):
        other = sorted(names - set(CORRUPTIONS))
        if other:
            raise rbench.DataError(f"{root} mixes ImageNet-C corruption folders with {other[0]!r}; the published layout is "
                                   "<corruption>/<severity>/<wnid>/*.JPEG and nothing else")
        return "published", root
    return "val", root


def _corruption_folder(root: Path, corruption: str) -> Path:
    if (root / corruption).is_dir():
        return root / corruption
    for group in GROUPS:
        if (root / group / corruption).is_dir():
            return root / group / corruption
    return root / corruption


# --- the sources ---------------------------------------------------------------------------

def _cells(name: str, options: dict) -> list[tuple[str, int]]:
    corruptions = rbench.option_choices(name, options.get("corruptions"), CORRUPTIONS, "corruptions")
    severities = rbench.option_choices(name, options.get("severities"), SEVERITIES, "severities", int)
    return [(c, s) for c in corruptions for s in severities]


def load(request: rbench.DataRequest) -> rbench.Source:
    """`-d imagenet-c`: made from a val folder, or read from the published folder."""
    if request.path is None:
        raise rbench.DataError("where is imagenet-c's folder? pass --data-root ROOT (with ROOT/imagenet/val) or "
                               "--data imagenet-c=PATH (a val folder or the published ImageNet-C folder)")
    mode, root = _layout(Path(request.path))
    return load_published(request, root) if mode == "published" else load_made(request, root)


def load_made(request: rbench.DataRequest, root: Path) -> rbench.Source:
    """The val images made into ImageNet-C JPEGs (built once), then read as files."""
    name = "imagenet-c"
    options = dict(request.options)
    rbench.check_option_names(name, options, ("per_class", "corruptions", "severities", "build_dir", "build_workers"),
                   "a val folder")
    check_library()
    per_class = rbench.option_whole_number(name, options, "per_class", DEFAULT_PER_CLASS)
    workers = rbench.option_whole_number(name, options, "build_workers", 1) if "build_workers" in options else None
    cells = _cells(name, options)
    chosen, partial, note = _val_samples(name, root, per_class, request)
    base = Path(options["build_dir"]).expanduser() if "build_dir" in options else request.cache_dir / "imagenet-c"
    pairs = [(path, key) for path, _, key in chosen]
    folder = build_folder(base, per_class, pairs)
    from . import corruptions

    samples = [(path, label) for path, label, _ in chosen]
    starts = [0, len(samples)]
    slices = []
    for corruption, severity in cells:
        samples.extend((str(folder / corruption / str(severity) / _made_name(key)), label) for _, label, key in chosen)
        slices.append((f"{corruption}/{severity}", starts[-1], len(samples)))
        starts.append(len(samples))
    # Made by the cells that read them, slice by slice (about a corruption's severities at a time:
    # one decoded val image serves them all), not here: the plan writes nothing.
    made = rbench.SourceBuild(
        folder=folder, slices=slices, tasks=CorruptionTasks(folder, pairs), make=_build_image, setup=_worker_setup,
        group=len({s for _, s in cells}), workers=workers, files=BUILD_FILES,
        label="imagenet-c: making {files:,} JPEGs in {folder}",
        about={"version": corruptions.VERSION, "build": BUILD_VERSION, "seed": SEED_SCHEME, "per_class": per_class,
               "images": len(chosen), "val": str(root), "prepare": "Resize(256) bilinear, CenterCrop(224)",
               "jpeg_quality": JPEG_QUALITY})
    n = len(chosen)
    note += (f"{n:,} images x {len(cells)} corruption-severities + {n:,} clean = {len(samples):,} images per model; "
             f"JPEGs in {folder}")
    return rbench.Source(name="imagenet-c", root=root, samples=samples, views=_views(name, starts, cells, request, True),
                         partial=partial, note=note, identity=f"made {folder.name}", build=made)


def load_published(request: rbench.DataRequest, root: Path) -> rbench.Source:
    """The published ImageNet-C folder: `<corruption>/<severity>/<wnid>/*.JPEG`."""
    name = "imagenet-c"
    options = dict(request.options)
    rbench.check_option_names(name, options, ("per_class", "corruptions", "severities", "val"), "the published ImageNet-C folder")
    per_class = rbench.option_whole_number(name, options, "per_class", PUBLISHED_PER_CLASS)
    cells = _cells(name, options)
    index = imagenet.wnid_index()
    samples: list[tuple[str, int]] = []
    clean_note = ""
    if "val" in options:
        clean, _, clean_note = _val_samples(name, Path(options["val"]).expanduser(), per_class, request)
        samples = [(path, label) for path, label, _ in clean]
    starts = [0, len(samples)]
    problems = []
    for corruption, severity in cells:
        folder = _corruption_folder(root, corruption) / str(severity)
        if not folder.is_dir():
            problems.append(f"{folder} is missing")
            starts.append(len(samples))
            continue
        folders, listed = rbench.list_class_folders(folder)
        wrong = [f for f in folders if f not in index]
        if wrong:
            raise rbench.DataError(f"{folder} has the folder {wrong[0]!r}, which is not an ImageNet class; the published "
                                   "layout is <corruption>/<severity>/<wnid>/*.JPEG")
        by_class: dict[int, list[str]] = {}
        for path, i in listed:
            by_class.setdefault(i, []).append(path)
        short = sum(len(paths) < per_class for paths in by_class.values())
        extra = [folders[i] for i, paths in by_class.items() if len(paths) > PUBLISHED_PER_CLASS]
        if extra and "per_class" not in options:
            raise rbench.DataError(f"{folder / extra[0]} has more than the published {PUBLISHED_PER_CLASS} images of its "
                                   "class; point --data imagenet-c=PATH at the published ImageNet-C folder")
        if len(folders) < CLASSES or short:
            problems.append(f"{folder} has {len(folders)} of {CLASSES} classes, {short} with fewer than {per_class} images")
        for i, paths in sorted(by_class.items()):
            samples.extend((path, index[folders[i]]) for path in paths[:per_class])
        starts.append(len(samples))
    partial = bool(problems)
    if partial and not request.allow_partial:
        raise rbench.DataError(f"imagenet-c at {root} is partial: {problems[0]}"
                               + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                               + "; complete it, choose a subset with --data-option imagenet-c.corruptions/severities/"
                               "per_class, or pass --allow-partial")
    note = f"published ImageNet-C at {root}, {len(cells)} corruption-severities, {len(samples) - starts[1]:,} images"
    if partial:
        note = f"partial: {problems[0]}; " + note
    note += f"; {starts[1]:,} clean from {options['val']}" if "val" in options else "; no clean images (--data-option imagenet-c.val=PATH for relative mCE)"
    if clean_note:
        note = clean_note + note
    return rbench.Source(name="imagenet-c", root=root, samples=samples, views=_views(name, starts, cells, request, True),
                         partial=partial, note=note, identity="published")


class NativeCorrupter:
    """The `sample_transform` of imagenet-c-native: the corruption at the model's input size
    (its attributes are JSON data: the store's listing keeps them). Block 0 of the samples is clean."""

    def __init__(self, keys: Sequence[str], starts: Sequence[int], cells: Sequence[tuple[str, int]]):
        self.keys = list(keys)
        self.starts = list(starts)
        self.cells = list(cells)

    def __call__(self, index: int, image):
        import numpy as np

        from . import corruptions

        block = bisect.bisect_right(self.starts, index) - 1
        if block == 0:
            return image
        corruption, severity = self.cells[block - 1]
        if not getattr(NativeCorrupter, "_threads_set", False):
            _worker_setup()
            NativeCorrupter._threads_set = True
        np.random.seed(corruption_seed(self.keys[index - self.starts[block]], corruption, severity))
        return corruptions.corrupt_any_size(np.asarray(image, dtype=np.uint8), corruption, severity)


def load_native(request: rbench.DataRequest) -> rbench.Source:
    """`-d imagenet-c-native`: val images corrupted after each model's own resize and crop."""
    name = "imagenet-c-native"
    options = dict(request.options)
    rbench.check_option_names(name, options, ("per_class", "corruptions", "severities"), "imagenet-c-native")
    check_library()
    per_class = rbench.option_whole_number(name, options, "per_class", DEFAULT_PER_CLASS)
    cells = _cells(name, options)
    if request.path is None:
        raise rbench.DataError(f"where is {name}'s val folder? pass --data-root ROOT (with ROOT/imagenet/val) or --data {name}=PATH")
    root = Path(request.path)
    if not root.is_dir():
        raise rbench.DataError(f"{name} folder {root} does not exist; pass --data-root ROOT (with ROOT/imagenet/val) or --data {name}=PATH")
    chosen, partial, note = _val_samples(name, root, per_class, request)
    n = len(chosen)
    samples = [(path, label) for path, label, _ in chosen] * (1 + len(cells))
    starts = [n * b for b in range(len(cells) + 2)]
    note += f"{n:,} images x {len(cells)} corruption-severities + {n:,} clean = {len(samples):,} images per model, corrupted at each model's input size"
    from . import corruptions

    return rbench.Source(name=name, root=root, samples=samples, views=_views(name, starts, cells, request, False),
                         partial=partial, note=note, sample_transform=NativeCorrupter([k for _, _, k in chosen], starts, cells),
                         identity=f"{corruptions.VERSION}; seed {SEED_SCHEME}")


VIEWS = {"imagenet-c": "imagenet", "imagenet-c-severity": None}
OPTIONS = {"per_class": f"N: val images per class (default {DEFAULT_PER_CLASS}; 50 is all of val)",
           "corruptions": "NAMES: comma-separated corruptions (default all 15)",
           "severities": "LEVELS: comma-separated severities 1-5 (default all)"}
NATIVE_VIEWS = {"imagenet-c-native": "imagenet", "imagenet-c-native-severity": None}
# The per-corruption (and per-severity) top-1 columns: the HTML site's heat maps of errors.
SEVERITY_COLUMNS = tuple(severity_column(c, s) for c in CORRUPTIONS for s in SEVERITIES)
PART_COLUMNS = {"imagenet-c": CORRUPTIONS, "imagenet-c-severity": SEVERITY_COLUMNS}
NATIVE_PART_COLUMNS = {"imagenet-c-native": CORRUPTIONS, "imagenet-c-native-severity": SEVERITY_COLUMNS}


@rbench.hookimpl
def rbench_datasets():
    return [
        rbench.DatasetSpec(
            name="imagenet-c", load=load, default_folder="imagenet/val", views=VIEWS, part_columns=PART_COLUMNS,
            options=dict(OPTIONS, val="PATH: the val folder, for the clean error (relative mCE) with the published folder",
                         build_dir="PATH: where the corrupted JPEGs are made (default: the rbench cache)",
                         build_workers="N: processes that make them (default: the CPU count of the machine making them)"),
            report_options={reference.OPTION: reference.option_help(NORMALISED, "AlexNet's published errors")},
            report_rows=report_rows,
            description="ImageNet-C as published: made once from ImageNet val (224 px, JPEG 85) or read from the "
                        "published folder; 15 corruptions x 5 severities, mCE and relative mCE (needs rbench[corruptions])"),
        rbench.DatasetSpec(
            name="imagenet-c-native", load=load_native, default_folder="imagenet/val", views=NATIVE_VIEWS,
            part_columns=NATIVE_PART_COLUMNS,
            options=OPTIONS,
            description="ImageNet-C's corruptions at each model's own input size, from ImageNet val; not comparable "
                        "with published mCE, so no AlexNet-normalised columns (needs rbench[corruptions])"),
    ]
