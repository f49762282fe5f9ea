"""The decoded-input cache: the same pixels and scores with and without it, keys that follow the
files and the data config, damaged entries detected and rebuilt, and a size limit kept."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from timm.data import create_transform

from rbench import DataRequest
from rbench.frontend.cli import main
from rbench.worker.data import device_batches, make_loader
from rbench.worker.input_cache import BuildingLoader, CacheCorrupted, CachedBatches, EntryBuild, InputCache, entry_key
from rbench.registry import get_registry

from . import imagenet_fixtures
from .conftest import csv_rows, invoke_apart

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Two eval geometries that differ in every part: size (and a non-square one), crop_pct, crop
# mode and interpolation.
CONFIGS = {
    "160-center-bicubic": {"input_size": (3, 160, 160), "crop_pct": 0.95, "crop_mode": "center",
                           "interpolation": "bicubic", "mean": MEAN, "std": STD},
    "112x128-squash-bilinear": {"input_size": (3, 112, 128), "crop_pct": 0.875, "crop_mode": "squash",
                                "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
}


def load_source(root: Path):
    return get_registry().datasets["imagefolder"].load(DataRequest(path=root, cache_dir=root.parent))


def oracle_pixels(source, config) -> torch.Tensor:
    """`[N, H, W, 3]` uint8, one image at a time: PIL, timm's (non-prefetcher) eval transform
    without its tensor conversion and normalisation."""
    steps = [t for t in create_transform(**config, is_training=False).transforms
             if "ToTensor" not in type(t).__name__ and "Normalize" not in type(t).__name__]
    images = []
    for path, _ in source.samples:
        img = Image.open(path).convert("RGB")
        for t in steps:
            img = t(img)
        images.append(torch.from_numpy(np.array(img)))
    return torch.stack(images)


def pixels_of(batches) -> torch.Tensor:
    return torch.cat([pixels for pixels, _, _ in batches])


def normalised_of(batches, config) -> torch.Tensor:
    return torch.cat([x for x, _, _ in device_batches(batches, "cpu", config["mean"], config["std"])])


LOADING = dict(batch_size=5, workers=2, pin_memory=False)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cold_warm_and_uncached_passes_give_the_oracle_pixels_bit_for_bit(name, image_folder, tmp_path):
    config = CONFIGS[name]
    source = load_source(image_folder)
    cache = InputCache(tmp_path / "cache")
    expected = oracle_pixels(source, config)
    _, h, w = config["input_size"]
    assert expected.shape == (32, h, w, 3)

    uncached = make_loader(source, config, **LOADING)
    cold = cache.loader(source, config, **LOADING)
    assert isinstance(cold, BuildingLoader)  # decodes and writes the entry (in two worker processes)
    cold_pixels = pixels_of(cold)
    warm = cache.loader(source, config, **LOADING)
    assert isinstance(warm, CachedBatches)  # reads it
    for got in (pixels_of(uncached), cold_pixels, pixels_of(warm)):
        assert torch.equal(got, expected)

    # Normalised on the "device": (x - 255 mean) / (255 std), as timm's prefetcher does.
    mean = torch.tensor([m * 255 for m in config["mean"]]).view(1, 3, 1, 1)
    std = torch.tensor([s * 255 for s in config["std"]]).view(1, 3, 1, 1)
    oracle = (expected.permute(0, 3, 1, 2).float() - mean) / std
    for batches in (make_loader(source, config, **LOADING), cache.loader(source, config, **LOADING)):
        got = normalised_of(batches, config)
        assert got.is_contiguous() and torch.equal(got, oracle)


@pytest.mark.parametrize("batch_size,workers", [(5, 0), (7, 2), (64, 1)])
def test_a_warm_pass_reads_its_entry_in_batches_never_mapping_it(batch_size, workers, image_folder, tmp_path):
    """The warm pass's resident memory stays a few batches whatever the entry's size: no batch is
    read through a mapping of the entry's files, and the pixels are still the oracle's."""
    config = CONFIGS["112x128-squash-bilinear"]
    source = load_source(image_folder)
    cache = InputCache(tmp_path / "cache")
    pixels_of(cache.loader(source, config, **LOADING))  # the cold pass writes the entry
    warm = cache.loader(source, config, batch_size=batch_size, workers=workers, pin_memory=False)
    assert isinstance(warm, CachedBatches)
    got, indices = [], []
    for pixels, index, ok in warm:
        mapped = Path("/proc/self/maps").read_text()
        assert "pixels.u8" not in mapped and "rows.bin" not in mapped
        assert len(pixels) <= batch_size and bool(ok.all())
        got.append(pixels)
        indices.append(index)
    assert torch.equal(torch.cat(indices), torch.arange(len(source.samples)))
    assert torch.equal(torch.cat(got), oracle_pixels(source, config))


class Transposed:
    """A sample_transform that returns a non-contiguous view (as ImageNet-C's frost can): the
    image mirrored on its diagonal, same size for a square crop."""

    def __call__(self, index: int, image):
        return np.asarray(image).transpose(1, 0, 2)


def test_a_non_contiguous_sample_transform_is_cached_and_read_back_bit_for_bit(image_folder, tmp_path):
    from dataclasses import replace

    config = CONFIGS["160-center-bicubic"]
    source = replace(load_source(image_folder), sample_transform=Transposed())
    expected = oracle_pixels(source, config).transpose(1, 2)
    cache = InputCache(tmp_path / "cache")
    cold = cache.loader(source, config, **LOADING)
    assert isinstance(cold, BuildingLoader)
    assert torch.equal(pixels_of(cold), expected)  # written by the loader workers
    warm = cache.loader(source, config, **LOADING)
    assert isinstance(warm, CachedBatches)  # the entry was committed whole, and its CRCs match
    assert torch.equal(pixels_of(warm), expected)
    assert torch.equal(pixels_of(make_loader(source, config, **LOADING)), expected)


def test_the_row_writer_takes_a_non_contiguous_row(tmp_path):
    from rbench.worker.input_cache import ROW_BYTES, RowWriter, _row_crc

    (tmp_path / "pixels.u8").write_bytes(bytes(2 * 4 * 4 * 3))
    (tmp_path / "rows.bin").write_bytes(bytes(2 * ROW_BYTES))
    row = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3).transpose(1, 0, 2)
    writer = RowWriter(tmp_path, 2, (4, 4, 3))
    writer.write(1, row, True)
    writer.close()
    written = np.fromfile(tmp_path / "pixels.u8", np.uint8).reshape(2, 4, 4, 3)
    assert np.array_equal(written[1], row) and not written[0].any()
    crc = int.from_bytes((tmp_path / "rows.bin").read_bytes()[ROW_BYTES:ROW_BYTES + 4], "little")
    assert crc == _row_crc(np.ascontiguousarray(row), True)


@pytest.mark.parametrize("model,img_size", [("test_vit", None), ("test_efficientnet", "128")])
def test_scores_are_the_same_uncached_cold_and_warm(model, img_size, image_folder, tmp_path):
    weights = tmp_path / "w.safetensors"
    imagenet_fixtures.pinned_head_model(5, list(range(8)), weights, name=model)
    common = ["run", "-m", model, "--weights", str(weights), "--data-dir", str(image_folder), "--bench", "validate",
              "--batch-size", "6", "--workers", "2", "--cache-dir", str(tmp_path / "cache"),
              *(["--img-size", img_size] if img_size else [])]
    outputs, files = {}, {}
    for run in ("uncached", "cold", "warm"):
        out = tmp_path / run
        extra = ["--no-cache"] if run == "uncached" else []
        result = CliRunner().invoke(main, [*common, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        outputs[run], files[run] = result.output, (out / "results-imagefolder.csv").read_text()
    assert "decoding imagefolder once" in outputs["cold"]
    assert "decoding" not in outputs["warm"] and "decoding" not in outputs["uncached"]
    assert files["uncached"] == files["cold"] == files["warm"]
    (row,) = csv_rows(tmp_path / "warm" / "results-imagefolder.csv")
    assert 0 < float(row["top1"]) < float(row["top5"]) < 100  # the scores depend on the pixels
    assert row["img_size"] == (img_size or "160")


def test_key_follows_every_file_and_every_part_of_the_geometry(image_folder):
    source = load_source(image_folder)
    config = CONFIGS["160-center-bicubic"]
    key = entry_key(source, config, "transform")
    assert entry_key(source, config, "transform") == key
    # Normalisation happens on the device: it is not part of the key.
    assert entry_key(source, {**config, "mean": (0, 0, 0), "std": (1, 1, 1)}, "transform") == key
    for change in ({"input_size": (3, 160, 128)}, {"crop_pct": 0.9}, {"crop_mode": "squash"},
                   {"interpolation": "bilinear"}):
        assert entry_key(source, {**config, **change}, "transform") != key, change
    assert entry_key(source, config, "another transform") != key

    path = Path(source.samples[7][0])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched
    touched = entry_key(source, config, "transform")
    assert touched != key
    with open(path, "ab") as f:  # one more byte, same mtime
        f.write(b"\0")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert entry_key(source, config, "transform") not in (key, touched)


def test_a_changed_file_makes_a_new_entry(image_folder, tmp_path):
    source = load_source(image_folder)
    config = CONFIGS["160-center-bicubic"]
    cache = InputCache(tmp_path / "cache")
    pixels_of(cache.loader(source, config, **LOADING))
    assert isinstance(cache.loader(source, config, **LOADING), CachedBatches)

    path = Path(source.samples[3][0])
    Image.new("RGB", (90, 70), (200, 10, 10)).save(path, quality=90)  # new content
    built = cache.loader(source, config, **LOADING)
    assert isinstance(built, BuildingLoader)
    assert torch.equal(pixels_of(built), oracle_pixels(source, config))
    assert len(cache.entries()) == 2  # the old entry stays until cleared; it is never read again
    assert torch.equal(pixels_of(cache.loader(source, config, **LOADING)), oracle_pixels(source, config))


def built_entry(image_folder: Path, tmp_path: Path):
    source = load_source(image_folder)
    config = CONFIGS["160-center-bicubic"]
    cache = InputCache(tmp_path / "cache")
    pixels_of(cache.loader(source, config, **LOADING))
    (entry,) = cache.entries()
    return source, config, cache, entry.path


def started_build(cache: InputCache, pid: int | None = None) -> Path:
    """The folder of a build as it starts (its marker, its reserved files); under `pid` (a
    process that does not exist), what a build that died leaves."""
    build = EntryBuild(cache, cache.root / "never-committed", {"images": 2, "shape": [4, 4, 3]})
    build.writer.close()
    if pid is None:
        return build.folder
    dead = cache.root / f".building-{socket.gethostname()}-{pid}-abcd1234"
    os.rename(build.folder, dead)
    return dead


def test_a_damaged_row_is_detected_before_it_is_handed_out(image_folder, tmp_path):
    source, config, cache, path = built_entry(image_folder, tmp_path)
    row = 160 * 160 * 3
    with open(path / "pixels.u8", "r+b") as f:  # one byte of sample 12 (the third batch of 5)
        f.seek(12 * row + 1000)
        byte = f.read(1)
        f.seek(12 * row + 1000)
        f.write(bytes([byte[0] ^ 0x40]))
    batches = cache.loader(source, config, batch_size=5, workers=0, pin_memory=False)
    assert isinstance(batches, CachedBatches)  # its files look whole: only the checksum can tell
    handed_out = []
    with pytest.raises(CacheCorrupted, match="sample 12"):
        for _, indices, _ in batches:
            handed_out.extend(indices.tolist())
    assert handed_out == list(range(10))  # the batches before it, never the damaged one


def test_a_flipped_readable_flag_is_damage_too(image_folder, tmp_path):
    source, config, cache, path = built_entry(image_folder, tmp_path)
    with open(path / "rows.bin", "r+b") as f:
        f.seek(20 * 8 + 4)  # sample 20's readable flag
        f.write(b"\x00")
    with pytest.raises(CacheCorrupted, match="sample 20"):
        pixels_of(cache.loader(source, config, **LOADING))


@pytest.mark.parametrize("damage", ["truncated", "meta garbled", "meta of another format", "row not written"])
def test_a_broken_or_stale_entry_is_rebuilt_not_read(damage, image_folder, tmp_path):
    source, config, cache, path = built_entry(image_folder, tmp_path)
    if damage == "truncated":
        os.truncate(path / "pixels.u8", (path / "pixels.u8").stat().st_size - 1)
    elif damage == "meta garbled":
        (path / "meta.json").write_text("{not json")
    elif damage == "meta of another format":
        meta = json.loads((path / "meta.json").read_text())
        (path / "meta.json").write_text(json.dumps({**meta, "format": meta["format"] + 1}))
    else:
        with open(path / "rows.bin", "r+b") as f:
            f.seek(31 * 8 + 5)
            f.write(b"\x00")
    rebuilt = cache.loader(source, config, **LOADING)
    assert isinstance(rebuilt, BuildingLoader)
    assert torch.equal(pixels_of(rebuilt), oracle_pixels(source, config))
    assert isinstance(cache.loader(source, config, **LOADING), CachedBatches)


def test_a_run_that_meets_a_damaged_entry_rebuilds_it_and_scores_as_uncached(image_folder, tmp_path):
    weights = tmp_path / "w.safetensors"
    imagenet_fixtures.pinned_head_model(2, list(range(8)), weights, name="test_vit")
    common = ["run", "-m", "test_vit", "--weights", str(weights), "--data-dir", str(image_folder), "--bench",
              "validate", "--batch-size", "5", "--workers", "0", "--cache-dir", str(tmp_path / "cache")]
    assert CliRunner().invoke(main, [*common, "--out", str(tmp_path / "uncached"), "--no-cache"]).exit_code == 0
    assert CliRunner().invoke(main, [*common, "--out", str(tmp_path / "cold")]).exit_code == 0
    (entry,) = InputCache(tmp_path / "cache").entries()
    with open(entry.path / "pixels.u8", "r+b") as f:
        f.seek(30 * 160 * 160 * 3)  # sample 30, in the last batch
        f.write(b"\xff" * 300)
    result = CliRunner().invoke(main, [*common, "--out", str(tmp_path / "damaged")])
    assert result.exit_code == 0, result.output
    assert "sample 30 does not match its checksum; rebuilding it" in result.output
    uncached = (tmp_path / "uncached" / "results-imagefolder.csv").read_text()
    assert (tmp_path / "damaged" / "results-imagefolder.csv").read_text() == uncached
    source = load_source(image_folder)
    config = CONFIGS["160-center-bicubic"]  # test_vit's own eval config
    rebuilt = InputCache(tmp_path / "cache").loader(source, config, **LOADING)
    assert isinstance(rebuilt, CachedBatches) and torch.equal(pixels_of(rebuilt), oracle_pixels(source, config))


def test_an_entry_over_the_size_limit_is_not_written_and_the_run_goes_on(image_folder, tmp_path):
    common = ["run", "-m", "test_vit", "--weights", "random", "--data-dir", str(image_folder), "--bench", "validate",
              "--batch-size", "8", "--workers", "0", "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, [*common, "--out", str(tmp_path / "small"), "--cache-size", "2MB"])
    assert result.exit_code == 0, result.output
    assert "not cached (it needs 2.46 MB" in result.output and "raise --cache-size" in result.output
    assert InputCache(tmp_path / "cache").entries() == []
    assert CliRunner().invoke(main, [*common, "--out", str(tmp_path / "cached")]).exit_code == 0
    assert len(InputCache(tmp_path / "cache").entries()) == 1
    assert ((tmp_path / "small" / "results-imagefolder.csv").read_text()
            == (tmp_path / "cached" / "results-imagefolder.csv").read_text())


def test_the_limit_counts_the_entries_already_there(image_folder, tmp_path):
    source = load_source(image_folder)
    first, second = CONFIGS["160-center-bicubic"], CONFIGS["112x128-squash-bilinear"]
    notes = []
    one_entry = 32 * (160 * 160 * 3 + 8)
    cache = InputCache(tmp_path / "cache", limit=one_entry + 32 * (112 * 128 * 3 + 8) - 1)
    assert isinstance(cache.loader(source, first, note=notes.append, **LOADING), BuildingLoader)
    pixels_of(cache.loader(source, first, **LOADING))
    assert len(notes) == 1 and "decoding imagefolder once" in notes[0]
    notes.clear()
    plain = cache.loader(source, second, note=notes.append, **LOADING)
    assert not isinstance(plain, (BuildingLoader, CachedBatches))
    assert torch.equal(pixels_of(plain), oracle_pixels(source, second))
    assert len(notes) == 1 and "not cached" in notes[0] and "2.46 MB of its" in notes[0]


def test_a_pass_stopped_early_leaves_no_entry(image_folder, tmp_path):
    source = load_source(image_folder)
    cache = InputCache(tmp_path / "cache")
    batches = iter(cache.loader(source, CONFIGS["160-center-bicubic"], **LOADING))
    next(batches)
    batches.close()  # what an exception in the model does to the loop
    assert cache.entries() == []
    assert list((tmp_path / "cache").iterdir()) == []


def test_cache_ls_and_clear(image_folder, tmp_path):
    source, config, cache, path = built_entry(image_folder, tmp_path)
    dead = started_build(cache, pid=999999999)  # no such process
    where = ["--cache-dir", str(cache.root)]

    listed = CliRunner().invoke(main, ["cache", "ls", *where])
    assert listed.exit_code == 0, listed.output
    assert path.name in listed.output and "(incomplete)" in listed.output
    assert "2 entries" in listed.output

    missing = CliRunner().invoke(main, ["cache", "clear", "nosuch", *where])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "rbench cache ls" in missing.output

    cleared = CliRunner().invoke(main, ["cache", "clear", "imagefolder", *where])
    assert cleared.exit_code == 0 and "removed 1 entry" in cleared.output
    assert [e.name for e in cache.entries()] == [dead.name]
    cleared = CliRunner().invoke(main, ["cache", "clear", "--all", *where])
    assert "removed 1 entry" in cleared.output and cache.entries() == []
    assert "is empty" in CliRunner().invoke(main, ["cache", "ls", *where]).output


def test_cache_clear_without_names_asks_or_needs_all(image_folder, tmp_path, monkeypatch):
    source, config, cache, path = built_entry(image_folder, tmp_path)
    where = ["--cache-dir", str(cache.root)]

    refused = CliRunner().invoke(main, ["cache", "clear", *where])  # no terminal: never asks
    assert refused.exit_code == 2 and refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("rbench: error: rbench cache clear with no names would remove all 1 entry (")
    assert "pass --all to do so" in line
    assert path.is_dir()

    monkeypatch.setattr("rbench.frontend.cli._interactive", lambda: True)
    kept = CliRunner().invoke(main, ["cache", "clear", *where], input="n\n")
    assert kept.exit_code == 0 and "remove all 1 entry" in kept.output and "nothing removed" in kept.output
    assert path.is_dir()
    both = CliRunner().invoke(main, ["cache", "clear", "--all", "imagefolder", *where])
    assert both.exit_code == 2 and "not both" in both.output and path.is_dir()
    cleared = CliRunner().invoke(main, ["cache", "clear", *where], input="y\n")
    assert cleared.exit_code == 0 and "removed 1 entry" in cleared.output
    assert not path.exists() and cache.entries() == []


def test_a_new_build_removes_folders_of_dead_builds(image_folder, tmp_path):
    cache = InputCache(tmp_path / "cache")
    dead = started_build(cache, pid=999999999)
    alive = started_build(cache)  # this process's
    pixels_of(cache.loader(load_source(image_folder), CONFIGS["160-center-bicubic"], **LOADING))
    assert not dead.exists() and alive.exists()


def test_a_bad_size_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["run", "--cache-size", "lots", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--cache-size 'lots'" in result.output and "100GB" in result.output
    assert result.output.count("\n") == 1


def test_two_builds_of_one_entry_leave_one_whole_entry(image_folder, tmp_path):
    """Two processes that miss the same entry both build it; the first rename wins, the
    second drops its copy, and the entry read afterwards is whole."""
    source = load_source(image_folder)
    config = CONFIGS["160-center-bicubic"]
    cache = InputCache(tmp_path / "cache")
    first, second = cache.loader(source, config, **LOADING), cache.loader(source, config, **LOADING)
    assert isinstance(first, BuildingLoader) and isinstance(second, BuildingLoader)
    assert first.build.folder != second.build.folder
    pixels_of(second)
    pixels_of(first)  # finishes last: its rename finds the entry there
    (entry,) = cache.entries()
    assert entry.meta is not None and not first.build.folder.exists()
    assert torch.equal(pixels_of(cache.loader(source, config, **LOADING)), oracle_pixels(source, config))


# --- only what rbench made: a cache folder may hold other things --------------------------

def someones_files(root: Path) -> dict[Path, bytes]:
    """Things a person keeps in a folder given as --cache-dir: folders, a file, and folders
    that look like rbench's (a build's name with no marker; an entry's marker beside a file
    that is not an entry's)."""
    files = {root / ".ssh" / "id_ed25519": b"private key", root / "thesis" / "chapter1.tex": b"\\chapter{One}",
             root / "notes.txt": b"notes",
             root / f".building-{socket.gethostname()}-999999998-abcd1234" / "pixels.u8": b"not a build",
             root / "imagefolder-160x160-bicubic-crop0.95-center-0123456789ab" / "draft.txt": b"draft"}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    from rbench.made import mark

    mark(root / "imagefolder-160x160-bicubic-crop0.95-center-0123456789ab", "input-cache",
         ("pixels.u8", "rows.bin", "meta.json"))
    return files


def test_a_run_with_a_cache_folder_of_other_things_removes_none_of_them(image_folder, tmp_path):
    cache = InputCache(tmp_path / "home")
    theirs = someones_files(cache.root)
    dead = started_build(cache, pid=999999999)
    pixels_of(cache.loader(load_source(image_folder), CONFIGS["160-center-bicubic"], **LOADING))
    assert not dead.exists() and len(cache.entries()) == 1
    assert {p: p.read_bytes() for p in theirs} == theirs


def built_imagenet_c_and_p(tmp_path: Path) -> dict[str, Path]:
    """ImageNet-C and ImageNet-P built as a run builds them, into rbench's cache folder: the
    fewest images, one corruption and one perturbation."""
    import rbench
    from rbench.builds import make_slices

    val = tmp_path / "imagenet" / "val"
    synsets = imagenet_fixtures.info_lines("imagenet_synsets.txt")
    rng = np.random.default_rng(0)
    for c in (0, 6):
        imagenet_fixtures._jpeg(val / synsets[c] / f"ILSVRC2012_val_{c + 1:08d}.JPEG", rng)
    made = {}
    for name, options in (("imagenet-c", {"per_class": "1", "corruptions": "pixelate", "severities": "1",
                                          "build_workers": "1"}),
                          ("imagenet-p", {"per_class": "1", "perturbations": "brightness", "build_workers": "1"})):
        source = get_registry().datasets[name].load(DataRequest(path=val, cache_dir=rbench.cache_dir(),
                                                                allow_partial=True, options=options))
        make_slices(source.build, name, len(source.samples))  # as the first validation cell does
        (folder,) = (rbench.cache_dir() / name).iterdir()
        assert all(Path(p).is_file() and Path(p).is_relative_to(folder) for p, _ in source.samples[2:])
        made[name] = folder
    return made


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("skimage", "cv2", "scipy")),
                    reason="the corruptions extra is not installed")
def test_cache_ls_and_clear_all_touch_only_what_rbench_made(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE_DIR", str(tmp_path / "rbench-cache"))
    source, config, cache, path = built_entry(image_folder, tmp_path)
    dead = started_build(cache, pid=999999999)
    theirs = someones_files(cache.root)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "data.bin").write_bytes(b"elsewhere")
    (cache.root / "link").symlink_to(tmp_path / "elsewhere")
    builds = built_imagenet_c_and_p(tmp_path)
    stray = builds["imagenet-c"] / "pixelate" / "README.txt"  # put into a build by someone
    stray.write_bytes(b"mine")
    theirs[stray] = b"mine"
    where = ["--cache-dir", str(cache.root)]

    listed = invoke_apart("cache", "ls", *where)
    assert listed.exit_code == 0, listed.output
    text = listed.stdout
    assert path.name in text and f"{dead.name} (incomplete)" in text and "2 entries" in text
    for name, folder in builds.items():
        assert f"{name}/{folder.name}" in text and name in text
    assert "2 builds" in text
    foreign = {line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("not rbench's, left alone: ")}
    assert foreign == {str(cache.root / name) for name in (".ssh", "thesis", "notes.txt", "link",
                                                            f".building-{socket.gethostname()}-999999998-abcd1234",
                                                            "imagefolder-160x160-bicubic-crop0.95-center-0123456789ab")
                       } | {str(stray)}

    cleared = invoke_apart("cache", "clear", "--all", *where)
    assert cleared.exit_code == 0, cleared.output
    assert "removed 2 entries" in cleared.stdout and "removed 2 data set builds" in cleared.stdout
    assert f"not rbench's, left alone: {cache.root / 'thesis'}" in cleared.stdout
    assert f"not rbench's, left alone: {stray}" in cleared.stdout
    assert not path.exists() and not dead.exists() and not builds["imagenet-p"].exists()
    assert {p: p.read_bytes() for p in theirs} == theirs  # every file of theirs, as it was
    assert (tmp_path / "elsewhere" / "data.bin").read_bytes() == b"elsewhere" and (cache.root / "link").is_symlink()
    # the ImageNet-C build is gone but for the stray file, its folders and the marker that
    # still says whose the folder is
    assert sorted(p.relative_to(builds["imagenet-c"]) for p in builds["imagenet-c"].rglob("*")) == \
        [Path(".rbench-made.json"), Path("pixelate"), Path("pixelate/README.txt")]
    assert cache.entries() == []


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("skimage", "cv2", "scipy")),
                    reason="the corruptions extra is not installed")
def test_cache_clear_by_data_set_removes_its_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE_DIR", str(tmp_path / "rbench-cache"))
    builds = built_imagenet_c_and_p(tmp_path)
    cleared = invoke_apart("cache", "clear", "imagenet-p", "--cache-dir", str(tmp_path / "inputs"))
    assert cleared.exit_code == 0 and "removed 1 data set build" in cleared.stdout, cleared.output
    assert not builds["imagenet-p"].exists() and (builds["imagenet-c"] / "build.json").is_file()
    cleared = invoke_apart("cache", "clear", builds["imagenet-c"].name, "--cache-dir", str(tmp_path / "inputs"))
    assert cleared.exit_code == 0 and not builds["imagenet-c"].exists(), cleared.output


def test_a_full_cache_disk_names_the_cache_folder_and_leaves_no_build(image_folder, tmp_path, monkeypatch):
    import errno

    import rbench.files
    import rbench.worker.input_cache

    source, config = load_source(image_folder), CONFIGS["160-center-bicubic"]
    cache = InputCache(tmp_path / "cache")

    def no_room(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:  # no room to reserve the entry: decoded, not cached, and said where
        patch.setattr(rbench.worker.input_cache.os, "posix_fallocate", no_room)
        notes = []
        assert torch.equal(pixels_of(cache.loader(source, config, note=notes.append, **LOADING)),
                           oracle_pixels(source, config))
    (note,) = notes
    assert "not cached (No space left on device in " + str(cache.root) in note
    assert cache.entries() == [] and list(cache.root.iterdir()) == []

    def fills_up(path, data):  # the disk fills as the last file is written: the write names no file
        return rbench.files.write_atomic(path, lambda f: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))

    monkeypatch.setattr(rbench.worker.input_cache, "write_json", fills_up)
    with pytest.raises(OSError) as raised:
        pixels_of(cache.loader(source, config, **LOADING))
    assert raised.value.errno == errno.ENOSPC and Path(raised.value.filename).parent.parent == cache.root
    assert list(cache.root.iterdir()) == []  # neither the build nor a temporary file is left
