"""Shape bias on model-vs-human's cue-conflict images (Geirhos et al., "ImageNet-trained CNNs are
biased towards texture", ICLR 2019; the `cue-conflict` set of bethgelab/model-vs-human).

1,280 images of 16 categories, each the shape of one category drawn with the texture of another
(or of the same), by style transfer. The published folder has one subfolder per shape category,
and each file is named `<shape><n>-<texture><m>.png` (`airplane1-bicycle2.png`: the shape of
airplane 1 with the texture of bicycle 2).

Scored as model-vs-human scores it: the 16-class decision is the category whose ImageNet classes
have the highest mean probability (softmax over the 1000 classes, averaged over each category's
classes: `ImageNetProbabilitiesTo16ClassesMapping`); over the images whose shape and texture
categories differ, a decision is a shape match or a texture match (or neither), and

    shape bias = shape matches / (shape matches + texture matches),   texture bias = 1 - shape bias.

The per-category shape bias is the same over the images of one shape category. The decision
needs every class's probability, so this source keeps its cells' full scores
(`Source.keep_scores`). Only rbench's public API is imported here; numpy only inside the score.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import rbench

NAME = "cue-conflict"

# model-vs-human's 16 categories (sorted, as its decision ranks them) and the ImageNet-1k classes
# each stands for (`HumanCategories.<category>_indices` of modelvshuman/helper/human_categories.py).
CATEGORY_CLASSES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90, 91, 92,
             93, 94, 95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138, 139, 140,
             141, 142, 143, 144, 145),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (*range(152, 192), *range(193, 204), *range(205, 227), *range(228, 242), *range(243, 251),
            *range(252, 258), 259, *range(261, 264), *range(265, 269)),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}
CATEGORIES = tuple(CATEGORY_CLASSES)
EXPECTED_IMAGES = 1280
# `<shape><n>-<texture><m>.<ext>`; model-vs-human reads the texture as the last `-` part of the
# name's last `_` part, digits removed (a prefix such as `0001_..._` is allowed).
FILE_NAME = re.compile(r"(?:.*_)?([a-z]+)\d+-([a-z]+)\d+\.[A-Za-z]+")

COLUMNS = ("model", "img_size", "top1", "top1_err", "top5", "top5_err", "shape_bias", "texture_bias",
           "shape_matches", "texture_matches", "conflict_count", "top1_16", "count",
           *(f"shape_bias_{category}" for category in CATEGORIES),
           "param_count", "crop_pct", "interpolation")


def sixteen_class_decision(scores):
    """Each sample's 16-class decision (an index into `CATEGORIES`) from its log-probabilities
    over the 1000 ImageNet classes `[n, 1000]`: the category with the highest mean probability
    over its classes. Of tied categories the last wins, as model-vs-human's flipped argsort
    picks it."""
    import numpy as np

    probabilities = np.exp(np.asarray(scores, dtype=np.float64))
    means = np.stack([probabilities[:, list(classes)].mean(axis=1) for classes in CATEGORY_CLASSES.values()],
                     axis=1)
    return len(CATEGORIES) - 1 - np.argmax(means[:, ::-1], axis=1)


class ShapeBiasScorer:
    """The shape-bias columns of a view, from its predictions' full scores.

    `shape` and `texture` map each source index to its image's shape and texture category
    (indices into `CATEGORIES`; string keys, as JSON keeps them). A bias is a plain ratio, empty
    where no image of the set is a shape or texture match; `top1_16` is the percent of images
    whose 16-class decision is their shape category, over every scored image.
    """

    def __init__(self, shape: dict[int, int], texture: dict[int, int]):
        self.shape = {str(index): category for index, category in shape.items()}
        self.texture = {str(index): category for index, category in texture.items()}

    def __call__(self, predictions: rbench.Predictions) -> dict[str, float]:
        import numpy as np

        if predictions.scores is None:
            raise rbench.DataError(f"{NAME}'s shape bias needs the full scores, and its predictions file has "
                                   f"none; run its cells again with --keep scores")
        decision = sixteen_class_decision(predictions.scores)
        keys = [str(int(i)) for i in predictions.indices]
        shape = np.fromiter((self.shape[k] for k in keys), dtype=np.int64, count=len(keys))
        texture = np.fromiter((self.texture[k] for k in keys), dtype=np.int64, count=len(keys))
        conflict = shape != texture
        shape_hit = conflict & (decision == shape)
        texture_hit = conflict & (decision == texture)
        n = len(keys)
        result = {**_bias(shape_hit, texture_hit), "conflict_count": int(conflict.sum()),
                  "top1_16": 100.0 * float((decision == shape).mean()) if n else math.nan, "count": n}
        for index, category in enumerate(CATEGORIES):
            mine = shape == index
            result[f"shape_bias_{category}"] = _bias(shape_hit & mine, texture_hit & mine)["shape_bias"]
        return result


def _bias(shape_hit, texture_hit) -> dict[str, float]:
    """Shape and texture bias of the matches given (NaN where there are none), and their counts."""
    shape, texture = int(shape_hit.sum()), int(texture_hit.sum())
    both = shape + texture
    return {"shape_bias": shape / both if both else math.nan, "texture_bias": texture / both if both else math.nan,
            "shape_matches": shape, "texture_matches": texture}


def load(request: rbench.DataRequest) -> rbench.Source:
    """The cue-conflict folder: one subfolder per shape category, `<shape><n>-<texture><m>.png`
    files; every image labelled with its shape category's ImageNet classes."""
    if request.path is None:
        raise rbench.DataError(f"where is {NAME}? pass --data-root ROOT (with ROOT/{NAME}) or --data {NAME}=PATH")
    root = Path(request.path)
    if not root.is_dir():
        raise rbench.DataError(f"{NAME} folder {root} does not exist; pass model-vs-human's cue-conflict folder "
                               f"with --data {NAME}=PATH")
    folders, listed = rbench.list_class_folders(root)
    unknown = [f for f in folders if f not in CATEGORY_CLASSES]
    if unknown:
        raise rbench.DataError(f"{root} has the folder {unknown[0]!r}, which is not one of the 16 categories; "
                               f"pass model-vs-human's cue-conflict folder (airplane/, bear/, ...)")
    missing = [c for c in CATEGORIES if c not in folders]
    if missing:
        raise rbench.DataError(f"{root} lacks the category folders {', '.join(missing)} (or they hold no images); "
                               f"{NAME} needs all 16 of model-vs-human's cue-conflict folders")
    samples, shape, texture = [], {}, {}
    for index, (path, folder) in enumerate(listed):
        match = FILE_NAME.fullmatch(Path(path).name)
        if match is None or match.group(2) not in CATEGORY_CLASSES:
            raise rbench.DataError(f"{path} is not named <shape><n>-<texture><m>.png with a texture among the "
                                   f"16 categories; pass model-vs-human's cue-conflict folder as published")
        category = folders[folder]
        samples.append((path, CATEGORY_CLASSES[category][0]))
        shape[index] = CATEGORIES.index(category)
        texture[index] = CATEGORIES.index(match.group(2))
    partial = len(samples) != EXPECTED_IMAGES
    if len(samples) > EXPECTED_IMAGES:
        raise rbench.DataError(f"{NAME} at {root} has {len(samples):,} images, more than the published "
                               f"{EXPECTED_IMAGES:,}; point --data {NAME}=PATH at the cue-conflict folder")
    if partial and not request.allow_partial:
        raise rbench.DataError(f"{NAME} at {root} is partial: {len(samples):,} of {EXPECTED_IMAGES:,} images; "
                               "complete it, or pass --allow-partial to score what is there")
    labels = [CATEGORY_CLASSES[CATEGORIES[shape[i]]] for i in range(len(samples))]
    view = rbench.ViewSpec(name=NAME, labels=labels, score=ShapeBiasScorer(shape, texture), columns=COLUMNS)
    return rbench.Source(name=NAME, root=root, samples=samples, views=[view], partial=partial, keep_scores=True,
                         note=f"partial: {len(samples):,} of {EXPECTED_IMAGES:,} images" if partial else "")


@rbench.hookimpl
def rbench_datasets():
    """The cue-conflict source: shape bias, texture bias and per-category shape bias."""
    return [rbench.DatasetSpec(
        name=NAME, load=load, default_folder=NAME, options={}, views={NAME: None},
        description="model-vs-human cue-conflict: 1,280 shape/texture conflict images, 16-class decision, "
                    "shape bias (keeps full scores)")]
