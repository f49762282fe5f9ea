"""A deterministic synthetic data set: real JPEG files in an image-folder layout.

Generated on first use into rbench's cache folder (or the folder given with
`--data synthetic=PATH`), so the real decode and transform path runs without any download.
The same parameters give the same pixels on every machine, so a machine that runs its cells
without the driver's disk (a Ray node) makes them again (`remake`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import rbench

CLASSES = 10
PER_CLASS = 10
MIN_SIDE, MAX_SIDE = 96, 192
VERSION = 1  # bump when the generator changes, so old caches are not reused


def _generate(target: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(VERSION)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a run killed halfway never leaves a partial folder.
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=target.parent))
    try:
        for c in range(CLASSES):
            folder = tmp / f"class_{c:03d}"
            folder.mkdir()
            hue = rng.uniform(0, 255, size=3)
            for i in range(PER_CLASS):
                h, w = rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2)
                yy, xx = np.mgrid[0:h, 0:w]
                stripes = 60 * np.sin((xx * (c + 1) + yy * (i + 1)) / 9.0)[..., None]
                noise = rng.normal(0, 25, size=(h, w, 3))
                pixels = np.clip(hue + stripes + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{i:04d}.jpg", quality=90)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _default_root() -> Path:
    return rbench.cache_dir() / "data" / f"synthetic-v{VERSION}-{CLASSES}x{PER_CLASS}"


def remake(source: rbench.Source) -> rbench.Source:
    """The listed source on a machine without its folder: the images made again, in this
    machine's cache folder when the listing names another's (else at the listed folder)."""
    import dataclasses

    listed = Path(source.root)
    root = _default_root() if listed.name == _default_root().name else listed
    if not root.is_dir():
        _generate(root)
    samples = [(str(root / Path(path).relative_to(listed)), label) for path, label in source.samples]
    return dataclasses.replace(source, root=root, samples=samples)


def load(request: rbench.DataRequest) -> rbench.Source:
    root = request.path or _default_root()
    if not root.is_dir():
        _generate(root)
    _, samples = rbench.list_class_folders(root)
    if len(samples) != CLASSES * PER_CLASS:
        raise rbench.DataError(
            f"synthetic data at {root} has {len(samples)} images, expected {CLASSES * PER_CLASS}; delete the folder to regenerate it"
        )
    return rbench.Source(name="synthetic", root=root, samples=samples, views=[rbench.ViewSpec(name="synthetic")])


@rbench.hookimpl
def rbench_datasets():
    return [
        rbench.DatasetSpec(
            name="synthetic",
            description=f"{CLASSES} classes x {PER_CLASS} generated JPEGs ({MIN_SIDE}-{MAX_SIDE} px), made on first use",
            load=load,
            options={},
            default=True,  # needs no folder: the embedded suite's and check-backend's data set
            remake=remake,  # deterministic: made again on a cluster node, never sent
        )
    ]
