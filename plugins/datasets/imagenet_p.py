"""ImageNet-P: prediction stability under perturbation sequences (Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019).

Each chosen ImageNet val image becomes, per perturbation, a sequence of frames (31; 41 for
translate) in which the perturbation changes gradually; a model is scored by how often its
top-1 flips between compared frames (Flip Probability, FP) and how far its top-5 ranking
moves (Top-5 Distance, T5D).

`-d imagenet-p` on an ImageNet val folder (`<wnid>/*.JPEG`) makes the sequences as the
authors' `make_imagenet_p.py` makes them (`frames`), once, on disk, as lossless PNG frames
(see `build`), and lists every frame as a sample, the frames of a sequence consecutive. Every
model reads them through its own eval transform. The published set is x264 video, which no
current encoder reproduces bit for bit (and whose noise sequences were never seeded); the
frames here are the pixels before that encoding, kept lossless so that they are exactly what
`frames` returns.

Data options (`--data-option imagenet-p.KEY=VALUE`): `per_class` (val images per class,
default 1), `class_step` (every n-th class, default 6: 167 classes, so about 52,000 frames, an
ImageNet val pass), `perturbations` (comma-separated subset), `difficulty` (1, 2 or 3: the
stronger noise of the noise perturbations, the step between compared frames of the others),
`reference` (a CSV of per-perturbation FP and T5D to normalise by: mFR and mT5D), `build_dir`
and `build_workers`.

Only `rbench`'s public API is imported here (and the sibling ImageNet-C plugin's helpers),
and numpy/torch/OpenCV only inside functions.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import rbench

from . import imagenet_c

PERTURBATIONS = ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow",
                 "brightness", "translate", "rotate", "tilt", "scale")
NOISES = ("gaussian_noise", "shot_noise")
DIFFICULTIES = (1, 2, 3)
GAUSSIAN_SIGMA = {1: 0.03, 2: 0.05, 3: 0.08}
SHOT_LAMBDA = {1: 300, 2: 120, 3: 60}
CROP = 224
DEFAULT_PER_CLASS = 1
DEFAULT_CLASS_STEP = 6
SEED_SCHEME = "sha256(key, perturbation, noise level) v1; torch and numpy global generators"
# Bump with any change of the made frames' pixels: it names the build folder.
BUILD_VERSION = "p1"
INSTALL_HINT = "pip install 'rbench[corruptions]'"


def frame_count(perturbation: str) -> int:
    """Frames in one sequence: 41 for translate, 31 for the others."""
    return 41 if perturbation == "translate" else 31


def is_noise(perturbation: str) -> bool:
    """Noise sequences compare every frame with the first (clean) one; the others compare
    frames `difficulty` apart."""
    return "noise" in perturbation


# --- the frames ----------------------------------------------------------------------------

def _center_crop(pixels):
    """torchvision's CenterCrop(224) of an `[H, W, C]` array: the top-left corner at the
    rounded half of the margins."""
    h, w = pixels.shape[:2]
    top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
    return pixels[top:top + CROP, left:left + CROP]


def _affine(image, interpolation: str, angle: float = 0.0, translate=(0, 0), scale: float = 1.0):
    """torchvision's `functional.affine` of the whole (256-side) PIL image, zero fill, then
    its centre 224 crop, as uint8 `[224, 224, 3]`."""
    import numpy as np
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    mode = InterpolationMode.BILINEAR if interpolation == "bilinear" else InterpolationMode.NEAREST
    moved = F.affine(image, angle=angle, translate=list(translate), scale=scale, shear=[0.0], interpolation=mode)
    return _center_crop(np.asarray(moved, dtype=np.uint8))


def _gaussian_noise(crop, difficulty):
    import numpy as np
    import torch

    # ToTensor: CHW float32 in [0, 1], contiguous; ToPILImage: x 255, truncated to uint8.
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).contiguous().float().div(255)
    sigma = GAUSSIAN_SIGMA[difficulty]
    out = [x.mul(255).byte()]
    for _ in range(1, 31):
        out.append(torch.clamp(x + sigma * torch.randn_like(x), 0, 1).mul(255).byte())
    return np.stack([t.permute(1, 2, 0).numpy() for t in out])


def _shot_noise(crop, difficulty):
    import numpy as np

    lam = SHOT_LAMBDA[difficulty]
    x = np.asarray(crop, dtype=np.uint8) / 255.0
    out = [np.asarray(crop, dtype=np.uint8)]
    for _ in range(1, 31):
        out.append(np.uint8(255 * np.clip(np.random.poisson(x * lam) / lam, 0, 1)))
    return np.stack(out)


def _motion_blur(crop):
    import numpy as np

    from . import corruptions

    return np.stack([corruptions._magick_motion_blur(crop, 10, 3, (i - 30) * 4) for i in range(31)])


def _zoom_blur(image):
    import numpy as np
    import torch

    def tensor(pixels):
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous().float().div(255)

    crop = _center_crop(np.asarray(image, dtype=np.uint8))
    total = tensor(crop)
    out = [crop]
    for i in range(1, 31):
        total += tensor(_affine(image, "bilinear", scale=1 + 0.004 * i))
        out.append((total / (i + 1)).mul(255).byte().permute(1, 2, 0).numpy())
    return np.stack(out)


def _snow(crop):
    import cv2
    import numpy as np

    from . import corruptions

    x = np.asarray(crop, dtype=np.uint8) / 255.0
    layer = np.random.normal(size=(CROP, CROP), loc=0.05, scale=0.3)
    layer = corruptions._clipped_zoom(layer[..., None], 3)
    layer[layer < 0.5] = 0
    flakes = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
    gray = cv2.cvtColor(np.float32(x), cv2.COLOR_RGB2GRAY).reshape(CROP, CROP, 1)
    z = 0.85 * x + (1 - 0.85) * np.maximum(x, gray * 1.5 + 0.5)
    out = []
    for i in range(31):
        moving = (corruptions._magick_motion_blur(flakes, 14, 4, i * 4 - 150) / 255.0)[..., None]
        out.append(np.uint8(np.clip(z + moving + np.rot90(moving, k=2), 0, 1) * 255))
    return np.stack(out)


def _brightness(crop):
    import numpy as np
    from skimage.color import hsv2rgb, rgb2hsv

    out = []
    for i in range(31):
        hsv = rgb2hsv(np.asarray(crop, dtype=np.uint8) / 255.0)
        hsv[:, :, 2] = np.clip(hsv[:, :, 2] + (i - 15) * 2 / 100.0, 0, 1)
        out.append(np.uint8(hsv2rgb(hsv) * 255))
    return np.stack(out)


def _tilt(image):
    import cv2
    import numpy as np

    x = np.asarray(image, dtype=np.uint8)
    h, w = x.shape[:2]
    f = np.sqrt(w ** 2 + h ** 2)
    lift = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    push = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    project = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    out = []
    for i in range(31):
        a = np.deg2rad(i - 15)
        c, s = np.cos(a), np.sin(a)
        about_x = np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]])
        about_y = np.array([[c, 0, -s, 0], [0, 1, 0, 0], [s, 0, c, 0], [0, 0, 0, 1]])
        matrix = project @ push @ about_x @ about_y @ lift
        out.append(_center_crop(cv2.warpPerspective(x, matrix, (w, h))))
    return np.stack(out)


def frames(image, perturbation: str, difficulty: int = 1):
    """The ImageNet-P sequence of one image, as the reference's `make_imagenet_p.py` makes it,
    before any video encoding: a uint8 `[T, 224, 224, 3]` array (T = 31, 41 for translate).

    `image` is the PIL image after the reference's per-image step,
    `torchvision.transforms.Resize(256)(PIL.Image.open(path)).convert('RGB')` (short side
    256). The noises, motion_blur, snow and brightness perturb its 224 centre crop; translate,
    rotate, scale, tilt and each zoom of zoom_blur transform the whole image (so content from
    outside the crop moves in) and crop afterwards. `perturbation` is one of `PERTURBATIONS`.

    `difficulty` (1..3) changes only the noises (gaussian_noise sigma 0.03 / 0.05 / 0.08,
    shot_noise lambda 300 / 120 / 60); for the others it is the step between the frames a
    score compares, not a property of the frames.

    Random draws come from the generators the reference uses, in its order: gaussian_noise
    from torch's global generator (one `randn_like` of the CHW crop per frame 1..30), shot_noise
    from numpy's global legacy generator (one Poisson draw per frame), snow from numpy's
    (one normal draw of the snow layer per sequence). So `torch.manual_seed(s)` /
    `np.random.seed(s)` before the call gives the reference's pixels after the same seed.
    Frame 0 of the noises is the clean crop; brightness, translate and rotate pass through the
    clean crop in their middle frame (15; 20 for translate), up to brightness's HSV round trip.
    Needs `rbench[corruptions]` (scikit-image, OpenCV).
    """
    import numpy as np

    if perturbation not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {perturbation!r}; choose from {', '.join(PERTURBATIONS)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty {difficulty!r}: choose 1, 2 or 3")
    image = image.convert("RGB")
    if min(image.size) < CROP:
        raise ValueError(f"frames takes the image after Resize(256), not one of size {image.size}")
    crop = _center_crop(np.asarray(image, dtype=np.uint8))
    if perturbation == "gaussian_noise":
        return _gaussian_noise(crop, difficulty)
    if perturbation == "shot_noise":
        return _shot_noise(crop, difficulty)
    if perturbation == "motion_blur":
        return _motion_blur(crop)
    if perturbation == "zoom_blur":
        return _zoom_blur(image)
    if perturbation == "snow":
        return _snow(crop)
    if perturbation == "brightness":
        return _brightness(crop)
    if perturbation == "translate":
        return np.stack([_affine(image, "nearest", translate=(i - 20, 0)) for i in range(41)])
    if perturbation == "rotate":
        return np.stack([_affine(image, "bilinear", angle=i - 15) for i in range(31)])
    if perturbation == "scale":
        return np.stack([_affine(image, "bilinear", scale=(i * 2.5 + 40) / 100.0) for i in range(31)])
    return _tilt(image)


def resize256(image):
    """torchvision's `Resize(256)` of a PIL image (PIL bilinear, short side 256, long side
    `int(256 * long / short)`), then RGB: the reference's per-image step."""
    from PIL import Image

    w, h = image.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    return image.resize(size, Image.BILINEAR).convert("RGB")


# --- the scores, as the reference's test.py computes them ----------------------------------

def compared_pairs(frames_in_sequence: int, noise: bool, difficulty: int = 1) -> list[tuple[int, int]]:
    """The frame pairs `(a, b)` one sequence's scores compare: for a noise sequence every frame
    with the first, clean one, `(0, j)`; otherwise each frame with the one `difficulty` later,
    `(j, j + difficulty)` (test.py walks the sub-sequences `i, i + d, i + 2d, ...` and compares
    neighbours, which is this set of pairs)."""
    if noise:
        return [(0, j) for j in range(1, frames_in_sequence)]
    return [(j, j + difficulty) for j in range(frames_in_sequence - difficulty)]


def top5_ordinal(logits):
    """The five best classes of each row of `logits` (`[..., C]`), best first, ties broken by
    class order (the lower index ranks higher): scipy's `rankdata(-logits, method='ordinal')`
    as test.py ranks, and `argmax` for the first."""
    import numpy as np

    return np.argsort(-np.asarray(logits), axis=-1, kind="stable")[..., :5]


def pair_top5_distance(first, second) -> int:
    """test.py's top-5 distance between two frames from their top-5 classes (best first):
    `sum over k < 5 of |k - min(rank of first[k] in the second frame - 1, 5)|`, a class
    outside the second frame's top 5 counting as rank 6."""
    position = {int(c): k for k, c in enumerate(list(second)[:5])}
    return sum(abs(k - position.get(int(c), 5)) for k, c in enumerate(list(first)[:5]))


def flip_probability(top1, noise: bool, difficulty: int = 1) -> float:
    """test.py's Flip Probability of `top1` (`[sequences, T]` predicted classes): per sequence
    the fraction of its compared pairs whose top-1 differs, then the mean over sequences."""
    import numpy as np

    top1 = np.asarray(top1)
    pairs = compared_pairs(top1.shape[1], noise, difficulty)
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return float(np.mean(np.mean(top1[:, a] != top1[:, b], axis=1)))


def top5_distance(top5, noise: bool, difficulty: int = 1) -> float:
    """test.py's Top-5 Distance of `top5` (`[sequences, T, 5]` classes, best first): per
    sequence the mean `pair_top5_distance` over its compared pairs, then the mean over
    sequences."""
    import numpy as np

    top5 = np.asarray(top5)[..., :5]
    pairs = compared_pairs(top5.shape[1], noise, difficulty)
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    first, second = top5[:, a, None, :], top5[:, b, :, None]  # [S, P, 1, 5] and [S, P, 5, 1]
    match = first == second  # [S, P, j, k]: second's j-th is first's k-th
    found = match.any(axis=2)
    position = np.where(found, match.argmax(axis=2), 5)  # rank - 1 in the second frame, capped at 5
    distance = np.abs(position - np.arange(5)).sum(axis=2)  # [S, P]
    return float(np.mean(np.mean(distance, axis=1)))
