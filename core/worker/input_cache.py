"""The decoded-input cache: a data set's images decoded, resized and cropped once per eval data
config, kept on disk as uint8 and read, batch by batch, by every later model with the same geometry.

A validation pass is mostly JPEG decoding and resizing; a zoo has hundreds of models but only a
few distinct eval geometries. An entry is one folder, `<data set>-<H>x<W>-<interpolation>-
crop<crop_pct>-<crop mode>-<key>`:

- `pixels.u8`: the images as the model sees them before normalisation, `[N, H, W, 3]` uint8;
  row i is sample i of the source.
- `rows.bin`: per sample, the CRC-32 of its readable flag and pixels, the flag, and whether the
  row was written.
- `meta.json`: the key and what the entry was made from. It is written last and the folder is
  renamed into place only when every row is written, so a folder with the key's name is whole.
- `.rbench-made.json`: the marker (see `made`), written first: only a folder that has it (or the
  `meta.json` of an entry of an earlier rbench) and holds nothing but these files is an entry;
  anything else in the cache folder is not rbench's, and is never removed.

The key hashes every file's path, size and modification time, the geometry of the data config
(input size, crop_pct, crop mode, interpolation, and timm's transform itself), the source's
identity and the versions of the libraries that decode and resize. Mean and std are not part of
it: normalisation happens on the device, so models that share geometry share an entry. Rows are
checked against their CRC as they are read, so a damaged file is detected, never fed to a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import RESIZE_LIMIT
from ..errors import RbenchError
from ..files import write_json
from ..folders import file_stats
from ..made import contents, is_real_folder, mark, read_mark, remove_made
from ..paths import cache_dir
from ..specs import Source

FORMAT = 1  # bump when the files' layout changes: older entries are then rebuilt
DEFAULT_LIMIT = 100 * 1000**3
BUILDING = ".building-"  # prefix of a folder being written
KIND = "input-cache"  # an entry's marker says this
ENTRY_FILES = ("pixels.u8", "rows.bin", "meta.json")
DISK_MARGIN = 1000**3  # never fill the disk: keep this much free after an entry
UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
         "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def default_root() -> Path:
    """Where the decoded-input cache lives by default: `<rbench cache>/inputs`."""
    return cache_dir() / "inputs"


def parse_size(text: str, option: str = "size") -> int:
    """`"100GB"`, `"512MiB"`, `"2.5t"` or a plain number of bytes -> bytes; `option` names the
    setting in the error."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", text.lower())
    if not match:
        raise RbenchError(f"{option} {text!r}: expected a number with an optional unit, for example 100GB or 512MiB")
    return int(float(match.group(1)) * UNITS[match.group(2) or ""])


def format_size(n: float) -> str:
    """Bytes in the largest decimal unit that keeps a leading digit: `7.53 GB`."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class CacheCorrupted(Exception):
    """A cache entry whose files do not match their checksums; it is removed and rebuilt."""

    def __init__(self, path: Path, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


ROW = "<IBBH"  # a sample's entry in rows.bin (struct format): CRC-32, readable, written, padding
ROW_BYTES = 8


def _row_dtype():
    """`ROW` as a numpy dtype, to read rows.bin whole."""
    import numpy as np

    return np.dtype([("crc", "<u4"), ("ok", "u1"), ("written", "u1"), ("pad", "<u2")])


def _row_crc(pixels, ok: bool) -> int:
    """The CRC-32 of a row: its readable flag, then its pixels (a flipped flag is damage too)."""
    import zlib

    return zlib.crc32(pixels, zlib.crc32(b"\x01" if ok else b"\x00"))


def geometry_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a timm data config that decide the cached pixels (not mean and std)."""
    return {"input_size": list(config["input_size"]), "crop_pct": config.get("crop_pct"),
            "crop_mode": config.get("crop_mode", "center"), "interpolation": config.get("interpolation")}


def _versions() -> dict[str, str]:
    import PIL
    import timm
    import torchvision

    return {"format": str(FORMAT), "pillow": PIL.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__}


def entry_key(source: Source, config: Mapping[str, Any], geometry_transform: Any) -> str:
    """A hash of everything that decides an entry's pixels; any change gives a new entry."""
    transform = source.sample_transform
    head = {
        "source": source.name, "identity": source.identity, "geometry": geometry_of(config),
        "transform": str(geometry_transform), "versions": _versions(),
        "resize_limit": RESIZE_LIMIT,  # which images are skipped as too large
        "sample_transform": None if transform is None else f"{type(transform).__module__}.{type(transform).__qualname__}",
        **({"border": source.border} if source.border else {}),
    }
    digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    stats = file_stats(path for path, _ in source.samples)
    for path, _ in source.samples:
        stat = stats[path]  # a missing file is an unreadable sample; its coming back changes the key
        digest.update((f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n" if stat else f"{path}\0missing\n").encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class EntryInfo:
    """One entry of the cache, for `rbench cache ls`: `meta` is None for one still being
    written (or left by a build that died)."""

    path: Path
    meta: dict[str, Any] | None
    bytes: int
    last_used: float

    @property
    def name(self) -> str:
        return self.path.name


def _legacy_meta(path: Path) -> bool:
    """Whether `path` holds the `meta.json` of a whole entry written before entries had markers."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and {"format", "key", "images", "shape", "versions"} <= meta.keys()


def is_entry(path: Path) -> bool:
    """Whether `path` is a folder that rbench made as an entry: its marker (or an earlier
    rbench's `meta.json`), and nothing inside it but an entry's files."""
    if not is_real_folder(path):
        return False
    marker = read_mark(path)
    if not ((marker is not None and marker["kind"] == KIND) or _legacy_meta(path)):
        return False
    return not contents(path, ENTRY_FILES).foreign


class RowWriter:
    """Writes rows of an entry being built; made in the main process, used in the loader
    workers (it pickles without its open files: each process opens them itself). Rows are
    written with `pwrite`, one call each: cheaper than faulting in the pages of a memory map."""

    def __init__(self, folder: Path, count: int, shape: tuple[int, int, int]):
        self.folder, self.count, self.shape = folder, count, tuple(shape)
        self.row_bytes = shape[0] * shape[1] * shape[2]
        self._files: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": None}

    def write(self, index: int, pixels, ok: bool) -> None:
        """Row `index`: `pixels` (`[H, W, 3]` uint8, any strides) and whether it was readable."""
        import struct

        import numpy as np

        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)  # a buffer in row order, to write and checksum
        if self._files is None:
            self._files = (os.open(self.folder / "pixels.u8", os.O_WRONLY), os.open(self.folder / "rows.bin", os.O_WRONLY))
        images, rows = self._files
        os.pwrite(images, memoryview(pixels).cast("B"), index * self.row_bytes)
        os.pwrite(rows, struct.pack(ROW, _row_crc(pixels, ok), ok, 1, 0), index * ROW_BYTES)

    def close(self) -> None:
        """Close the files this process opened (loader workers just exit)."""
        if self._files is not None:
            for fd in self._files:
                os.close(fd)
            self._files = None


class EntryBuild:
    """An entry being written in a hidden folder beside the cache's entries; `commit` renames
    it into place once every row is written, `abort` removes it."""

    def __init__(self, cache: InputCache, target: Path, meta: dict[str, Any]):
        self.target, self.meta = target, meta
        self.folder = cache.root / f"{BUILDING}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        count, shape = meta["images"], tuple(meta["shape"])
        self.folder.mkdir(parents=True)
        try:
            mark(self.folder, KIND, ENTRY_FILES)
            for name, size in (("pixels.u8", count * shape[0] * shape[1] * shape[2]),
                               ("rows.bin", count * ROW_BYTES)):
                with open(self.folder / name, "wb") as f:
                    # Reserve the space now: a full disk is then an error here, not a crash
                    # (SIGBUS) in a loader worker writing to a memory map.
                    if hasattr(os, "posix_fallocate"):
                        os.posix_fallocate(f.fileno(), 0, size)
                    else:
                        f.truncate(size)
        except BaseException:
            self.abort()
            raise
        self.writer = RowWriter(self.folder, count, shape)

    def commit(self) -> Path | None:
        """Check every row was written, write `meta.json`, rename into place. Returns the entry's
        folder, or None if another process put the same entry there first (ours is dropped)."""
        import numpy as np

        self.writer.close()
        rows = np.memmap(self.folder / "rows.bin", _row_dtype(), "r", shape=(self.meta["images"],))
        written = bool(rows["written"].all())
        del rows
        if not written:
            self.abort()
            raise RuntimeError(f"input cache build {self.folder}: the pass ended with rows not written")
        try:
            write_json(self.folder / "meta.json", {**self.meta, "created": time.time()})
        except BaseException:  # a full disk: its error names the file; the build leaves nothing
            self.abort()
            raise
        try:
            os.rename(self.folder, self.target)
        except OSError:  # the same entry, finished first by another process
            self.abort()
            return None
        return self.target

    def abort(self) -> None:
        if hasattr(self, "writer"):
            self.writer.close()
        remove_made(self.folder, ENTRY_FILES)


class CachedBatches:
    """Batches read from a complete entry, in order: `(pixels [B, H, W, 3] uint8, indices, ok)`,
    as the decoding loader yields them. Each row is checked against its CRC as it is read
    (`CacheCorrupted` if one does not match). `threads` read ahead (0: read on demand); with
    `pin_memory` the rows are copied straight into pinned memory, for a fast copy to the device."""

    def __init__(self, folder: Path, count: int, shape: Sequence[int], *, batch_size: int, threads: int,
                 pin_memory: bool):
        self.folder, self.count, self.shape = folder, count, tuple(shape)
        self.batch_size, self.threads, self.pin_memory = batch_size, threads, pin_memory

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def _read(self, batch: int, pixels_file: int, rows_file: int):
        import numpy as np
        import torch

        # Read into the batch's own buffer, never through a mapping of the entry: the pass then
        # holds a few batches, not every page of the entry it has read (those stay in the page
        # cache, reclaimable, and out of the process's resident memory).
        lo, hi = batch * self.batch_size, min(self.count, (batch + 1) * self.batch_size)
        row_bytes = int(np.prod(self.shape))
        pixels = torch.empty((hi - lo, *self.shape), dtype=torch.uint8, pin_memory=self.pin_memory)
        view = pixels.numpy()
        _read_exactly(pixels_file, view, lo * row_bytes, self.folder / "pixels.u8")
        meta = np.empty(hi - lo, _row_dtype())
        _read_exactly(rows_file, meta, lo * ROW_BYTES, self.folder / "rows.bin")
        for i in range(hi - lo):
            if not meta["written"][i] or _row_crc(view[i], bool(meta["ok"][i])) != meta["crc"][i]:
                raise CacheCorrupted(self.folder, f"sample {lo + i} does not match its checksum")
        return pixels, torch.arange(lo, hi), torch.from_numpy(meta["ok"].astype(bool))

    def _batches(self, pixels_file: int, rows_file: int) -> Iterator[Any]:
        if self.threads <= 0:
            for batch in range(len(self)):
                yield self._read(batch, pixels_file, rows_file)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        # Reads and CRCs release the GIL, so a few threads keep ahead of the model.
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rbench-cache")
        try:
            ahead = deque(pool.submit(self._read, b, pixels_file, rows_file) for b in range(min(len(self), 2 * self.threads)))
            following = len(ahead)
            while ahead:
                batch = ahead.popleft().result()
                if following < len(self):
                    ahead.append(pool.submit(self._read, following, pixels_file, rows_file))
                    following += 1
                yield batch
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[Any]:
        pixels_file = os.open(self.folder / "pixels.u8", os.O_RDONLY)
        try:
            rows_file = os.open(self.folder / "rows.bin", os.O_RDONLY)
            try:
                yield from self._batches(pixels_file, rows_file)
            finally:
                os.close(rows_file)
        finally:
            os.close(pixels_file)


def _read_exactly(fd: int, array, offset: int, path: Path) -> None:
    """Fill the contiguous numpy `array` with the bytes of file `fd` from `offset` (positioned
    reads: threads share the file); a file that ends early is `CacheCorrupted`."""
    buffer = memoryview(array.reshape(-1).view("u1"))
    done = 0
    while done < len(buffer):
        n = os.preadv(fd, [buffer[done:]], offset + done)
        if n == 0:
            raise CacheCorrupted(path.parent, f"{path.name} ends before sample data it should hold")
        done += n


class BuildingLoader:
    """The decoding loader of a pass that also writes an entry: its workers write each row as
    they make it; the entry is committed when the pass has read every batch, dropped if the
    pass stops early."""

    def __init__(self, loader, build: EntryBuild):
        self.loader, self.build = loader, build

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        finished = False
        try:
            yield from self.loader
            finished = True
        finally:
            if finished:
                self.build.commit()
            else:
                self.build.abort()


class InputCache:
    """A folder of decoded-input entries with a size limit.

    `loader(...)` is how a pass gets its input batches: read from the entry when it is complete,
    else decoded and written to a new entry, else (the entry would pass `limit` or fill the
    disk) decoded and not written, with a note saying why.
    """

    def __init__(self, root: Path | None = None, limit: int = DEFAULT_LIMIT):
        self.root = Path(root) if root is not None else default_root()
        self.limit = limit

    # --- one entry -----------------------------------------------------------------------

    def entry_path(self, source: Source, config: Mapping[str, Any], key: str) -> Path:
        g = geometry_of(config)
        _, h, w = g["input_size"]
        return self.root / f"{source.name}-{h}x{w}-{g['interpolation']}-crop{g['crop_pct']}-{g['crop_mode']}-{key[:12]}"

    def find(self, path: Path, key: str, count: int, shape: tuple[int, int, int]) -> bool:
        """Whether `path` holds the complete entry of `key`; one that is stale (another format or
        key), cut short or otherwise broken is removed, so that it is rebuilt (a folder that is not
        rbench's is left alone, and the entry is not cached)."""
        import numpy as np

        if not is_entry(path):
            return False
        try:
            meta = json.loads((path / "meta.json").read_text())
            whole = (meta.get("format") == FORMAT and meta.get("key") == key and meta.get("images") == count
                     and tuple(meta.get("shape", ())) == shape
                     and (path / "pixels.u8").stat().st_size == count * shape[0] * shape[1] * shape[2]
                     and (path / "rows.bin").stat().st_size == count * ROW_BYTES)
            if whole:
                rows = np.memmap(path / "rows.bin", _row_dtype(), "r", shape=(count,))
                whole = bool(rows["written"].all())
                del rows
        except (OSError, ValueError, TypeError, AttributeError):
            whole = False
        if not whole:
            self.remove(path)
            return False
        try:
            os.utime(path / "meta.json")  # last used, for `rbench cache ls`
        except OSError:  # a cache shared read-only
            pass
        return True

    def loader(self, source: Source, config: Mapping[str, Any], *, batch_size: int, workers: int,
               pin_memory: bool, note: Callable[[str], None] = lambda message: None):
        """Input batches for one pass over `source` with the eval data `config`:
        `(pixels [B, H, W, 3] uint8, indices, ok)`, from the cache when it can."""
        from .data import eval_geometry, make_loader

        geometry = eval_geometry(config)
        key = entry_key(source, config, geometry)
        path = self.entry_path(source, config, key)
        count, shape = len(source.samples), (config["input_size"][1], config["input_size"][2], 3)
        if self.find(path, key, count, shape):
            return CachedBatches(path, count, shape, batch_size=batch_size, threads=min(workers, 4),
                                 pin_memory=pin_memory)
        decoded = dict(batch_size=batch_size, workers=workers, pin_memory=pin_memory)
        reason = self._no_room(count * (shape[0] * shape[1] * shape[2] + ROW_BYTES))
        if reason:
            note(f"input cache: {source.name} at {shape[0]}x{shape[1]} not cached ({reason}); decoding every image")
            return make_loader(source, config, **decoded)
        meta = {"format": FORMAT, "key": key, "source": source.name, "root": str(source.root), "images": count,
                "shape": list(shape), "geometry": geometry_of(config), "versions": _versions()}
        try:
            build = EntryBuild(self, path, meta)
        except OSError as exc:  # no space after all, a read-only folder
            note(f"input cache: {source.name} not cached ({exc.strerror or exc} in {self.root}); decoding every image")
            return make_loader(source, config, **decoded)
        note(f"input cache: decoding {source.name} once at {shape[0]}x{shape[1]} into {path} "
             f"({format_size(count * shape[0] * shape[1] * shape[2])})")
        return BuildingLoader(make_loader(source, config, writer=build.writer, **decoded), build)

    def _no_room(self, needed: int) -> str | None:
        """Why an entry of `needed` bytes cannot be written now, or None."""
        used = sum(e.bytes for e in self._remove_dead_builds())
        if used + needed > self.limit:
            return (f"it needs {format_size(needed)} and the cache at {self.root} holds {format_size(used)} of its "
                    f"{format_size(self.limit)} limit; raise --cache-size or free space with `rbench cache clear`")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            return f"cannot use {self.root}: {exc.strerror or exc}"
        if needed + DISK_MARGIN > free:
            return f"it needs {format_size(needed)} and {self.root} has {format_size(free)} free"
        return None

    def _remove_dead_builds(self) -> list[EntryInfo]:
        """Remove incomplete folders that no process is writing any more; return the others."""
        kept = []
        for info in self.entries():
            if info.meta is None and not self.is_running_build(info.path):
                self.remove(info.path)
            else:
                kept.append(info)
        return kept

    def is_running_build(self, path: Path) -> bool:
        """Whether a process may still be writing the folder `path`: a build of this host whose
        process is alive, or one of another host (which cannot be asked)."""
        host = socket.gethostname()
        if not path.name.startswith(BUILDING) or path.name.startswith(f"{BUILDING}removing-"):
            return False
        if not path.name.startswith(f"{BUILDING}{host}-"):
            return True
        pid = path.name[len(BUILDING) + len(host) + 1:].split("-")[0]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            return False
        except PermissionError:  # alive, another user's
            return True
        return True

    # --- the whole cache -----------------------------------------------------------------

    def _children(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(self.root.iterdir())

    def entries(self) -> list[EntryInfo]:
        """Every entry of the cache (a folder rbench made, see `is_entry`), complete or not, by name."""
        found = []
        for path in self._children():
            if not is_entry(path):
                continue
            try:
                meta = None if path.name.startswith(BUILDING) else json.loads((path / "meta.json").read_text())
                used = (path / "meta.json") if meta else path
                found.append(EntryInfo(path=path, meta=meta, bytes=contents(path, ENTRY_FILES).bytes,
                                       last_used=used.stat().st_mtime))
            except (OSError, ValueError):  # vanished meanwhile, or broken: listed as incomplete
                if path.exists():
                    found.append(EntryInfo(path=path, meta=None, bytes=contents(path, ENTRY_FILES).bytes,
                                           last_used=path.stat().st_mtime))
        return found

    def foreign(self) -> list[Path]:
        """What the cache folder holds besides entries (files, links, other folders): not
        rbench's, never removed."""
        return [path for path in self._children() if not is_entry(path)]

    def remove(self, path: Path) -> None:
        """Remove one entry folder (renamed away first, so no reader sees half of it): only its
        entry files, and only when it is an entry (see `is_entry`)."""
        if not is_entry(path):
            return
        doomed = path.with_name(f"{BUILDING}removing-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, doomed)
        except OSError:
            return  # removed by another process meanwhile
        remove_made(doomed, ENTRY_FILES)
