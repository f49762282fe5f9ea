"""An example rbench plugin: the `csvfolder` data set.

A flat folder of images plus a `labels.csv` with the header `filename,label`, where `label`
is an integer ImageNet class index:

    filename,label
    cat.jpg,281
    dog.jpg,207

Samples are scored in the order of `labels.csv`. Only `rbench`'s public API is imported here,
and nothing heavy: rbench imports this module whenever it loads its plugins.
"""

from __future__ import annotations

import csv
from pathlib import Path

import rbench

NAME = "csvfolder"
LABELS_FILE = "labels.csv"
HEADER = ["filename", "label"]


def read_labels(labels: Path) -> list[tuple[str, int]]:
    """`(filename, label)` rows of a labels.csv, in file order; `DataError` if malformed."""
    with open(labels, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows or [cell.strip() for cell in rows[0]] != HEADER:
        raise rbench.DataError(f"{labels} must start with the header line 'filename,label'; add it as its first line")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue  # blank line
        if len(row) != 2 or not row[0].strip() or not row[1].strip().isdigit():
            raise rbench.DataError(
                f"{labels} line {line}: expected 'filename,label' with an integer class index, got {','.join(row)!r}; fix that line"
            )
        entries.append((row[0].strip(), int(row[1])))
    if not entries:
        raise rbench.DataError(f"{labels} lists no images; add one 'filename,label' line per image")
    return entries


def load(request: rbench.DataRequest) -> rbench.Source:
    if request.path is None:
        raise rbench.DataError(
            f"data set '{NAME}' needs a folder: pass --data {NAME}=PATH (a folder of images with a {LABELS_FILE})"
        )
    root = Path(request.path)
    if not root.is_dir():
        raise rbench.DataError(
            f"data folder {root} does not exist; pass --data {NAME}=PATH with a folder of images and a {LABELS_FILE}"
        )
    labels = root / LABELS_FILE
    if not labels.is_file():
        raise rbench.DataError(
            f"{labels} is missing; the '{NAME}' data set needs a {LABELS_FILE} with the header 'filename,label' beside the images"
        )
    samples = [(str(root / name), label) for name, label in read_labels(labels)]
    missing = [path for path, _ in samples if not Path(path).is_file()]
    note = ""
    if missing and not request.allow_partial:
        raise rbench.DataError(
            f"{len(missing)} image(s) listed in {labels} are missing, first {missing[0]}; "
            "add them, remove their lines, or pass --allow-partial"
        )
    if missing:  # --allow-partial: score what is there
        gone = set(missing)
        samples = [s for s in samples if s[0] not in gone]
        note = f"partial: {len(missing)} listed image(s) missing"
        if not samples:
            raise rbench.DataError(f"none of the images listed in {labels} exist in {root}; check the folder")
    return rbench.Source(name=NAME, root=root, samples=samples, views=[rbench.ViewSpec(name=NAME)], note=note)


@rbench.hookimpl
def rbench_datasets():
    return [
        rbench.DatasetSpec(
            name=NAME,
            description=f"a flat folder of images plus {LABELS_FILE} (filename,label: ImageNet class index)",
            load=load,
            options={},  # the --data-option keys it reads, with a line each: none
        )
    ]
