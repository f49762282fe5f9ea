"""A source's build made by the cells that read it (`rbench.SourceBuild`, `make_slices`): each
slice made once, under its lock, by one of the builders that need it; never read half made;
a stopped build resumed with only its missing files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import rbench
from rbench.builds import make_slices, slice_made

SLICES = {"a/1": 3, "a/2": 3, "b/1": 2}  # slice -> files (one per sample)


def slice_table():
    table, first = [], 0
    for name, n in SLICES.items():
        table.append((name, first, first + n))
        first += n
    return table


class Tasks:
    """One task per missing file of the slices asked for; each file's content names it."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self, slices):
        return [((str(self.folder / name / f"{i}.txt"), f"{name}:{i}"), 1)
                for name in slices for i in range(SLICES[name]) if not (self.folder / name / f"{i}.txt").exists()]


class Maker:
    """`make`, logging which builder made which file, and stopping where a test says."""

    def __init__(self):
        self.made: list[tuple[str, str]] = []  # (builder, file)
        self.hold: dict[str, threading.Event] = {}  # builder -> released when set
        self.fail_after: int | None = None

    def __call__(self, task) -> int:
        path, text = task
        builder = threading.current_thread().name
        if builder in self.hold:
            self.hold[builder].wait(timeout=60)
        if self.fail_after is not None and len(self.made) >= self.fail_after:
            raise RuntimeError("the build stopped")
        rbench.write_bytes(Path(path), text.encode())
        self.made.append((builder, path))
        return 1


def build_of(folder: Path, maker: Maker) -> rbench.SourceBuild:
    return rbench.SourceBuild(folder=folder, slices=slice_table(), tasks=Tasks(folder), make=maker, workers=1,
                              files=("*.txt",), about={"what": "a test build"}, label="making {files} files in {folder}")


def whole(folder: Path, name: str) -> bool:
    return all((folder / name / f"{i}.txt").read_text() == f"{name}:{i}" for i in range(SLICES[name]))


def test_two_builders_of_one_slice_make_it_once_and_neither_reads_it_half_made(tmp_path):
    """Builder A holds slice a/1 mid-way (its first file written, the rest not); B, needing the
    same slice, finds it locked and not complete, makes the other slices, then waits. When B
    returns, the slice is whole, and every file was made exactly once."""
    from dataclasses import replace

    folder = tmp_path / "build"
    maker = Maker()
    maker.hold["A"] = threading.Event()
    seen_while_held = []

    def b_note(message: str) -> None:
        if "waiting for another builder of a/1" in message:
            # B is about to wait for A's slice: a/1 is locked by A and not complete.
            seen_while_held.append(slice_made(folder, "a/1", 0, 3))
            maker.hold["A"].set()

    results = {}
    # A claims the first slice (a/1) and blocks in its first task; B starts only once A holds it.
    original_tasks = Tasks(folder)
    claimed = threading.Event()

    def tasks_then_signal(slices):
        found = original_tasks(slices)
        if threading.current_thread().name == "A" and slices == ["a/1"]:
            claimed.set()
        return found

    build = replace(build_of(folder, maker), tasks=tasks_then_signal)
    a = threading.Thread(name="A", target=lambda: results.setdefault("A", make_slices(build, "t", 8)))
    a.start()
    assert claimed.wait(timeout=60)
    b = threading.Thread(name="B", target=lambda: results.setdefault("B", make_slices(build, "t", 8, note=b_note)))
    b.start()
    b.join(timeout=120)
    a.join(timeout=120)
    assert not a.is_alive() and not b.is_alive()

    assert seen_while_held == [False]  # never taken as made while its builder held it
    files = [path for _, path in maker.made]
    assert sorted(files) == sorted({str(folder / n / f"{i}.txt") for n, k in SLICES.items() for i in range(k)})
    assert len(files) == len(set(files)) == 8  # each file made once
    assert {p for who, p in maker.made if who == "A"} == {str(folder / "a/1" / f"{i}.txt") for i in range(3)}
    assert {p for who, p in maker.made if who == "B"} == {str(folder / n / f"{i}.txt") for n in ("a/2", "b/1")
                                                         for i in range(SLICES[n])}
    assert results == {"A": 3, "B": 5}
    for name, first, end in slice_table():
        assert slice_made(folder, name, first, end) and whole(folder, name)
    marker = rbench.made.read_mark(folder)
    assert marker["dataset"] == "t" and ".complete" in marker["files"] and "*.txt" in marker["files"]
    assert (folder / "build.json").is_file()
    # Nothing left to make: a third builder makes nothing.
    assert make_slices(build, "t", 8) == 0 and len(maker.made) == 8


def test_a_stopped_build_leaves_no_complete_slice_and_resumes_with_the_missing_files(tmp_path):
    folder = tmp_path / "build"
    maker = Maker()
    maker.fail_after = 4  # a/1 made, then one file of a/2, then it stops
    with pytest.raises(RuntimeError, match="the build stopped"):
        make_slices(build_of(folder, maker), "t", 8)
    assert slice_made(folder, "a/1", 0, 3)
    assert not slice_made(folder, "a/2", 3, 6) and not slice_made(folder, "b/1", 6, 8)
    maker.fail_after = None
    before = len(maker.made)
    assert make_slices(build_of(folder, maker), "t", 8) == 4  # the 2 left of a/2 and b/1's 2
    assert len(maker.made) - before == 4
    assert all(whole(folder, n) for n in SLICES)


def test_only_the_slices_of_the_samples_needed_are_made(tmp_path):
    folder = tmp_path / "build"
    maker = Maker()
    assert make_slices(build_of(folder, maker), "t", 4) == 6  # samples 0-3: slices a/1 and a/2
    assert not (folder / "b/1" / "0.txt").exists() and not slice_made(folder, "b/1", 6, 8)


def test_a_slice_name_outside_the_folder_is_refused(tmp_path):
    build = rbench.SourceBuild(folder=tmp_path / "build", slices=[("../x", 0, 1)], tasks=Tasks(tmp_path),
                               make=Maker(), workers=1)
    with pytest.raises(rbench.DataError, match="not a folder inside"):
        make_slices(build, "t", 1)
    assert not (tmp_path / "x").exists()
