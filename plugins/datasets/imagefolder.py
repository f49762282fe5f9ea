"""Any folder of class subfolders (`--data-dir PATH`).

How the class folders are numbered (the labelling) is chosen once per folder, told in the
source's note and kept in its identity, so that cells of two labellings are never mixed:

- `imagenet`: when every class folder is an ImageNet-1k wnid (`n01440764`), each is labelled
  with its ImageNet-1k index, so that a subset such as Imagenette is scored against the model's
  own classes. A folder where some names are wnids and others are not is an error: one stray
  folder would otherwise renumber every class.
- `sorted`: any other folder's classes are numbered in natural sort order, as timm's image
  folders are. `--data-option imagefolder.labels=sorted` chooses it for wnid folders too, and
  `labels=imagenet` insists on wnids.
- `class_map`: `--data-option imagefolder.class_map=FILE` gives a text file of class names, one
  per line (as timm's `validate.py --class-map`): a folder named like line i is class i. Every
  folder must be in it.
"""

from __future__ import annotations

from pathlib import Path

import rbench

from . import imagenet

CLASS_MAP = "class_map"
LABELS = "labels"
LABELLINGS = ("imagenet", "sorted")  # the values of --data-option imagefolder.labels


def read_class_map(path: Path) -> dict[str, int]:
    """`{class name: index}` from a text file of names, one per line; line i (from 0) is class i,
    as in timm's `load_class_map`."""
    if not path.is_file():
        raise rbench.DataError(f"class map {path} does not exist; --data-option imagefolder.class_map=FILE "
                               "takes a text file of class names, one per line")
    index: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise rbench.DataError(f"class map {path} cannot be read as text ({exc}); "
                               "it must list class names, one per line") from exc
    for i, line in enumerate(lines):
        name = line.strip()
        if not name:
            continue
        if name in index:
            raise rbench.DataError(f"class map {path} names {name!r} twice (lines {index[name] + 1} and {i + 1}); "
                                   "each class once")
        index[name] = i
    if not index:
        raise rbench.DataError(f"class map {path} is empty; it must list class names, one per line")
    return index


def labelling(root: Path, folders: list[str], options) -> tuple[str, dict[str, int], str]:
    """`(labelling, {folder: class index}, note)` of the class folders `folders` of `root`, as
    the options choose or the folder names tell (see the module's docstring)."""
    chosen = options.get(LABELS)
    if chosen is not None and chosen not in LABELLINGS:
        raise rbench.DataError(f"--data-option imagefolder.labels={chosen}: takes {' or '.join(LABELLINGS)} "
                               "(or pass imagefolder.class_map=FILE)")
    if CLASS_MAP in options:
        if chosen is not None:
            raise rbench.DataError("--data-option imagefolder.labels and imagefolder.class_map both choose the "
                                   "class numbering; pass one of them")
        path = Path(options[CLASS_MAP]).expanduser()
        index = read_class_map(path)
        unmapped = [f for f in folders if f not in index]
        if unmapped:
            raise rbench.DataError(
                f"{root} has the class folder {unmapped[0]!r}, which is not in the class map {path} "
                f"({len(unmapped)} folder(s) missing from it); add it, or use the class map of this data set")
        return CLASS_MAP, index, f"classes numbered by the class map {path}: {len(folders)} of its {len(index)} classes"
    wnids = imagenet.wnid_index()
    others = [f for f in folders if f not in wnids]
    if chosen == "sorted" or (chosen is None and len(others) == len(folders)):
        return "sorted", {f: i for i, f in enumerate(folders)}, "classes numbered in sorted order of their folders"
    if others:
        if chosen == "imagenet":
            raise rbench.DataError(f"{root} has {len(others)} class folder(s) that are not ImageNet-1k wnids "
                                   f"({rbench.first_few(others, quoted=True)}), so --data-option imagefolder.labels=imagenet cannot label "
                                   "them; remove them, or pass imagefolder.labels=sorted")
        raise rbench.DataError(f"{root} mixes {len(folders) - len(others)} ImageNet-1k wnid class folder(s) with "
                               f"{len(others)} that are not wnids ({rbench.first_few(others, quoted=True)}); remove those to label by "
                               "ImageNet-1k index, or pass --data-option imagefolder.labels=sorted to number "
                               "every folder in sorted order")
    if len(folders) < len(wnids):
        note = (f"the {len(folders)} class folders are ImageNet wnids, not all {len(wnids)}: labelled with their "
                "ImageNet-1k indices (pass --data-option imagefolder.labels=sorted or class_map=FILE to number "
                "them otherwise)")
    else:
        note = "the class folders are ImageNet wnids, labelled with their ImageNet-1k indices"
    return "imagenet", wnids, note


def load(request: rbench.DataRequest) -> rbench.Source:
    if request.path is None:
        raise rbench.DataError("data set 'imagefolder' needs a folder: pass --data-dir PATH (or --data imagefolder=PATH)")
    folders, samples = rbench.list_class_folders(request.path)
    labels, index, note = labelling(request.path, folders, request.options)
    samples = [(path, index[folders[i]]) for path, i in samples]
    return rbench.Source(name="imagefolder", root=request.path, samples=samples,
                         views=[rbench.ViewSpec(name="imagefolder")], note=f"labels={labels}: {note}",
                         identity=f"labels={labels}")


@rbench.hookimpl
def rbench_datasets():
    return [
        rbench.DatasetSpec(
            name="imagefolder",
            description="any folder with one subfolder of images per class (--data-dir)",
            load=load,
            data_dir=True,
            options={CLASS_MAP: "FILE: class names, one per line; a folder named like line i is class i "
                                "(as timm's validate.py --class-map)",
                     LABELS: "imagenet or sorted: number wnid class folders by ImageNet-1k index (the default "
                             "when every folder is a wnid) or every folder in sorted order (the default otherwise)"},
        )
    ]
