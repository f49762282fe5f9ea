"""ImageNet-P: prediction stability under perturbation sequences (Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019).

Each chosen ImageNet val image becomes, per perturbation, a sequence of frames (31; 41 for
translate) in which the perturbation changes gradually; a model is scored by how often its
top-1 flips between compared frames (Flip Probability, FP) and how far its top-5 ranking
moves (Top-5 Distance, T5D).

`-d imagenet-p` on an ImageNet val folder (`<wnid>/*.JPEG`) makes the sequences as the
authors' `make_imagenet_p.py` makes them (`frames`), once, on disk, as lossless PNG frames
(made by the cells that read them, a sequence kind at a time: `SequenceTasks`), and lists
every frame as a sample, the frames of a sequence consecutive. Every
model reads them through its own eval transform. The published set is x264 video, which no
current encoder reproduces bit for bit (and whose noise sequences were never seeded); the
frames here are the pixels before that encoding, kept lossless so that they are exactly what
`frames` returns.

`-d imagenet-p --data imagenet-p=PATH` on the published folder (`<perturbation>/<wnid>/<name>.mp4`,
told by its layout) decodes each video once with PyAV (`rbench[video]`) into the same PNG
layout and scores it the same way.

Data options (`--data-option imagenet-p.KEY=VALUE`): `per_class` (val images per class,
default 1), `class_step` (every n-th class, default 6: 167 classes, so about 52,000 frames, an
ImageNet val pass), `perturbations` (comma-separated subset), `difficulty` (1, 2 or 3: the
stronger noise of the noise perturbations, the step between compared frames of the others),
`reference` (a CSV of per-perturbation FP and T5D to normalise by: mFR and mT5D), `build_dir`
and `build_workers`; and the report option `reference_model` (mFR and mT5D against a model of
the same store, applied by `report_rows` when the files are written, never part of the listing).

Only `rbench`'s public API is imported here (and the imagenet plugin's class list and the shared
corruption functions), and numpy/torch/OpenCV only inside functions.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import rbench

from . import imagenet, reference

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
BUILD_VERSION = "p2"
# The files a build writes (its marker says so: `rbench cache clear` removes these and no others).
BUILD_FILES = ("*.png", "build.json", ".*.tmp")
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

    return np.stack([corruptions.magick_motion_blur(crop, 10, 3, (i - 30) * 4) for i in range(31)])


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
    layer = corruptions.clipped_zoom(layer[..., None], 3)
    layer[layer < 0.5] = 0
    flakes = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
    gray = cv2.cvtColor(np.float32(x), cv2.COLOR_RGB2GRAY).reshape(CROP, CROP, 1)
    z = 0.85 * x + (1 - 0.85) * np.maximum(x, gray * 1.5 + 0.5)
    out = []
    for i in range(31):
        moving = (corruptions.magick_motion_blur(flakes, 14, 4, i * 4 - 150) / 255.0)[..., None]
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


def _inverse3(m):
    """cv::invert's 3x3 inverse (DECOMP_LU, which for n <= 3 is the adjugate over the
    determinant), in its order of operations."""
    import numpy as np

    d = (m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
         - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
         + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]))
    d = 1.0 / d
    return np.array([
        [(m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]) * d, (m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2]) * d,
         (m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]) * d],
        [(m[1, 2] * m[2, 0] - m[1, 0] * m[2, 2]) * d, (m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0]) * d,
         (m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]) * d],
        [(m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]) * d, (m[0, 1] * m[2, 0] - m[0, 0] * m[2, 1]) * d,
         (m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]) * d],
    ])


def _warp_perspective(x, matrix):
    """`cv2.warpPerspective(x, matrix, (w, h))` of a uint8 `[h, w, C]` image as OpenCV 3.4 to 4.x
    computes it (bilinear, zero border), bit for bit, on any CPU.

    OpenCV 5 replaced this fixed-point warp with a floating-point one whose pixels differ by up
    to several grey levels, and by 1 between CPUs (its IPP and SIMD paths); the reference's 2018
    runs predate it. The steps: invert the matrix (`cv::invert`); map each output pixel in
    double, in blocks 64 columns wide, each row of a block summed from the block's first column;
    round the source position to 1/32 pixel (`saturate_cast<int>`, ties to even); weigh the four
    neighbours in 1/32768 (neighbours outside the image are 0); round half up."""
    import numpy as np

    h, w = x.shape[:2]
    m = _inverse3(np.asarray(matrix, dtype=np.float64)).ravel()
    rows = min(16, h)  # OpenCV's block: BLOCK_SZ^2 = 1024 pixels, 16 rows high
    width = min(1024 // rows, w)
    col = np.arange(w)
    start, step = (col - col % width).astype(np.float64), (col % width).astype(np.float64)
    row = np.arange(h, dtype=np.float64)[:, None]
    x0 = m[0] * start + m[1] * row + m[2]
    y0 = m[3] * start + m[4] * row + m[5]
    w0 = m[6] * start + m[7] * row + m[8]
    denominator = w0 + m[6] * step
    scale = np.where(denominator != 0, 32 / np.where(denominator != 0, denominator, 1), 0)
    limit = np.iinfo(np.int32)
    fx = np.rint(np.clip((x0 + m[0] * step) * scale, limit.min, limit.max)).astype(np.int64)
    fy = np.rint(np.clip((y0 + m[3] * step) * scale, limit.min, limit.max)).astype(np.int64)
    sx, sy = np.clip(fx >> 5, -32768, 32767), np.clip(fy >> 5, -32768, 32767)
    tx, ty = (fx & 31)[..., None], (fy & 31)[..., None]

    def at(dy, dx):
        yy, xx = sy + dy, sx + dx
        inside = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w))[..., None]
        return np.where(inside, x[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0).astype(np.int64)

    # OpenCV's weight table is exact for 1/32 steps: (32 - t) t products times 32 (for fraction
    # 0 it stores 32767 and 1 on the far corner, which rounds to the same pixel).
    total = (at(0, 0) * ((32 - ty) * (32 - tx) * 32) + at(0, 1) * ((32 - ty) * tx * 32)
             + at(1, 0) * (ty * (32 - tx) * 32) + at(1, 1) * (ty * tx * 32))
    return ((total + (1 << 14)) >> 15).astype(np.uint8)


def _tilt(image):
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
        out.append(_center_crop(_warp_perspective(x, matrix)))
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
    tilt's `cv2.warpPerspective` is OpenCV 3.4-4.x's, reimplemented (`_warp_perspective`), so its
    frames do not depend on the installed OpenCV or the CPU.
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


# --- the build: the frames, once on disk ---------------------------------------------------

def sequence_name(perturbation: str, difficulty: int) -> str:
    """The folder of a sequence kind: the reference's `<noise>_<d>` for the stronger noises,
    the perturbation's name otherwise (the frames of the others do not depend on d)."""
    return f"{perturbation}_{difficulty}" if is_noise(perturbation) and difficulty > 1 else perturbation


def sequence_seed(key: str, perturbation: str, difficulty: int) -> int:
    """The seed of one made sequence, from its val key (`wnid/file`) and its kind: every
    machine and every model gets the same frames."""
    digest = hashlib.sha256(f"{key}\0{sequence_name(perturbation, difficulty)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def made_frames(source_path: str, key: str, perturbation: str, difficulty: int):
    """The frames of one made sequence: the val file resized as the reference resizes it,
    both global generators seeded from `key`, `frames`."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(source_path) as image:
        resized = resize256(image)
    seed = sequence_seed(key, perturbation, difficulty)
    torch.manual_seed(seed)
    np.random.seed(seed)
    return frames(resized, perturbation, difficulty)


def frame_file(folder: Path, i: int) -> Path:
    return folder / f"{i:02d}.png"


def write_sequence(pixels, final: Path) -> None:
    """A sequence's frames as PNG files in `final`, written into a temporary folder renamed into
    place: a stopped build leaves whole sequences only."""
    import shutil

    from PIL import Image

    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, frame in enumerate(pixels):
        try:
            Image.fromarray(frame).save(frame_file(tmp, i), format="PNG")
        except OSError as exc:
            if exc.filename is None:  # a write that found the disk full names no file: name it
                raise OSError(exc.errno, exc.strerror or str(exc), str(frame_file(tmp, i))) from exc
            raise
    try:
        os.replace(tmp, final)
    except OSError:  # made meanwhile by another build
        shutil.rmtree(tmp, ignore_errors=True)


def _build_sequence(task: tuple[str, str, str, int, str]) -> int:
    """One sequence written as PNG frames into a temporary folder, renamed into place whole;
    returns the frames written (0 for an unreadable val image). Runs in the build's workers."""
    source_path, key, perturbation, difficulty, target = task
    try:
        pixels = made_frames(source_path, key, perturbation, difficulty)
    except (OSError, SyntaxError, ValueError):  # PIL's errors for unreadable files; too small an image
        return 0
    write_sequence(pixels, Path(target))
    return len(pixels)


def _worker_setup() -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)  # the processes are the parallelism
    torch.set_num_threads(1)


class SequenceTasks:
    """The work left in slices of an ImageNet-P build (`rbench.SourceBuild.tasks`): a slice is a
    sequence kind's folder (`sequence_name`), a task one sequence `(source path, key,
    perturbation, difficulty, target folder)` not made yet. Its attributes are JSON data, kept in
    the store's listing: every sequence of the build, by slice."""

    def __init__(self, by_slice: dict[str, list[tuple[str, str, str, int, str]]]):
        self.by_slice = {name: [list(task) for task in tasks] for name, tasks in by_slice.items()}

    def __call__(self, slices: Sequence[str]) -> list[tuple[tuple, int]]:
        return [(tuple(task), frame_count(task[2])) for name in slices for task in self.by_slice[name]
                if not Path(task[4]).is_dir()]


def _source_build(folder: Path, by_slice: dict[str, list], starts: dict[str, tuple[int, int]], workers: int | None,
                  make, verb: str, about: dict) -> rbench.SourceBuild:
    """The build of an ImageNet-P source: made by the cells that read it, a sequence kind at a
    time (`SequenceTasks`), never by the plan."""
    return rbench.SourceBuild(
        folder=folder, slices=[(name, *starts[name]) for name in by_slice], tasks=SequenceTasks(by_slice), make=make,
        setup=_worker_setup, workers=workers, files=BUILD_FILES, about=about,
        label=f"imagenet-p: {verb} {{tasks:,}} sequences ({{files:,}} PNG frames) in {{folder}}")


# --- the view's scores ---------------------------------------------------------------------

def fp_column(perturbation: str) -> str:
    return f"{perturbation}_fp"


def t5d_column(perturbation: str) -> str:
    return f"{perturbation}_t5d"


class StabilityScorer:
    """The imagenet-p view's columns from the stored top-5 of every frame.

    `blocks` are `(perturbation, first sample, sequences, frames per sequence)`, the frames of
    each sequence consecutive. Per perturbation: `<p>_fp`, the flip probability in percent,
    and `<p>_t5d`, the top-5 distance; `flip_prob` and `top5_dist` their means over the
    perturbations; with `reference` (`{perturbation: (flip_prob, top5_dist)}`, in the same
    units) `mfr` and `mt5d`, 100 x the mean over perturbations of the ratio to the reference's.
    A sequence with a frame missing (unreadable) is left out; `sequences` counts those scored.
    """

    def __init__(self, blocks: Sequence[tuple[str, int, int, int]], difficulty: int,
                 reference: dict[str, tuple[float, float]] | None = None):
        self.blocks = list(blocks)
        self.difficulty = difficulty
        self.reference = reference

    def __call__(self, predictions: rbench.Predictions) -> dict[str, float]:
        import numpy as np

        nan = float("nan")
        indices = np.asarray(predictions.indices, dtype=np.int64)
        topk = np.asarray(predictions.topk)
        result: dict[str, float] = {}
        fps, t5ds, ratios_fp, ratios_t5d = [], [], [], []
        scored = 0
        for perturbation, start, count, length in self.blocks:
            inside = (indices >= start) & (indices < start + count * length)
            top5 = np.full((count, length, 5), -1, dtype=np.int64)
            seen = np.zeros((count, length), dtype=bool)
            offset = indices[inside] - start
            top5[offset // length, offset % length] = topk[inside][:, :5]
            seen[offset // length, offset % length] = True
            whole = seen.all(axis=1)
            scored += int(whole.sum())
            if not whole.any():
                result[fp_column(perturbation)] = result[t5d_column(perturbation)] = nan
                continue
            noise = is_noise(perturbation)
            fp = 100.0 * flip_probability(top5[whole, :, 0], noise, self.difficulty)
            t5d = top5_distance(top5[whole], noise, self.difficulty)
            result[fp_column(perturbation)], result[t5d_column(perturbation)] = fp, t5d
            fps.append(fp)
            t5ds.append(t5d)
            if self.reference is not None:
                ref_fp, ref_t5d = self.reference[perturbation]
                ratios_fp.append(fp / ref_fp if ref_fp else nan)
                ratios_t5d.append(t5d / ref_t5d if ref_t5d else nan)
        complete = len(fps) == len(self.blocks)
        result["flip_prob"] = sum(fps) / len(fps) if fps and complete else nan
        result["top5_dist"] = sum(t5ds) / len(t5ds) if t5ds and complete else nan
        result["mfr"] = 100.0 * sum(ratios_fp) / len(ratios_fp) if ratios_fp and complete else nan
        result["mt5d"] = 100.0 * sum(ratios_t5d) / len(ratios_t5d) if ratios_t5d and complete else nan
        result["sequences"] = scored
        return result


# --- normalised by a model of the store (a report option) -----------------------------------

NORMALISED = "mfr and mt5d"


def report_rows(request: rbench.ReportRequest) -> tuple[list[dict], list[str]]:
    """The imagenet-p rows with `mfr` and `mt5d` normalised by the `reference_model` of the same
    store instead of a reference CSV: 100 x the mean, over the perturbations that both the row
    and the reference ran (a note names a row that ran others too), of `<p>_fp / reference <p>_fp`
    (and `<p>_t5d / reference <p>_t5d`); empty where a reference value is 0."""
    name, found, notes = reference.reference_rows(request, "imagenet-p", NORMALISED)
    if "reference" in request.options:
        notes.append(f"imagenet-p: {NORMALISED} against {name} (imagenet-p.{reference.OPTION}), not the "
                     "imagenet-p.reference CSV")
    for ref in found.values():
        zero = [p for p in PERTURBATIONS if ref.get(fp_column(p)) == 0 or ref.get(t5d_column(p)) == 0]
        if zero:
            notes.append(f"imagenet-p: {name} at {ref['img_size']} px never flips on {zero[0]}: {NORMALISED} against "
                         "it are empty")
    rows = []
    for row in request.rows:
        ref = reference.reference_for(found, row, name, "imagenet-p", NORMALISED, notes)
        if ref is None:
            rows.append({**row, "mfr": None, "mt5d": None})
            continue
        shared = reference.shared_runs(row, ref, PERTURBATIONS, fp_column, "perturbations", name, "imagenet-p",
                                       NORMALISED, notes)
        values = {column: [reference.ratio(reference.number(row.get(column(p))), reference.number(ref.get(column(p))))
                           for p in shared] for column in (fp_column, t5d_column)}
        rows.append({**row, "mfr": 100.0 * reference.mean(values[fp_column]),
                     "mt5d": 100.0 * reference.mean(values[t5d_column])})
    return rows, notes


# --- options, folders, the source ----------------------------------------------------------

def check_library() -> None:
    """Raise a one-line `UnavailableError` when the corruptions extra is not installed."""
    missing = [m for m in ("scipy", "skimage", "cv2", "torchvision") if importlib.util.find_spec(m) is None]
    if missing:
        raise rbench.UnavailableError(f"imagenet-p needs {', '.join(missing)}: {INSTALL_HINT}")


def read_reference(path: Path, perturbations: Sequence[str]) -> dict[str, tuple[float, float]]:
    """The normalisers of mFR and mT5D: a CSV with a header `perturbation,flip_prob,top5_dist`
    and one row per perturbation (flip_prob in percent, as in results-imagenet-p.csv)."""
    where = f"--data-option imagenet-p.reference={path}"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise rbench.DataError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error):
        raise rbench.DataError(f"{where}: not a CSV file") from None
    needed = ("perturbation", "flip_prob", "top5_dist")
    if not rows or any(c not in rows[0] for c in needed):
        raise rbench.DataError(f"{where}: needs the columns {','.join(needed)} and one row per perturbation")
    reference: dict[str, tuple[float, float]] = {}
    for row in rows:
        try:
            values = (float(row["flip_prob"]), float(row["top5_dist"]))
            if not all(v > 0 for v in values):
                raise ValueError
        except (TypeError, ValueError):
            raise rbench.DataError(f"{where}: the row of {row['perturbation']!r} needs positive numbers "
                                   "flip_prob and top5_dist") from None
        reference[(row["perturbation"] or "").strip()] = values
    missing = [p for p in perturbations if p not in reference]
    if missing:
        raise rbench.DataError(f"{where} has no row for {missing[0]!r}")
    return reference


def _chosen(root: Path, per_class: int, class_step: int, request: rbench.DataRequest):
    """The first `per_class` images (file-name order) of every `class_step`-th ImageNet class
    (wnid order) as `(path, label, key)`, whether the folder is partial, and a note."""
    if not root.is_dir():
        raise rbench.DataError(f"imagenet-p folder {root} does not exist; pass --data-root ROOT (with ROOT/imagenet/val) "
                               "or --data imagenet-p=PATH (an ImageNet val folder of wnid folders)")
    folders, listed = rbench.list_class_folders(root)
    wnids = imagenet.synsets()
    index = imagenet.wnid_index()
    wrong = [f for f in folders if f not in index]
    if wrong:
        raise rbench.DataError(f"{root} has the folder {wrong[0]!r}, which is not an ImageNet class; imagenet-p needs an "
                               "ImageNet val folder of wnid folders")
    by_wnid: dict[str, list[str]] = {}
    for path, folder in listed:
        by_wnid.setdefault(folders[folder], []).append(path)
    wanted = [w for i, w in enumerate(wnids) if i % class_step == 0]
    chosen, absent, short = [], 0, 0
    for wnid in wanted:
        paths = by_wnid.get(wnid, [])
        absent += not paths
        short += 0 < len(paths) < per_class
        chosen.extend((p, index[wnid], f"{wnid}/{Path(p).name}") for p in paths[:per_class])
    partial = absent > 0 or short > 0
    if partial and not request.allow_partial:
        raise rbench.DataError(
            f"imagenet-p at {root}: {absent} of the {len(wanted)} chosen classes missing, {short} with fewer than "
            f"{per_class} images; use the complete val folder, other --data-option imagenet-p.per_class/class_step, "
            "or --allow-partial")
    if not chosen:
        raise rbench.DataError(f"imagenet-p at {root}: none of the {len(wanted)} chosen classes has images")
    note = f"partial: {absent} of {len(wanted)} classes missing, {short} short of {per_class} images; " if partial else ""
    return chosen, partial, note


NO_REFERENCE = ("; no reference: mfr and mt5d are empty (give one with --data-option "
                "imagenet-p.reference=FILE, a CSV perturbation,flip_prob,top5_dist, or "
                "imagenet-p.reference_model=NAME, a model of the store, to rbench run or rbench report)")


def _common_options(options: dict) -> tuple[list[str], int, dict | None]:
    perturbations = rbench.option_choices("imagenet-p", options.get("perturbations"), PERTURBATIONS, "perturbations")
    if options.get("difficulty", "1").strip() not in ("1", "2", "3"):
        raise rbench.DataError(f"--data-option imagenet-p.difficulty={options['difficulty']!r}: choose one of 1, 2, 3")
    difficulty = int(options.get("difficulty", "1"))
    reference = None
    if "reference" in options:
        reference = read_reference(Path(options["reference"]).expanduser(), perturbations)
    if "per_class" in options:
        rbench.option_whole_number("imagenet-p", options, "per_class", DEFAULT_PER_CLASS)
    return perturbations, difficulty, reference


def _view(perturbations, blocks, difficulty, reference) -> rbench.ViewSpec:
    columns = ("model", "img_size", "mfr", "mt5d", "flip_prob", "top5_dist", "top1", "top5", "sequences",
               *(c for p in perturbations for c in (fp_column(p), t5d_column(p))),
               "param_count", "crop_pct", "interpolation")
    return rbench.ViewSpec(name="imagenet-p", score=StabilityScorer(blocks, difficulty, reference), columns=columns)


def load(request: rbench.DataRequest) -> rbench.Source:
    """`-d imagenet-p`: made from a val folder, or decoded from the published mp4 folder."""
    if request.path is None:
        raise rbench.DataError("where is imagenet-p's folder? pass --data-root ROOT (with ROOT/imagenet/val) or "
                               "--data imagenet-p=PATH (a val folder or the published ImageNet-P folder)")
    root = Path(request.path)
    options = dict(request.options)
    rbench.check_option_names("imagenet-p", options, tuple(OPTIONS), "imagenet-p")
    if _layout(root) == "published":
        return load_published(request, root, options)
    return load_made(request, root, options)


def load_made(request: rbench.DataRequest, root: Path, options: dict) -> rbench.Source:
    """The sequences made once from a val folder, every frame a sample."""
    per_class = rbench.option_whole_number("imagenet-p", options, "per_class", DEFAULT_PER_CLASS)
    class_step = rbench.option_whole_number("imagenet-p", options, "class_step", DEFAULT_CLASS_STEP)
    workers = rbench.option_whole_number("imagenet-p", options, "build_workers", 1) if "build_workers" in options else None
    perturbations, difficulty, reference = _common_options(options)
    check_library()
    chosen, partial, note = _chosen(root, per_class, class_step, request)
    base = Path(options["build_dir"]).expanduser() if "build_dir" in options else request.cache_dir / "imagenet-p"
    digest = hashlib.sha256(f"{BUILD_VERSION}\0{SEED_SCHEME}\0{root.resolve()}".encode()).hexdigest()[:12]
    folder = base / f"{BUILD_VERSION}-{digest}"
    samples: list[tuple[str, int]] = []
    blocks, by_slice, starts = [], {}, {}
    for perturbation in perturbations:
        length = frame_count(perturbation)
        kind = sequence_name(perturbation, difficulty)
        blocks.append((perturbation, len(samples), len(chosen), length))
        first = len(samples)
        for path, label, key in chosen:
            wnid, name = key.split("/", 1)
            target = folder / kind / wnid / Path(name).stem
            by_slice.setdefault(kind, []).append((path, key, perturbation, difficulty, str(target)))
            samples.extend((str(frame_file(target, i)), label) for i in range(length))
        starts[kind] = (first, len(samples))
    made = _source_build(folder, by_slice, starts, workers, _build_sequence, "making",
                         {"build": BUILD_VERSION, "seed": SEED_SCHEME, "val": str(root),
                          "prepare": "Resize(256) bilinear, then frames()",
                          "frames": "lossless PNG, <sequence>/<wnid>/<stem>/<i>.png"})
    tasks = sum(len(t) for t in by_slice.values())
    note += (f"{len(chosen):,} images x {len(perturbations)} perturbations = {tasks:,} sequences, "
             f"{len(samples):,} frames per model (difficulty {difficulty}); PNG frames in {folder}")
    if reference is None:
        note += NO_REFERENCE
    return rbench.Source(name="imagenet-p", root=root, samples=samples,
                         views=[_view(perturbations, blocks, difficulty, reference)], partial=partial, note=note,
                         identity=f"made {folder.name}; difficulty {difficulty}", build=made)

# --- the published folder: <perturbation>/<wnid>/<name>.mp4 --------------------------------

VIDEO_HINT = "pip install 'rbench[video]'"
SEQUENCE_KINDS = tuple(dict.fromkeys(sequence_name(p, d) for p in PERTURBATIONS for d in DIFFICULTIES))


def check_video_library() -> None:
    """Raise a one-line `UnavailableError` when PyAV (the video extra) is not installed."""
    if importlib.util.find_spec("av") is None:
        raise rbench.UnavailableError(f"imagenet-p's published mp4 folder needs PyAV (the av package): {VIDEO_HINT}")


def read_video(path):
    """Every frame of a video file as uint8 RGB `[T, H, W, 3]`, decoded with PyAV (FFmpeg)."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def _decode_sequence(task: tuple[str, str, str, int, str]) -> int:
    """One published video decoded into PNG frames (a temporary folder renamed into place);
    0 for a video that cannot be decoded or has the wrong number of frames."""
    video, _, perturbation, _, target = task
    try:
        pixels = read_video(video)
    except Exception:  # noqa: BLE001 - PyAV's errors for a broken file are many; the sequence is left out
        return 0
    if len(pixels) != frame_count(perturbation):
        return 0
    write_sequence(pixels, Path(target))
    return len(pixels)


def _layout(root: Path) -> str:
    """`"published"` (sequence folders) or `"val"` (wnid folders), told by the folders."""
    if not root.is_dir():
        raise rbench.DataError(f"imagenet-p folder {root} does not exist; pass --data-root ROOT (with ROOT/imagenet/val) "
                               "or --data imagenet-p=PATH (a val folder or the published ImageNet-P folder)")
    names = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if names & set(SEQUENCE_KINDS):
        other = sorted(names - set(SEQUENCE_KINDS))
        if other:
            raise rbench.DataError(f"{root} mixes ImageNet-P perturbation folders with {other[0]!r}; the published layout "
                                   "is <perturbation>/<wnid>/<name>.mp4 and nothing else")
        return "published"
    return "val"


def _videos(folder: Path, index: dict[str, int]) -> dict[str, list[Path]]:
    """`{wnid: [mp4 files, by name]}` of one perturbation folder; a non-wnid folder is an error."""
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub.name not in index:
            raise rbench.DataError(f"{folder} has the folder {sub.name!r}, which is not an ImageNet class; the published "
                                   "layout is <perturbation>/<wnid>/<name>.mp4")
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() == ".mp4" and f.is_file())
        if files:
            found[sub.name] = files
    return found


def load_published(request: rbench.DataRequest, root: Path, options: dict) -> rbench.Source:
    """The published ImageNet-P videos, decoded once into PNG frames, every frame a sample."""
    per_class = rbench.option_whole_number("imagenet-p", options, "per_class", 1) if "per_class" in options else None
    class_step = rbench.option_whole_number("imagenet-p", options, "class_step", 1)
    workers = rbench.option_whole_number("imagenet-p", options, "build_workers", 1) if "build_workers" in options else None
    perturbations, difficulty, reference = _common_options(options)
    check_video_library()
    wnids = imagenet.synsets()
    index = imagenet.wnid_index()
    wanted = [w for i, w in enumerate(wnids) if i % class_step == 0]
    base = Path(options["build_dir"]).expanduser() if "build_dir" in options else request.cache_dir / "imagenet-p"
    digest = hashlib.sha256(f"{BUILD_VERSION}\0published\0{root.resolve()}".encode()).hexdigest()[:12]
    folder = base / f"published-{digest}"
    samples: list[tuple[str, int]] = []
    blocks, tasks, problems = [], [], []
    by_slice, starts = {}, {}
    for perturbation in perturbations:
        kind = sequence_name(perturbation, difficulty)
        length = frame_count(perturbation)
        source = root / kind
        videos = _videos(source, index) if source.is_dir() else {}
        if not source.is_dir():
            problems.append(f"{source} is missing")
        elif any(w not in videos for w in wanted):
            problems.append(f"{source} has {sum(w in videos for w in wanted)} of the {len(wanted)} chosen classes")
        start, count = len(samples), 0
        for wnid in wanted:
            for video in videos.get(wnid, [])[:per_class]:
                target = folder / kind / wnid / video.stem
                tasks.append((str(video), f"{wnid}/{video.name}", perturbation, difficulty, str(target)))
                by_slice.setdefault(kind, []).append(tasks[-1])
                samples.extend((str(frame_file(target, i)), index[wnid]) for i in range(length))
                count += 1
        blocks.append((perturbation, start, count, length))
        if count:
            starts[kind] = (start, len(samples))
    partial = bool(problems)
    if partial and not request.allow_partial:
        raise rbench.DataError(f"imagenet-p at {root} is partial: {problems[0]}"
                               + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                               + "; complete it, choose a subset with --data-option imagenet-p.perturbations/class_step, "
                               "or pass --allow-partial")
    if not tasks:
        raise rbench.DataError(f"imagenet-p at {root}: no <wnid>/<name>.mp4 videos in the chosen perturbation folders")
    made = _source_build(folder, by_slice, starts, workers, _decode_sequence, "decoding",
                         {"build": BUILD_VERSION, "published": str(root), "frames": "lossless PNG, "
                          "<sequence>/<wnid>/<stem>/<i>.png, decoded with PyAV"})
    note = (f"partial: {problems[0]}; " if partial else "") + (
        f"published ImageNet-P at {root}: {len(tasks):,} videos, {len(samples):,} frames per model (difficulty "
        f"{difficulty}), decoded into PNG frames in {folder}")
    if reference is None:
        note += NO_REFERENCE
    return rbench.Source(name="imagenet-p", root=root, samples=samples,
                         views=[_view(perturbations, blocks, difficulty, reference)], partial=partial, note=note,
                         identity=f"published {folder.name}; difficulty {difficulty}", build=made)


OPTIONS = {
    "per_class": f"N: val images (videos) per chosen class (default {DEFAULT_PER_CLASS}; all on the published folder)",
    "class_step": f"N: every N-th ImageNet class (default {DEFAULT_CLASS_STEP}: 167 classes, about 52,000 frames, "
                  "an ImageNet val pass; 1 on the published folder)",
    "perturbations": "NAMES: comma-separated perturbations (default all 10)",
    "difficulty": "1|2|3: stronger noise for the noises, the step between compared frames for the others (default 1)",
    "reference": "FILE: CSV perturbation,flip_prob,top5_dist (flip_prob in percent) normalising mfr and mt5d",
    "build_dir": "PATH: where the PNG frames are made or decoded (default: the rbench cache)",
    "build_workers": "N: processes that make them (default: the CPU count)",
}


@rbench.hookimpl
def rbench_datasets():
    return [
        rbench.DatasetSpec(
            name="imagenet-p", load=load, default_folder="imagenet/val", views={"imagenet-p": None}, options=OPTIONS,
            report_options={reference.OPTION: reference.option_help(NORMALISED, "the reference CSV")},
            report_rows=report_rows,
            description="ImageNet-P's 10 perturbation sequences made once from ImageNet val (lossless PNG frames; "
                        "needs rbench[corruptions]) or decoded from the published mp4 folder (needs rbench[video]); "
                        "flip probability and top-5 distance per perturbation, mFR/mT5D against a reference CSV"),
    ]
