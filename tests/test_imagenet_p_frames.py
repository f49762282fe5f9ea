"""imagenet_p.frames against the reference's golden frames and the frame schedules.

The golden frames (`../shared/golden/imagenet-p`: the reference's own Brightness, Translate
and Gaussian Noise blocks of `make_imagenet_p.py`, run on scikit-image's astronaut after
torchvision's Resize(256), before the video step) are kept here as per-frame SHA-256 hashes
only (`data/imagenet_p/golden_sha256.json`), with the input PNG. The tilt golden
(`data/imagenet_p/tilt_golden.json`) is the same for the reference's Tilt block on five inputs
made here (see `tilt_inputs`), with OpenCV's classic warp (3.4 to 4.x), the one it ran on.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("skimage")
pytest.importorskip("cv2")
from rbench.plugins.datasets import imagenet_p  # noqa: E402

DATA = Path(__file__).parent / "data" / "imagenet_p"
GOLDEN = json.loads((DATA / "golden_sha256.json").read_text())
TILT = json.loads((DATA / "tilt_golden.json").read_text())


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def image() -> Image.Image:
    picture = Image.open(DATA / "astronaut_resized256.png").convert("RGB")
    assert sha(np.asarray(picture)) == GOLDEN["input_sha256_pixels"]
    return picture


@pytest.fixture(scope="module")
def clean(image) -> np.ndarray:
    return np.asarray(image)[16:240, 16:240]  # the 224 centre crop of the 256x256 input


def seeded_frames(image, perturbation, difficulty=1, seed=0):
    torch.manual_seed(seed)
    np.random.seed(seed)
    return imagenet_p.frames(image, perturbation, difficulty)


@pytest.mark.parametrize("perturbation", ["brightness", "translate", "gaussian_noise"])
def test_golden_frames_bit_for_bit(image, perturbation):
    """gaussian_noise too: torch's CPU generator after manual_seed(0), one randn_like of the
    contiguous CHW crop per frame, as the protocol says."""
    torch.manual_seed(0)
    got = imagenet_p.frames(image, perturbation)
    assert [sha(f) for f in got] == GOLDEN["frame_sha256"][perturbation]


def tilt_inputs() -> dict[str, np.ndarray]:
    """The tilt golden's inputs (uint8 `[H, W, 3]`, named by W x H): the astronaut, the astronaut
    widened by its mirror image, byte noise (SHAKE-256, so no generator's version matters) square
    and portrait, a colour gradient."""
    astronaut = np.asarray(Image.open(DATA / "astronaut_resized256.png").convert("RGB"))

    def noise(h, w):
        stream = hashlib.shake_256(f"rbench imagenet-p tilt noise {w}x{h}".encode()).digest(h * w * 3)
        return np.frombuffer(stream, dtype=np.uint8).reshape(h, w, 3)

    yy, xx = np.mgrid[0:256, 0:341]
    gradient = np.stack([xx * 255 // 340, yy, (xx + yy) * 255 // 595], axis=-1).astype(np.uint8)
    return {
        "astronaut_256x256": astronaut,
        "astronaut_mirrored_341x256": np.concatenate([astronaut, astronaut[:, ::-1][:, :85]], axis=1),
        "noise_256x256": noise(256, 256),
        "noise_256x300": noise(300, 256),
        "gradient_341x256": gradient,
    }


@pytest.mark.parametrize("name", sorted(TILT["inputs"]))
def test_tilt_golden_frames_bit_for_bit(name):
    pixels = tilt_inputs()[name]
    golden = TILT["inputs"][name]
    assert sha(pixels) == golden["input_sha256"]
    got = imagenet_p.frames(Image.fromarray(pixels), "tilt")
    assert got.shape == (31, 224, 224, 3)
    assert [sha(f) for f in got] == golden["frame_sha256"]


def test_warp_perspective_equals_opencv_classic_warp():
    """Beyond tilt's own matrices: small images, strong perspective, sources partly or wholly
    outside the image, rows longer than OpenCV's 64-column block, flat colour (the zero border's
    blend), and positions exactly on a half 1/32 step, where OpenCV's order of the double sums,
    its matrix inverse and its rounding (ties to even) decide the pixel: `cv2.warpPerspective`
    outputs of OpenCV 3.4.18, equal in 4.10 and 4.14 (OpenCV 5.1 differs in 13 of the 14)."""
    cases = np.load(DATA / "tilt_warp_cases.npz")
    count = len(cases.files) // 3
    assert count >= 8
    for n in range(count):
        got = imagenet_p._warp_perspective(cases[f"image{n}"], cases[f"matrix{n}"])
        assert np.array_equal(got, cases[f"warped{n}"]), n


def test_translate_is_a_shift_of_the_whole_image():
    """An independent oracle on a non-square image (256x300): frame i is the image shifted right
    by i - 20 px, black coming in from the edge, then its centre crop (top-left at the rounded
    half margins: row 0, column 38)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (256, 300, 3), dtype=np.uint8)
    got = imagenet_p.frames(Image.fromarray(pixels), "translate")
    assert got.shape == (41, 224, 224, 3)
    for i in range(41):
        shift = i - 20
        moved = np.zeros_like(pixels)
        if shift >= 0:
            moved[:, shift:] = pixels[:, :300 - shift]
        else:
            moved[:, :shift] = pixels[:, -shift:]
        assert np.array_equal(got[i], moved[16:240, 38:262]), i


def test_gaussian_noise_in_distribution(image, clean):
    """Independently of the generator's stream: on pixels far from 0 and 255 (so clipping has
    probability < 1e-4), frame - clean = floor(v + 255 * 0.03 * Z) - v, whose mean is -1/2 (the
    fractional part of a wide normal is uniform) and whose variance is (7.65)^2 + 1/12. Over N
    such pixel values the means' standard error is sd / sqrt(N), the standard deviations' is
    about sd / sqrt(2 N); the tolerance is 5 of them."""
    got = seeded_frames(image, "gaussian_noise", seed=1234)
    inner = (clean >= 30) & (clean <= 225)
    n = int(inner.sum())
    sd = math.sqrt((255 * 0.03) ** 2 + 1 / 12)
    for i in range(1, 31):
        diff = got[i].astype(np.float64)[inner] - clean[inner]
        assert abs(diff.mean() + 0.5) < 5 * sd / math.sqrt(n), i
        assert abs(diff.std() - sd) < 5 * sd / math.sqrt(2 * n), i
    assert not np.array_equal(got[1], got[2])  # new noise each frame
    # Difficulty 2 is the stronger noise, sigma 0.05.
    harder = seeded_frames(image, "gaussian_noise", 2, seed=1234)
    diff = harder[1:].astype(np.float64)[:, inner] - clean[inner]
    assert abs(diff.std() - math.sqrt((255 * 0.05) ** 2 + 1 / 12)) < 0.2


# Where a schedule passes through the clean crop: (frame, exactly equal) per perturbation.
CLEAN_FRAME = {
    "gaussian_noise": 0, "shot_noise": 0, "zoom_blur": 0,
    "translate": 20, "rotate": 15, "scale": 24,  # shift 0, angle 0, scale (2.5 * 24 + 40) / 100 = 1
}


@pytest.mark.parametrize("perturbation", imagenet_p.PERTURBATIONS)
def test_each_perturbation_frames_clean_frame_and_determinism(image, clean, perturbation):
    got = seeded_frames(image, perturbation)
    assert got.dtype == np.uint8
    assert got.shape == (41 if perturbation == "translate" else 31, 224, 224, 3)
    assert got.shape[0] == imagenet_p.frame_count(perturbation)
    if perturbation in CLEAN_FRAME:
        assert np.array_equal(got[CLEAN_FRAME[perturbation]], clean)
    if perturbation == "brightness":  # c = 0 at frame 15: the HSV round trip and truncation only
        assert np.abs(got[15].astype(int) - clean).max() <= 1
    # The perturbation moves: most frames are distinct (motion blur's integer line offsets can
    # repeat between neighbouring angles), and the ends differ.
    assert len({sha(f) for f in got}) > got.shape[0] // 2
    assert not np.array_equal(got[0], got[-1])
    again = seeded_frames(image, perturbation)
    assert np.array_equal(got, again)
    if perturbation in ("gaussian_noise", "shot_noise", "snow"):
        assert not np.array_equal(got, seeded_frames(image, perturbation, seed=1))
    else:  # no random draws at all
        assert np.array_equal(got, seeded_frames(image, perturbation, seed=1))


def test_shot_noise_and_snow_draw_from_numpy_global_generator(image, clean):
    """shot_noise frame i (i >= 1) is uint8(255 clip(Poisson(300 x) / 300)), one draw per frame
    from numpy's legacy generator, written out here; snow draws its layer once (frames differ
    only by the layer's blur angle, so the same seed gives the same layer)."""
    np.random.seed(7)
    x = clean / 255.0
    expected = [np.uint8(255 * np.clip(np.random.poisson(x * 300) / 300.0, 0, 1)) for _ in range(30)]
    np.random.seed(7)
    got = imagenet_p.frames(image, "shot_noise")
    assert all(np.array_equal(got[i + 1], expected[i]) for i in range(30))
    np.random.seed(7)
    imagenet_p.frames(image, "snow")
    after_snow = np.random.random()
    np.random.seed(7)
    np.random.normal(size=(224, 224))
    assert np.random.random() == after_snow  # exactly one 224x224 normal draw per sequence


def test_wrong_arguments(image):
    with pytest.raises(ValueError, match="unknown perturbation"):
        imagenet_p.frames(image, "fog")
    with pytest.raises(ValueError, match="difficulty"):
        imagenet_p.frames(image, "brightness", 4)
