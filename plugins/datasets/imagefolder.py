"""Any folder of class subfolders (`--data-dir PATH`); classes are numbered in natural sort order."""

from __future__ import annotations

import rbench


def load(request: rbench.DataRequest) -> rbench.Source:
    if request.path is None:
        raise rbench.DataError("data set 'imagefolder' needs a folder: pass --data-dir PATH (or --data imagefolder=PATH)")
    _, samples = rbench.list_class_folders(request.path)
    return rbench.Source(
        name="imagefolder", root=request.path, samples=samples, views=[rbench.ViewSpec(name="imagefolder")]
    )


@rbench.hookimpl
def rbench_datasets():
    return [
        rbench.DatasetSpec(
            name="imagefolder",
            description="any folder with one subfolder of images per class (--data-dir)",
            load=load,
            options={},
        )
    ]
