"""The 15 ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019), written for rbench.

Each function takes a `224x224x3` uint8 RGB image and a severity 1..5 and returns the corrupted
image as uint8, computed as the authors' `make_imagenet_c.py` computes it: the same constants
(in pixels at 224x224, including their quirks: elastic's 244, glass blur's copy instead of a
swap, fog's squared noise amplitude), the same random draws from numpy's global legacy
generator in the same order, and the same conversion to uint8 (truncation, not rounding).
So `np.random.seed(s)` before `corrupt(pixels, name, severity)` gives the reference's pixels
after the same seed.

Two parts of the reference are re-created here rather than called:
- ImageMagick's motion blur (`motion_blur`, `snow`), which the reference reached through Wand:
  `magick_motion_blur` is the same one-sided Gaussian line kernel, offsets, edge handling and
  16-bit quantum arithmetic, computed in numpy.
- scikit-image's salt-and-pepper noise (`impulse_noise`): since scikit-image 0.19 it draws from
  a fresh, unseeded generator; here it is given a seed drawn from numpy's global generator
  (the first and only legacy draw of impulse_noise), and the PCG64 draws it makes with that
  seed are written out.

The frost pictures are the reference's six files; they are read from an installed package
that ships them byte for byte (`corrupt-tta`; only its files are used, none of its code).

numpy, scipy, scikit-image, OpenCV and Pillow are imported when this module is imported; the
plugin imports it only when an image is corrupted.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as ndimage_zoom
from skimage.color import hsv2rgb, rgb2hsv
from skimage.filters import gaussian

SIZE = 224

# The reference's order: a corruption's index k gives the golden data's seed 1000 * severity + k.
NAMES = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)

# Bump when any corruption's pixels change: it keys the files built on disk.
VERSION = "rbench-imagenet-c 1"

# The frost pictures, the SHA-256 of each file, and which package ships them. The reference
# lists frost6.jpg too but draws its index with randint(5), so only the first five are used.
FROST_FILES = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
}
FROST_PACKAGE = ("corrupt_tta", "assets/frost")


def _as_float(pixels) -> np.ndarray:
    return np.asarray(pixels, dtype=np.uint8) / 255.0


# --- noise ---------------------------------------------------------------------------------

def gaussian_noise(pixels, severity):
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    x = _as_float(pixels)
    return np.clip(x + np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(pixels, severity):
    c = (60, 25, 12, 5, 3)[severity - 1]
    x = _as_float(pixels)
    return np.clip(np.random.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(pixels, severity):
    """Salt and pepper on every channel independently: a pixel value is replaced with
    probability `amount`, by 1 or 0 with equal odds (scikit-image's `random_noise(mode='s&p')`,
    whose PCG64 generator is seeded from the legacy global one)."""
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    x = _as_float(pixels)
    rng = np.random.default_rng(int(np.random.randint(0, 2**31 - 1)))
    replaced = rng.random(x.shape) <= amount
    salt = rng.random(x.shape) <= 0.5
    out = x.copy()
    out[replaced & salt] = 1.0
    out[replaced & ~salt] = 0.0
    return np.clip(out, 0, 1) * 255


# --- blur ----------------------------------------------------------------------------------

def _disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """A filled disk, normalised, then softened by a small Gaussian (the reference's anti-alias):
    on a 17x17 grid with a 3x3 Gaussian up to radius 8, on (2r+1)^2 with a 5x5 one above."""
    half, ksize = (8, (3, 3)) if radius <= 8 else (radius, (5, 5))
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= np.sum(disk)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def defocus_blur(pixels, severity):
    radius, alias_blur = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[severity - 1]
    x = _as_float(pixels)
    kernel = _disk_kernel(radius, alias_blur)
    out = np.stack([cv2.filter2D(x[:, :, ch], -1, kernel) for ch in range(3)], axis=-1)
    return np.clip(out, 0, 1) * 255


def glass_blur(pixels, severity):
    """Gaussian blur, local pixel shuffling, Gaussian blur again.

    The shuffle visits rows from `224 - d` down to `d + 1`, and in each row the columns in the
    same range downwards; each visit draws `(dx, dy)` in `[-d, d)` and gives the pixel the
    value its partner `(h + dy, w + dx)` holds at that moment (the reference's "swap" is a
    tuple assignment of numpy views, which copies one way; the partner keeps its value).
    """
    sigma, d, iterations = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[severity - 1]
    x = np.uint8(gaussian(_as_float(pixels), sigma=sigma, channel_axis=-1) * 255)
    height, width = x.shape[:2]
    rows, cols = range(height - d, d, -1), range(width - d, d, -1)
    visits = len(rows) * len(cols)
    # Where each pixel's value comes from: the copies follow each other, so they are applied in
    # order to a map of source indices, and the pixels are gathered once at the end.
    source = list(range(height * width))
    visited = [h * width + w for h in rows for w in cols]
    for _ in range(iterations):
        # One randint(-d, d, size=(2,)) per visit draws the same stream as all of them at once.
        shifts = np.random.randint(-d, d, size=(visits, 2))
        partners = (shifts[:, 1] * width + shifts[:, 0]).tolist()  # dy rows and dx columns away
        for pixel, partner in zip(visited, partners):
            source[pixel] = source[pixel + partner]
    x = x.reshape(height * width, 3)[np.asarray(source)].reshape(height, width, 3)
    return np.clip(gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def magick_motion_blur(gray_or_rgb: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick 6's `MotionBlurImage` of an 8-bit image, as the reference got it through
    Wand with a Q16 build, then written as an 8-bit PNG: a uint8 array of the input's shape.

    ImageMagick averages `width = 2 ceil(radius) + 1` pixels along a line from each pixel
    (one-sided: offsets 0 .. width-1 in the direction `angle`), weighted by a Gaussian of the
    distance index, `exp(-i^2 / (2 sigma^2))`, normalised to sum 1. The offset of step `i` is
    `(ceil(i cos a - 0.5), ceil(i sin a - 0.5))` (x, y); pixels outside the image repeat the
    edge. Sums are in double over 16-bit quanta (255 -> 65535), rounded half up to a quantum;
    the 8-bit PNG then holds `quantum // 257` (checked against the golden outputs).
    """
    width = int(2 * np.ceil(radius) + 1)
    s = sigma if abs(sigma) >= 1e-12 else 1e-12
    weights = [np.exp(-(float(i * i)) / (2.0 * s * s)) / (2.5066282746310002 * s) for i in range(width)]
    total = 0.0
    for w in weights:
        total += w
    weights = [w / total for w in weights]
    px = width * np.sin(np.deg2rad(angle))
    py = width * np.cos(np.deg2rad(angle))
    norm = np.hypot(px, py)
    h, w_ = gray_or_rgb.shape[:2]
    offsets = [(int(np.ceil(i * px / norm - 0.5)), int(np.ceil(i * py / norm - 0.5))) for i in range(width)]
    pad = max(max(abs(oy), abs(ox)) for oy, ox in offsets)
    # Edge pixels repeated outward: each tap is then a shifted view of the padded image.
    spec = ((pad, pad), (pad, pad)) + ((0, 0),) * (gray_or_rgb.ndim - 2)
    quanta = np.pad(gray_or_rgb.astype(np.float64) * 257.0, spec, mode="edge")
    acc = np.zeros(gray_or_rgb.shape, dtype=np.float64)
    for weight, (oy, ox) in zip(weights, offsets):
        acc += weight * quanta[pad + oy:pad + oy + h, pad + ox:pad + ox + w_]
    quantum = np.where(acc <= 0, 0, np.where(acc >= 65535, 65535, np.floor(acc + 0.5)))
    return (quantum.astype(np.uint32) // 257).astype(np.uint8)


def motion_blur(pixels, severity):
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    angle = np.random.uniform(-45, 45)
    return magick_motion_blur(np.asarray(pixels, dtype=np.uint8), radius, sigma, angle)


def clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    """The central `ceil(h / factor)` x `ceil(w / factor)` part zoomed by `factor` (linear),
    its centre trimmed back to `h x w`."""
    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = img[top:top + ch, left:left + cw]
    # Channel by channel: the same values as zooming by (factor, factor, 1) (the third axis's
    # weights are exactly 1 and 0), in half the time.
    zoomed = np.stack([ndimage_zoom(crop[..., c], (factor, factor), order=1) for c in range(crop.shape[2])], axis=-1)
    trim_top, trim_left = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    return zoomed[trim_top:trim_top + h, trim_left:trim_left + w]


ZOOM_FACTORS = ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03))


def zoom_blur(pixels, severity):
    """The mean of the image and its zooms by `np.arange(start, stop, step)` (the float end
    point makes severity 1 include 1.11: 12 zooms), in float32."""
    factors = np.arange(*ZOOM_FACTORS[severity - 1])
    x = _as_float(pixels).astype(np.float32)
    total = np.zeros_like(x)
    for factor in factors:
        total += clipped_zoom(x, factor)
    return np.clip((x + total) / (len(factors) + 1), 0, 1) * 255


# --- weather -------------------------------------------------------------------------------

def snow(pixels, severity):
    loc, scale, zoom, threshold, radius, sigma, blend = (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    )[severity - 1]
    x = np.asarray(pixels, dtype=np.float32) / 255.0
    layer = np.random.normal(size=x.shape[:2], loc=loc, scale=scale)
    layer = clipped_zoom(layer[..., None], zoom)
    layer[layer < threshold] = 0
    flakes = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
    flakes = magick_motion_blur(flakes, radius, sigma, np.random.uniform(-135, -45)) / 255.0
    flakes = flakes[..., None]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, k=2), 0, 1) * 255


def frost_folder() -> Path | None:
    """The folder of the installed frost pictures, or None when no package ships them."""
    spec = importlib.util.find_spec(FROST_PACKAGE[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / FROST_PACKAGE[1]
    return folder if all((folder / name).is_file() for name in FROST_FILES) else None


@cache
def _frost_pictures() -> tuple[np.ndarray, ...]:
    """The five frost pictures as OpenCV reads them (BGR), each checked against its SHA-256."""
    folder = frost_folder()
    if folder is None:
        raise RuntimeError("the frost pictures are not installed: pip install 'rbench[corruptions]'")
    pictures = []
    for name, digest in FROST_FILES.items():
        data = (folder / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise RuntimeError(f"{folder / name} is not the reference's {name} (SHA-256 differs)")
        pictures.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    return tuple(pictures)


def frost(pixels, severity):
    image_weight, frost_weight = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))[severity - 1]
    picture = _frost_pictures()[np.random.randint(5)]
    height, width = np.shape(pixels)[:2]
    if picture.shape[0] <= height or picture.shape[1] <= width:
        # Larger than the reference's 224 (another input size): the picture is scaled up to
        # cover the image, keeping its aspect ratio. Never the case at 224.
        scale = max((height + 1) / picture.shape[0], (width + 1) / picture.shape[1])
        size = (int(np.ceil(picture.shape[1] * scale)), int(np.ceil(picture.shape[0] * scale)))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_LINEAR)
    top = np.random.randint(0, picture.shape[0] - height)
    left = np.random.randint(0, picture.shape[1] - width)
    crop = picture[top:top + height, left:left + width][..., ::-1]  # BGR -> RGB
    return np.clip(image_weight * np.asarray(pixels, dtype=np.uint8) + frost_weight * crop, 0, 255)


def _plasma(decay: float, size: int) -> np.ndarray:
    """A diamond-square height map on a `size` torus, shifted and scaled to [0, 1].

    Level by level (step `size`, `size/2`, ..., 2): the centre of each square, then the edge
    midpoints between columns, then those between rows, each the mean of its four neighbours
    plus `amp * U(-amp, amp)` (one uniform draw per point, all points of a step at once);
    `amp` starts at 100 and is divided by `decay` after each level.
    """
    grid = np.empty((size, size), dtype=np.float64)
    grid[0, 0] = 0.0
    amp = 100.0
    step = size
    while step >= 2:
        half = step // 2

        def noisy_mean(total):
            return total / 4 + amp * np.random.uniform(-amp, amp, total.shape)

        corners = grid[0:size:step, 0:size:step]
        total = corners + np.roll(corners, shift=-1, axis=0)
        total += np.roll(total, shift=-1, axis=1)
        grid[half:size:step, half:size:step] = noisy_mean(total)

        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        grid[0:size:step, half:size:step] = noisy_mean(
            (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1)))
        grid[half:size:step, 0:size:step] = noisy_mean(
            (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0)))
        step //= 2
        amp /= decay
    grid -= grid.min()
    return grid / grid.max()


def fog(pixels, severity):
    strength, decay = ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))[severity - 1]
    x = _as_float(pixels)
    height, width = x.shape[:2]
    size = 256  # the reference's map; a larger image gets the next power of two
    while size < max(height, width):
        size *= 2
    top = x.max()
    x += strength * _plasma(decay, size)[:height, :width][..., None]
    return np.clip(x * top / (top + strength), 0, 1) * 255


# --- digital -------------------------------------------------------------------------------

def brightness(pixels, severity):
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    hsv = rgb2hsv(_as_float(pixels))
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def contrast(pixels, severity):
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    x = _as_float(pixels)
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(pixels, severity):
    """A random affine warp (three anchor points moved), then a smooth random displacement
    field; the constants are the reference's multiples of 244 (its comment says 224 was meant)."""
    alpha, sigma, jitter = (
        (244 * 2, 244 * 0.7, 244 * 0.1),
        (244 * 2, 244 * 0.08, 244 * 0.2),
        (244 * 0.05, 244 * 0.01, 244 * 0.02),
        (244 * 0.07, 244 * 0.01, 244 * 0.02),
        (244 * 0.12, 244 * 0.01, 244 * 0.02),
    )[severity - 1]
    image = np.asarray(pixels, dtype=np.float32) / 255.0
    shape = image.shape
    centre = np.float32(shape[:2]) // 2
    third = min(shape[:2]) // 3
    anchors = np.float32([centre + third, [centre[0] + third, centre[1] - third], centre - third])
    moved = anchors + np.random.uniform(-jitter, jitter, size=anchors.shape).astype(np.float32)
    matrix = cv2.getAffineTransform(anchors, moved)
    image = cv2.warpAffine(image, matrix, shape[:2][::-1], borderMode=cv2.BORDER_REFLECT_101)

    def field():
        smooth = gaussian(np.random.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3)
        return (smooth * alpha).astype(np.float32)[..., None]

    dx = field()
    dy = field()
    cols, rows, chans = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    coords = np.stack([(rows + dy).reshape(-1, 1), (cols + dx).reshape(-1, 1), chans.reshape(-1, 1)])
    warped = map_coordinates(image, coords, order=1, mode="reflect").reshape(shape)
    return np.clip(warped, 0, 1) * 255


def pixelate(pixels, severity):
    c = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    small = image.resize((int(image.width * c), int(image.height * c)), Image.BOX)
    return np.asarray(small.resize(image.size, Image.BOX))


def jpeg_compression(pixels, severity):
    quality = (25, 18, 15, 10, 7)[severity - 1]
    buffer = BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


FUNCTIONS = {name: globals()[name] for name in NAMES}


def corrupt(pixels, corruption: str, severity: int) -> np.ndarray:
    """`pixels` (uint8 `[224, 224, 3]`, RGB) under `corruption` at `severity` (1..5), as uint8.

    Draws from numpy's global legacy generator in the reference's order: `np.random.seed(s)`
    just before the call gives the pixels the reference gives after the same seed. The
    reference's float result is converted as it converts it, `np.uint8(x)` (truncation;
    every corruption has clipped to [0, 255] already).
    """
    pixels = np.asarray(pixels)
    if pixels.shape != (SIZE, SIZE, 3) or pixels.dtype != np.uint8:
        raise ValueError(f"corrupt takes a uint8 [{SIZE}, {SIZE}, 3] image, not {pixels.dtype} {list(pixels.shape)}")
    return corrupt_any_size(pixels, corruption, severity)


def corrupt_any_size(pixels, corruption: str, severity: int) -> np.ndarray:
    """`corrupt` at any image size (uint8 `[H, W, 3]`), for corrupting at a model's own input
    size (the imagenet-c-native view). At 224x224 it is `corrupt`. Elsewhere the reference's
    pixel constants are kept as they are (so a corruption is relatively milder on a larger
    image), the glass-blur walk and the fog map cover the whole image, and a frost picture
    smaller than the image is scaled up: this is not the published benchmark."""
    if corruption not in FUNCTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; choose from {', '.join(NAMES)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity {severity!r}: choose 1..5")
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"corrupt takes a uint8 [H, W, 3] RGB image, not shape {list(pixels.shape)}")
    return np.uint8(FUNCTIONS[corruption](pixels, severity))
