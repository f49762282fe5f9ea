"""Images that cannot be used are skipped, listed by path and counted, never fatal to a pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from rbench.cli import main


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
