"""rbench's ImageNet-C corruptions against the reference's golden outputs.

The golden data (made by running Hendrycks & Dietterich's `make_imagenet_c.py` on three
224x224 inputs, 15 corruptions x 5 severities, with `np.random.seed(1000 * severity + k)` just
before each call, `k` the corruption's index in the reference's order) is kept here as SHA-256
hashes only (`data/imagenet_c/golden_sha256.json`), with the three input PNGs.

Every output is compared bit for bit, including motion_blur and snow, whose ImageMagick motion
blur rbench computes in numpy: the same line kernel and offsets, the sums in double over
16-bit quanta, rounded half up, then `quantum // 257` for the 8-bit PNG the reference decoded,
gives ImageMagick 6.9.11 Q16's pixels exactly, so no tolerance is needed.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

corruptions = pytest.importorskip("rbench.plugins.datasets.corruptions")
from rbench.plugins.datasets import imagenet_c  # noqa: E402

DATA = Path(__file__).parent / "data" / "imagenet_c"
GOLDEN = json.loads((DATA / "golden_sha256.json").read_text())
INPUTS = ("astronaut", "coffee", "chelsea")


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    return {name: np.asarray(Image.open(DATA / f"{name}.png").convert("RGB")) for name in INPUTS}


@pytest.fixture(scope="module")
def outputs(inputs) -> dict[tuple[str, int, str], np.ndarray]:
    """Every corruption, severity and input through the public `corrupt`, under the golden
    data's seeding."""
    result = {}
    for k, corruption in enumerate(imagenet_c.CORRUPTIONS):
        for severity in imagenet_c.SEVERITIES:
            for name, pixels in inputs.items():
                np.random.seed(1000 * severity + k)
                out = imagenet_c.corrupt(pixels, corruption, severity)
                assert out.dtype == np.uint8 and out.shape == (224, 224, 3)
                result[corruption, severity, name] = out
    return result


def test_the_inputs_are_the_golden_ones(inputs):
    for name, pixels in inputs.items():
        assert sha(pixels) == GOLDEN["inputs"][name]


def test_preparation_is_resize_256_and_centre_crop_224():
    """The golden inputs were made from scikit-image's pictures by torchvision's Resize(256) and
    CenterCrop(224); `prepare` gives the same pixels (and the same as torchvision on odd sizes)."""
    import skimage.data
    from torchvision import transforms

    for name in INPUTS:
        picture = Image.fromarray(getattr(skimage.data, name)())
        assert sha(np.asarray(imagenet_c.prepare(picture))) == GOLDEN["inputs"][name], name
    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    rng = np.random.default_rng(5)
    for w, h in ((301, 257), (257, 301), (500, 333), (64, 97), (225, 1000)):
        picture = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        assert np.array_equal(np.asarray(imagenet_c.prepare(picture)), np.asarray(reference(picture))), (w, h)


@pytest.mark.parametrize("corruption", imagenet_c.CORRUPTIONS)
def test_golden_pixels_bit_for_bit(outputs, corruption):
    wrong = [f"{corruption}/{s}/{name}" for s in imagenet_c.SEVERITIES for name in INPUTS
             if sha(outputs[corruption, s, name]) != GOLDEN["outputs"][f"{corruption}/{s}/{name}"]]
    assert not wrong, wrong


@pytest.mark.parametrize("corruption", imagenet_c.CORRUPTIONS)
def test_jpeg85_files_decode_to_the_golden_jpeg_pixels(outputs, corruption):
    """The files rbench writes (`encode_jpeg`) decode, with Pillow, to the pixels of the
    reference's JPEG-85 files."""
    for severity in imagenet_c.SEVERITIES:
        for name in INPUTS:
            data = imagenet_c.encode_jpeg(outputs[corruption, severity, name])
            with Image.open(io.BytesIO(data)) as image:
                assert image.format == "JPEG"
                decoded = np.asarray(image.convert("RGB"))
            assert sha(decoded) == GOLDEN["jpeg85_decoded"][f"{corruption}/{severity}/{name}"], (corruption, severity, name)


@pytest.mark.parametrize("corruption", imagenet_c.CORRUPTIONS)
def test_severities_are_distinct(outputs, corruption):
    for name in INPUTS:
        hashes = [sha(outputs[corruption, s, name]) for s in imagenet_c.SEVERITIES]
        assert len(set(hashes)) == 5, (corruption, name)


def test_frost_pictures_are_the_references():
    folder = corruptions.frost_folder()
    assert folder is not None
    for name, digest in corruptions.FROST_FILES.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def test_corrupt_refuses_other_shapes():
    with pytest.raises(ValueError, match=r"uint8 \[224, 224, 3\]"):
        imagenet_c.corrupt(np.zeros((48, 48, 3), np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="unknown corruption"):
        imagenet_c.corrupt(np.zeros((224, 224, 3), np.uint8), "rain", 1)


@pytest.mark.parametrize("corruption", imagenet_c.CORRUPTIONS)
def test_any_size_is_deterministic_changes_the_image_and_equals_corrupt_at_224(inputs, corruption):
    """`corrupt_any_size` (the native view's) at 48x40 and 320x320: the right shape, the same
    pixels for the same seed, not the input; at 224 it is `corrupt`."""
    rng = np.random.default_rng(1)
    for shape in ((48, 40, 3), (320, 320, 3)):
        image = np.clip(rng.normal(128, 40, size=shape), 0, 255).astype(np.uint8)
        np.random.seed(7)
        first = corruptions.corrupt_any_size(image, corruption, 3)
        np.random.seed(7)
        again = corruptions.corrupt_any_size(image, corruption, 3)
        assert first.shape == shape and first.dtype == np.uint8
        assert np.array_equal(first, again) and not np.array_equal(first, image), shape
    np.random.seed(9)
    a = corruptions.corrupt_any_size(inputs["coffee"], corruption, 2)
    np.random.seed(9)
    assert np.array_equal(a, imagenet_c.corrupt(inputs["coffee"], corruption, 2))


def test_per_severity_alexnet_errors_agree_with_the_published_means():
    """The per-severity table's means are the published five-severity means (6 digits)."""
    for corruption in imagenet_c.CORRUPTIONS:
        mean = sum(imagenet_c.ALEXNET_ERR_BY_SEVERITY[corruption]) / 5
        assert round(mean, 6) == imagenet_c.ALEXNET_ERR[corruption], corruption
