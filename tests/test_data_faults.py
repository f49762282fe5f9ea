"""Images that cannot be used are skipped, listed by path and counted, never fatal to a pass (unless
not one of them can be read)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from rbench.frontend.cli import main


def make_bomb(path: Path, side: int = 20000) -> None:
    """A small JPEG whose header says `side` x `side` pixels: PIL refuses to open it (more than
    twice Image.MAX_IMAGE_PIXELS), as it would a real 20000x20000 image, at no cost here."""
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")  # baseline frame header: marker, length, precision, height, width
    data[sof + 5:sof + 9] = side.to_bytes(2, "big") + side.to_bytes(2, "big")
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_is_skipped_listed_and_counted(image_folder, tmp_path):
    bomb = sorted(image_folder.glob("3/*.JPEG"))[1]
    make_bomb(bomb)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", "random", "--data-dir", str(image_folder),
                                       "--bench", "validate", "--workers", "0", "--out", str(out),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "1 unreadable image(s) were left out of the metrics" in result.output
    assert str(bomb) in result.output.replace("\n", "")
    assert not (out / "failures.csv").exists() or len((out / "failures.csv").read_text().splitlines()) <= 1
    assert len((out / "results-imagefolder.csv").read_text().splitlines()) == 2  # header and the model's row
    (record,) = [json.loads(p.read_text()) for p in (out / "store" / "records").glob("*.json")]
    assert record.get("status", "ok") == "ok" and record["unreadable"] == [str(bomb)]


def test_a_long_thin_image_is_skipped_listed_and_the_others_scored(image_folder, tmp_path):
    """A 2 x 80000 PNG (half a megabyte) passes PIL's pixel count, but the eval resize of its
    shortest side would make a 168 x 6,720,000 image (gigabytes): it is skipped before it is
    decoded, and named, and the other images of the cell are scored."""
    import numpy as np

    thin = image_folder / "3" / "thin.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80000, 2, 3), dtype=np.uint8)).save(thin)
    assert thin.stat().st_size < 1_000_000
    Image.open(thin).close()  # PIL itself opens it: no decompression bomb by pixel count
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", "random", "--data-dir", str(image_folder),
                                       "--bench", "validate", "--workers", "0", "--out", str(out),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "1 unreadable image(s) were left out of the metrics" in result.output
    assert str(thin) in result.output.replace("\n", "")
    (record,) = [json.loads(p.read_text()) for p in (out / "store" / "records").glob("*.json")]
    assert record.get("status", "ok") == "ok" and record["unreadable"] == [str(thin)]
    (row,) = [line for line in result.output.splitlines() if line.startswith("validation: ")]
    assert " model=test_vit@random " in row and row.endswith(" images=32")  # the 8 x 4 other images, scored


def test_the_resize_bound_follows_timms_eval_geometry(tmp_path):
    """`resized_size` from the header alone equals the size the geometry's resize makes, in each
    crop mode; an image is skipped only past `RESIZE_LIMIT` crops of pixels."""
    import numpy as np
    from torchvision import transforms

    from rbench.worker.data import RESIZE_LIMIT, ImageDataset, eval_geometry, resized_size

    config = {"input_size": (3, 160, 160), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3,
              "crop_pct": 0.95}
    for width, height in [(300, 200), (200, 300), (40, 2000), (2000, 40)]:
        path = tmp_path / f"{width}x{height}.png"
        Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(path)
        for mode in ("center", "squash", "border"):
            geometry = eval_geometry({**config, "crop_mode": mode})
            resize = transforms.Compose(geometry.transforms[:1])
            with Image.open(path) as image:
                assert resized_size(geometry, image) == resize(image.convert("RGB")).size, (width, height, mode)
    # 40 x 2000 resizes (center) to 168 x 8400 = 1,411,200 pixels: under 64 crops (1,638,400); 30 x 2000 is over.
    samples = []
    for width in (40, 30):
        path = tmp_path / f"thin{width}.png"
        Image.fromarray(np.zeros((2000, width, 3), dtype=np.uint8)).save(path)
        samples.append((str(path), 0))
    assert RESIZE_LIMIT == 64
    dataset = ImageDataset(samples, eval_geometry({**config, "crop_mode": "center"}), config["input_size"])
    assert [dataset[i][2] for i in range(2)] == [True, False]


def test_a_data_set_of_only_unreadable_images_is_an_error_that_says_so(image_folder, tmp_path):
    """No image of the folder can be read: no row to write, so the cell fails (`unreadable`,
    a failures.csv row, exit status 1) saying so, instead of exit 0 with nothing."""
    paths = sorted(image_folder.glob("*/*.JPEG"))
    for path in paths:
        path.write_bytes(b"not a JPEG")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-m", "test_vit", "--weights", "random", "--data-dir", str(image_folder),
                                       "--bench", "validate", "--workers", "0", "--out", str(out), "--no-cache"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"unreadable: none of the {len(paths)} images of imagefolder could be read" in text
    assert list(csv.DictReader((out / "results-imagefolder.csv").open())) == []  # a header, no row
    (failure,) = list(csv.DictReader((out / "failures.csv").open()))
    assert failure["status"] == "unreadable" and failure["model"] == "test_vit@random"
