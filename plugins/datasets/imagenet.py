"""The ImageNet test sets: ImageNet val (with its ReaL and A/R-clean views), ImageNetV2
matched-frequency, ImageNet-Sketch, ImageNet-A and ImageNet-R; and the 1000-way views of A, R
and their clean counterparts, added to the stored predictions of those sources.

Class indices are ImageNet-1k indices in the order of timm's `imagenet_synsets.txt` (sorted
wnids). Every label file comes from timm's installed wheel (`timm/data/_info`), never from the
network. Each source checks its folder against the published layout and counts, so that a
wrong or partial folder is an error before any model runs, not a silently wrong number.
"""

from __future__ import annotations

import csv
import json
import re
from functools import cache
from pathlib import Path

import rbench

# (classes, images) of each complete data set.
EXPECTED = {
    "imagenet": (1000, 50_000),
    "imagenetv2-matched-frequency": (1000, 10_000),
    "sketch": (1000, 50_889),
    "imagenet-a": (200, 7_500),
    "imagenet-r": (200, 30_000),
}
VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})")
LABEL_FILE_NAMES = ("LOC_val_solution.csv",)


# --- label files from timm's wheel -------------------------------------------------------

@cache
def synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids; a wnid's position is its class index."""
    return tuple(rbench.timm_info_file("imagenet_synsets.txt").read_text().split())


@cache
def wnid_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(synsets())}


@cache
def subset_indices(name: str) -> tuple[int, ...]:
    """The 1000-class indices of ImageNet-A's or -R's 200 classes (`name` is `a` or `r`)."""
    return tuple(int(i) for i in rbench.timm_info_file(f"imagenet_{name}_indices.txt").read_text().split())


@cache
def real_labels() -> list[list[int]]:
    """ImageNet-ReaL: for val image i+1 (`ILSVRC2012_val_{i+1:08d}`), its list of acceptable classes."""
    return json.loads(rbench.timm_info_file("imagenet_real_labels.json").read_text())


# --- checks shared by the sources --------------------------------------------------------

def check_complete(name: str, root: Path, classes: int, images: int, request: rbench.DataRequest) -> bool:
    """Compare with the published counts; True when partial (allowed with --allow-partial)."""
    want_classes, want_images = EXPECTED[name]
    if (classes, images) == (want_classes, want_images):
        return False
    if images > want_images or classes > want_classes:
        raise rbench.DataError(
            f"{name} at {root} has {images:,} images in {classes} classes, more than the published "
            f"{want_images:,} in {want_classes}; point --data {name}=PATH at the right folder"
        )
    if not request.allow_partial:
        raise rbench.DataError(
            f"{name} at {root} is partial: {images:,} of {want_images:,} images, {classes} of {want_classes} "
            "classes; complete it, or pass --allow-partial to score what is there"
        )
    return True


def wnid_folder_samples(name: str, root: Path, allowed: set[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Samples of a folder of wnid subfolders, labelled with ImageNet-1k indices."""
    folders, samples = rbench.list_class_folders(root)
    wrong = [f for f in folders if f not in allowed]
    if wrong:
        hint = ("it looks like ImageNetV2's integer folders: use -d imagenetv2-matched-frequency"
                if all(f.isdigit() for f in folders) else f"{name} needs one folder per class, named by wnid")
        raise rbench.DataError(f"{root} has the folder {wrong[0]!r}, which is not a {name} class; {hint}")
    index = wnid_index()
    return folders, [(path, index[folders[i]]) for path, i in samples]


def _partial_note(partial: bool, images: int, name: str) -> str:
    return f"partial: {images:,} of {EXPECTED[name][1]:,} images" if partial else ""


# --- ImageNet val ------------------------------------------------------------------------

def _find_label_file(root: Path, request: rbench.DataRequest) -> Path | None:
    if "labels" in request.options:
        path = Path(request.options["labels"]).expanduser()
        if not path.is_file():
            raise rbench.DataError(f"label file {path} does not exist; check --data-option imagenet.labels=PATH")
        return path
    for folder in (root, root.parent):
        for name in LABEL_FILE_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def read_val_labels(path: Path) -> dict[str, int]:
    """`{file stem: class index}` from a label file: Kaggle's `LOC_val_solution.csv`
    (`ImageId,PredictionString`, the first word a wnid) or two columns `file,wnid-or-index`."""
    index = wnid_index()
    labels: dict[str, int] = {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if rows and not VAL_FILE.search(rows[0][0]):
        rows = rows[1:]  # a header line
    for line, row in enumerate(rows, start=2):
        if len(row) < 2:
            continue
        label = row[1].split()[0] if row[1].split() else ""
        if label in index:
            labels[Path(row[0]).stem] = index[label]
        elif label.isdigit() and int(label) < 1000:
            labels[Path(row[0]).stem] = int(label)
        else:
            raise rbench.DataError(f"{path} line {line}: {label!r} is neither a wnid nor a class index 0..999")
    return labels


def _flat_val_samples(root: Path, request: rbench.DataRequest) -> list[tuple[str, int]]:
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in rbench.IMAGE_EXTENSIONS)
    if not files:
        raise rbench.DataError(f"{root} holds neither wnid class folders nor val images; pass the ImageNet val folder")
    label_file = _find_label_file(root, request)
    if label_file is None:
        raise rbench.DataError(
            f"{root} is a flat folder of val images without labels (scored as one class it would give ~0.1%); "
            f"put {LABEL_FILE_NAMES[0]} beside it or pass --data-option imagenet.labels=PATH"
        )
    labels = read_val_labels(label_file)
    unlabelled = [p.name for p in files if p.stem not in labels]
    if unlabelled:
        raise rbench.DataError(f"{label_file} has no label for {unlabelled[0]} (and {len(unlabelled) - 1} more); use the label file of this val set")
    return [(str(p), labels[p.stem]) for p in files]


def _real_view(samples: list[tuple[str, int]], partial: bool, root: Path) -> rbench.ViewSpec | str:
    """The ReaL view, or why it cannot be made from these samples."""
    if partial:
        return f"ImageNet-ReaL needs the complete 50,000-image val set, and {root} is partial"
    real = real_labels()
    kept, labels = [], []
    for i, (path, _) in enumerate(samples):
        match = VAL_FILE.search(Path(path).name)
        if match is None:
            return f"ImageNet-ReaL needs the original file names (ILSVRC2012_val_XXXXXXXX), and {root} has {Path(path).name}"
        accepted = real[int(match.group(1)) - 1]
        if accepted:  # images with no ReaL label are left out (3,163 of them)
            kept.append(i)
            labels.append(tuple(accepted))
    return rbench.ViewSpec(name="imagenet-real", samples=kept, labels=labels)


def _clean_view(name: str, subset: str, samples: list[tuple[str, int]]) -> rbench.ViewSpec:
    """The val images of ImageNet-A's or -R's 200 classes, scored over those 200 classes."""
    classes = subset_indices(subset)
    members = set(classes)
    kept = [i for i, (_, label) in enumerate(samples) if label in members]
    return rbench.ViewSpec(name=name, samples=kept, classes=classes)


def load_val(request: rbench.DataRequest) -> rbench.Source:
    root = _folder(request, "imagenet", "imagenet/val")
    if any(p.is_dir() for p in root.iterdir()):
        folders, samples = wnid_folder_samples("imagenet", root, set(synsets()))
        classes = len(folders)
    else:
        samples = _flat_val_samples(root, request)
        classes = len({label for _, label in samples})
    partial = check_complete("imagenet", root, classes, len(samples), request)
    wanted = request.views or set(VAL_VIEWS)
    views: list[rbench.ViewSpec] = []
    note = _partial_note(partial, len(samples), "imagenet")
    if "imagenet" in wanted:
        views.append(rbench.ViewSpec(name="imagenet"))
    if "imagenet-real" in wanted:
        real = _real_view(samples, partial, root)
        if isinstance(real, str):
            if request.views is not None:  # asked for by name: an error, not a silent omission
                raise rbench.DataError(f"{real}; drop imagenet-real from -d or use the complete val set")
            note = "; ".join(filter(None, [note, "no imagenet-real: " + real]))
        else:
            views.append(real)
    for name, subset in (("imagenet-a-clean", "a"), ("imagenet-r-clean", "r")):
        if name in wanted:
            views.append(_clean_view(name, subset, samples))
    return rbench.Source(name="imagenet", root=root, samples=samples, views=views, partial=partial, note=note)


VAL_VIEWS = {"imagenet": None, "imagenet-real": "imagenet", "imagenet-a-clean": None, "imagenet-r-clean": None}


# --- the test sets -----------------------------------------------------------------------

def _folder(request: rbench.DataRequest, name: str, default: str) -> Path:
    if request.path is None:
        raise rbench.DataError(f"where is {name}? pass --data-root ROOT (with ROOT/{default}) or --data {name}=PATH")
    root = Path(request.path)
    if not root.is_dir():
        raise rbench.DataError(f"{name} folder {root} does not exist; pass --data-root ROOT (with ROOT/{default}) or --data {name}=PATH")
    return root


def load_v2(request: rbench.DataRequest) -> rbench.Source:
    name = "imagenetv2-matched-frequency"
    root = _folder(request, name, "imagenetv2-matched-frequency-format-val")
    folders, samples = rbench.list_class_folders(root)
    wrong = [f for f in folders if not (f.isdigit() and int(f) < 1000)]
    if wrong:
        raise rbench.DataError(
            f"{root} has the folder {wrong[0]!r}; ImageNetV2's folders are class indices 0..999 "
            "(the published imagenetv2-matched-frequency-format-val layout), not wnids"
        )
    # Folder "10" is class 10: map by number, never by position in a sort.
    samples = [(path, int(folders[i])) for path, i in samples]
    partial = check_complete(name, root, len(folders), len(samples), request)
    return rbench.Source(name=name, root=root, samples=samples, views=[rbench.ViewSpec(name=name)],
                         partial=partial, note=_partial_note(partial, len(samples), name))


def load_sketch(request: rbench.DataRequest) -> rbench.Source:
    root = _folder(request, "sketch", "sketch")
    folders, samples = wnid_folder_samples("sketch", root, set(synsets()))
    partial = check_complete("sketch", root, len(folders), len(samples), request)
    return rbench.Source(name="sketch", root=root, samples=samples, views=[rbench.ViewSpec(name="sketch")],
                         partial=partial, note=_partial_note(partial, len(samples), "sketch"))


def _load_subset(request: rbench.DataRequest, subset: str) -> rbench.Source:
    name = f"imagenet-{subset}"
    root = _folder(request, name, name)
    classes = subset_indices(subset)
    folders, samples = wnid_folder_samples(name, root, {synsets()[i] for i in classes})
    partial = check_complete(name, root, len(folders), len(samples), request)
    # Scored 1000-way these sets give near 0%: the published numbers restrict to the 200 classes.
    view = rbench.ViewSpec(name=name, classes=classes)
    return rbench.Source(name=name, root=root, samples=samples, views=[view], partial=partial,
                         note=_partial_note(partial, len(samples), name))


def load_a(request: rbench.DataRequest) -> rbench.Source:
    return _load_subset(request, "a")


def load_r(request: rbench.DataRequest) -> rbench.Source:
    return _load_subset(request, "r")


# --- the 1000-way views of ImageNet-A and -R, added to the stored sources ------------------

def _all_classes(view: rbench.ViewSpec) -> rbench.ViewSpec:
    return rbench.ViewSpec(name=f"{view.name}-1k", samples=view.samples, labels=view.labels)


def views_1k(source: rbench.Source) -> list[rbench.ViewSpec]:
    """Beside each of ImageNet-A's, -R's and their clean counterparts' 200-class views that the
    stored source has, the same samples scored over all 1000 classes (`<view>-1k`): the top-5
    over every class is in every predictions file, so no model runs again."""
    return [_all_classes(view) for view in source.views if view.name in ADDED_1K]


# 1000-way view -> its base, as the 200-class views are wired: A and R against their clean val views.
ADDED_1K = {"imagenet-a-clean": None, "imagenet-r-clean": None,
            "imagenet-a": "imagenet-a-clean-1k", "imagenet-r": "imagenet-r-clean-1k"}


def _views_1k_of(name: str, source: str, *views: str) -> rbench.AddedViews:
    return rbench.AddedViews(name=name, source=source, make=views_1k,
                             views={f"{view}-1k": ADDED_1K[view] for view in views},
                             description=f"{', '.join(views)} over all 1000 classes (top-1/top-5 of every class), "
                                         "from the stored predictions")


@rbench.hookimpl
def rbench_added_views():
    return [_views_1k_of("imagenet-a-r-clean-1k", "imagenet", "imagenet-a-clean", "imagenet-r-clean"),
            _views_1k_of("imagenet-a-1k", "imagenet-a", "imagenet-a"),
            _views_1k_of("imagenet-r-1k", "imagenet-r", "imagenet-r")]


@rbench.hookimpl
def rbench_datasets():
    return [
        rbench.DatasetSpec(name="imagenet", load=load_val, default_folder="imagenet/val", views=VAL_VIEWS,
                           options={"labels": "PATH: the label file of a flat val folder (LOC_val_solution.csv, "
                                              "or file,wnid-or-index lines)"},
                           description="ImageNet val (wnid folders, or flat with LOC_val_solution.csv): "
                                       "imagenet, imagenet-real, imagenet-a-clean, imagenet-r-clean from one pass"),
        rbench.DatasetSpec(name="imagenetv2-matched-frequency", load=load_v2, options={},
                           default_folder="imagenetv2-matched-frequency-format-val",
                           views={"imagenetv2-matched-frequency": "imagenet"},
                           description="ImageNetV2 matched-frequency: 10,000 images in folders 0..999"),
        rbench.DatasetSpec(name="sketch", load=load_sketch, options={}, default_folder="sketch",
                           views={"sketch": "imagenet"},
                           description="ImageNet-Sketch: 50,889 sketches in 1000 wnid folders"),
        rbench.DatasetSpec(name="imagenet-a", load=load_a, options={}, default_folder="imagenet-a",
                           views={"imagenet-a": "imagenet-a-clean"},
                           description="ImageNet-A: 7,500 natural adversarial images, scored over its 200 classes"),
        rbench.DatasetSpec(name="imagenet-r", load=load_r, options={}, default_folder="imagenet-r",
                           views={"imagenet-r": "imagenet-r-clean"},
                           description="ImageNet-R: 30,000 renditions, scored over its 200 classes"),
    ]
