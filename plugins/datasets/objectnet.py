"""ObjectNet (Barbu et al., "ObjectNet: A large-scale bias-controlled dataset for pushing the
limits of object recognition models", NeurIPS 2019), scored as its authors' evaluation code
(objectnet-template-pytorch) scores it, and ImageNet val on the same classes
(`val-on-objectnet-classes`, as imagenet-testbed defines it) for its effective robustness.

- The published `objectnet-1.0/images/<class folder>/*.png` layout: the images of the 113
  classes that overlap ImageNet are scored (the other 200 folders are known and left out).
- Every image has a 2-pixel frame cut off each side before the model's transform (ObjectNet's
  images carry a red border; both references crop 2 pixels): `Source.border`.
- The model predicts over all 1000 ImageNet classes; each ImageNet class maps to at most one
  ObjectNet class (several ImageNet classes to one: `alarm_clock` is analog or digital clock), and
  an image is right at top-k when one of the model's k best ImageNet classes maps to its class.
  Its label is therefore the set of ImageNet classes of its ObjectNet class.
- `val-on-objectnet-classes`: the 50 val images of each of the 125 ImageNet classes that map to
  ObjectNet (6,250), with the logits restricted to those 125 classes (imagenet-testbed's
  restriction), each labelled with the set of its ObjectNet class and counted as ObjectNet is.
  Its top-1 equals imagenet-testbed's; its top-5 counts the five best ImageNet classes, as
  ObjectNet's top-5 does. Added over the stored predictions of an `imagenet` run: its class
  restriction needs that run's full scores (`rbench run --keep scores`).

The class mapping is data (`objectnet_classes`); only `rbench`'s public API is imported.
"""

from __future__ import annotations

from pathlib import Path

import rbench

from .objectnet_classes import FOLDER_TO_IMAGENET, OTHER_FOLDERS

NAME = "objectnet"
VAL_VIEW = "val-on-objectnet-classes"
BORDER = 2  # pixels cropped off each side before the model's transform, as both references do
# The ImageNet-1k classes that map to ObjectNet, ascending (125), and each one's label set: the
# ImageNet classes of its ObjectNet class.
CLASSES = tuple(sorted(c for ids in FOLDER_TO_IMAGENET.values() for c in ids))
GROUP_OF: dict[int, tuple[int, ...]] = {c: ids for ids in FOLDER_TO_IMAGENET.values() for c in ids}
HINT = "pass the published objectnet-1.0 folder (with images/<class folders>) via --data objectnet=PATH"


def images_folder(request: rbench.DataRequest) -> Path:
    """The `images/` folder of the `objectnet-1.0` folder the user named (or that folder itself
    when it is `images/`)."""
    if request.path is None:
        raise rbench.DataError("where is objectnet? pass --data-root ROOT (with ROOT/objectnet-1.0) "
                               "or --data objectnet=PATH")
    root = Path(request.path)
    if not root.is_dir():
        raise rbench.DataError(f"objectnet folder {root} does not exist; {HINT}")
    if (root / "images").is_dir():
        return root / "images"
    if any((root / folder).is_dir() for folder in FOLDER_TO_IMAGENET):
        return root
    raise rbench.DataError(f"{root} has no images/ folder; {HINT}")


def load(request: rbench.DataRequest) -> rbench.Source:
    images = images_folder(request)
    folders, listed = rbench.list_class_folders(images)
    unknown = [f for f in folders if f not in FOLDER_TO_IMAGENET and f not in OTHER_FOLDERS]
    if unknown:
        raise rbench.DataError(f"{images} has the folder {unknown[0]!r}, which is not an ObjectNet class; {HINT}")
    missing = sorted(set(FOLDER_TO_IMAGENET) - set(folders))
    if missing and not request.allow_partial:
        raise rbench.DataError(f"{images} lacks {len(missing)} of ObjectNet's 113 scored class folders "
                               f"({missing[0]!r} first); {HINT}, or --allow-partial")
    # A sample's class index is the first ImageNet class of its ObjectNet class (the label set is the view's).
    samples = [(path, FOLDER_TO_IMAGENET[folders[i]][0]) for path, i in listed if folders[i] in FOLDER_TO_IMAGENET]
    if not samples:
        raise rbench.DataError(f"{images} has no image in ObjectNet's 113 scored class folders; {HINT}")
    labels = [GROUP_OF[label] for _, label in samples]
    partial = bool(missing)
    note = f"partial ObjectNet: {len(missing)} of its 113 scored classes missing" if partial else ""
    return rbench.Source(name=NAME, root=images, samples=samples, views=[rbench.ViewSpec(name=NAME, labels=labels)],
                         partial=partial, note=note, border=BORDER, identity=f"objectnet border {BORDER}")


def val_views(source: rbench.Source) -> list[rbench.ViewSpec]:
    """The val images of the ImageNet classes that map to ObjectNet, scored over those classes
    with their ObjectNet class's label set."""
    chosen = [i for i, (_, label) in enumerate(source.samples) if label in GROUP_OF]
    if not chosen:
        return []
    return [rbench.ViewSpec(name=VAL_VIEW, samples=chosen, classes=CLASSES,
                            labels=[GROUP_OF[source.samples[i][1]] for i in chosen])]


@rbench.hookimpl
def rbench_added_views():
    return [rbench.AddedViews(name=VAL_VIEW, source="imagenet", make=val_views, views={VAL_VIEW: None},
                              description="ImageNet val on ObjectNet's 125 ImageNet classes, scored as ObjectNet "
                                          "is (needs the imagenet run's --keep scores)")]


@rbench.hookimpl
def rbench_datasets():
    return [rbench.DatasetSpec(name=NAME, load=load, default_folder="objectnet-1.0", options={},
                               views={NAME: "imagenet"},
                               description="ObjectNet 1.0: its 113 ImageNet classes (PNGs), 2-pixel border "
                                           "cropped, top-k of the 1000 ImageNet classes mapped to ObjectNet's")]
