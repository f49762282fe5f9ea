"""Any folder of class subfolders (`--data-dir PATH`).

Classes are numbered in natural sort order, as timm's image folders are, unless:

- `--data-option imagefolder.class_map=FILE` gives a text file of class names, one per line
  (as timm's `validate.py --class-map`): a folder named like line i is class i. Every folder
  must be in it.
- the folders are ImageNet wnids (`n01440764`): each is labelled with its ImageNet-1k index,
  so that a subset such as Imagenette is scored against the model's own classes. When they are
  not all 1000 the source's note says so.
"""

from __future__ import annotations

from pathlib import Path

import rbench

from . import imagenet

CLASS_MAP = "class_map"


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


def load(request: rbench.DataRequest) -> rbench.Source:
    if request.path is None:
        raise rbench.DataError("data set 'imagefolder' needs a folder: pass --data-dir PATH (or --data imagefolder=PATH)")
    folders, samples = rbench.list_class_folders(request.path)
    note = ""
    if CLASS_MAP in request.options:
        path = Path(request.options[CLASS_MAP]).expanduser()
        index = read_class_map(path)
        unmapped = [f for f in folders if f not in index]
        if unmapped:
            raise rbench.DataError(
                f"{request.path} has the class folder {unmapped[0]!r}, which is not in the class map {path} "
                f"({len(unmapped)} folder(s) missing from it); add it, or use the class map of this data set")
        note = f"classes numbered by the class map {path}: {len(folders)} of its {len(index)} classes"
    else:
        wnids = imagenet.synsets()
        index = imagenet.wnid_index()
        if not all(f in index for f in folders):
            index = {f: i for i, f in enumerate(folders)}
        elif len(folders) < len(wnids):
            note = (f"the {len(folders)} class folders are ImageNet wnids, not all {len(wnids)}: labelled with their "
                    "ImageNet-1k indices (pass --data-option imagefolder.class_map=FILE to number them otherwise)")
    samples = [(path, index[folders[i]]) for path, i in samples]
    return rbench.Source(name="imagefolder", root=request.path, samples=samples,
                         views=[rbench.ViewSpec(name="imagefolder")], note=note)


@rbench.hookimpl
def rbench_datasets():
    return [
        rbench.DatasetSpec(
            name="imagefolder",
            description="any folder with one subfolder of images per class (--data-dir)",
            load=load,
            data_dir=True,
            options={CLASS_MAP: "FILE: class names, one per line; a folder named like line i is class i "
                                "(as timm's validate.py --class-map)"},
        )
    ]
