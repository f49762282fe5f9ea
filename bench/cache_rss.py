"""A warm pass's resident memory and speed: the decoded-input cache read in bounded batches
against the same entry read through a memory map (the reader before, kept here as the reference).

    python bench/cache_rss.py [--images N] [--img-size S] [--batch-size B] [--threads T] [--repeats R]

On an ImageNet-like folder of textured JPEGs (made once under the system temp folder, as
bench/validate_speed.py makes it) it writes one cache entry at S x S (a cold pass), then reads
the whole entry in a fresh process per run, with no model (the input path alone), in three ways:

- mapped: `np.memmap` of the entry and a copy of each batch out of it, checksums checked (the
  reader before, the reference);
- bounded: `CachedBatches`, rbench's reader (positioned reads into each batch's own buffer);
- uncached: rbench's decoding loader (no cache), for the RSS of a pass that never saw the entry.

Each line gives the best wall time of --repeats, images/s, the process's peak RSS (ru_maxrss)
and its RSS at the end of the pass. The last line is exactly
`bounded_vs_mapped_speed=<x> mapped_rss_mb=<a> bounded_rss_mb=<b> uncached_rss_mb=<c>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from validate_speed import make_folder  # noqa: E402


def config_of(size: int) -> dict:
    return {"input_size": (3, size, size), "crop_pct": 0.875, "crop_mode": "center", "interpolation": "bilinear",
            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, data: Path, cache: Path, size: int, batch_size: int, threads: int) -> dict:
    """One pass in this (fresh) process: seconds, images, peak and final RSS in MB."""
    import resource

    import numpy as np
    import torch  # noqa: F401 - every mode holds torch, as a validation pass does

    from rbench import DataRequest
    from rbench.registry import get_registry
    from rbench.worker.data import make_loader
    from rbench.worker.input_cache import CachedBatches, InputCache, _row_crc, _row_dtype

    source = get_registry().datasets["imagefolder"].load(DataRequest(path=data, cache_dir=Path(tempfile.gettempdir())))
    config = config_of(size)
    count, shape = len(source.samples), (size, size, 3)
    if mode == "uncached":
        batches = make_loader(source, config, batch_size=batch_size, workers=threads, pin_memory=False)
    else:
        warm = InputCache(cache).loader(source, config, batch_size=batch_size, workers=threads, pin_memory=False)
        assert isinstance(warm, CachedBatches), "the entry is not complete"
        batches = warm
        if mode == "mapped":
            class Mapped(CachedBatches):
                """The reader before: each batch copied out of a map of the whole entry (same
                threads, same checksums)."""

                def _read(self, batch, pixels_file, rows_file):
                    if not hasattr(self, "maps"):
                        self.maps = (np.memmap(self.folder / "pixels.u8", np.uint8, "r", shape=(count, *shape)),
                                     np.memmap(self.folder / "rows.bin", _row_dtype(), "r", shape=(count,)))
                    images, rows = self.maps
                    lo, hi = batch * self.batch_size, min(self.count, (batch + 1) * self.batch_size)
                    pixels = torch.empty((hi - lo, *self.shape), dtype=torch.uint8)
                    view = pixels.numpy()
                    np.copyto(view, images[lo:hi])
                    meta = np.array(rows[lo:hi])
                    for i in range(hi - lo):
                        assert _row_crc(view[i], bool(meta["ok"][i])) == meta["crc"][i]
                    return pixels, torch.arange(lo, hi), torch.from_numpy(meta["ok"].astype(bool))

            batches = Mapped(warm.folder, count, shape, batch_size=batch_size, threads=warm.threads, pin_memory=False)
    started = time.perf_counter()
    n = checksum = 0
    for pixels, _, _ in batches:
        n += len(pixels)
        checksum += int(pixels[:, 0, 0, 0].sum())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "images": n, "checksum": checksum, "rss_end_mb": rss_mb(),
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="reader threads (cached) or loader workers (uncached)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "DATA", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, data, cache = args.child
        print(json.dumps(child(mode, Path(data), Path(cache), args.img_size, args.batch_size, args.threads)))
        return 0

    data = make_folder(Path(tempfile.gettempdir()) / f"rbench-validate-speed-{args.images}", args.images,
                       max(1, os.cpu_count() or 1))
    cache = Path(tempfile.mkdtemp(prefix="rbench-cache-rss-"))
    from rbench import DataRequest
    from rbench.registry import get_registry
    from rbench.worker.input_cache import InputCache

    source = get_registry().datasets["imagefolder"].load(DataRequest(path=data, cache_dir=Path(tempfile.gettempdir())))
    for _ in InputCache(cache).loader(source, config_of(args.img_size), batch_size=args.batch_size, workers=2,
                                      pin_memory=False):
        pass  # the cold pass writes the entry
    entry_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 1e6
    print(f"cache_rss: {args.images} images at {args.img_size}x{args.img_size}, entry {entry_mb:.0f} MB, "
          f"batch {args.batch_size}, {args.threads} threads; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the start")

    def run(mode: str) -> dict:
        out = subprocess.run([sys.executable, __file__, "--img-size", str(args.img_size), "--batch-size",
                              str(args.batch_size), "--threads", str(args.threads), "--child", mode, str(data),
                              str(cache)], check=True, capture_output=True, text=True)
        return json.loads(out.stdout.splitlines()[-1])

    results: dict[str, list[dict]] = {"mapped": [], "bounded": [], "uncached": []}
    for _ in range(args.repeats):  # in turns, so that load on the machine falls on every mode alike
        for mode in ("mapped", "bounded"):
            results[mode].append(run(mode))
    results["uncached"].append(run("uncached"))  # decoding: slow, once
    assert results["mapped"][0]["checksum"] == results["bounded"][0]["checksum"] == results["uncached"][0]["checksum"]
    print(f"{'pass':10} {'best s':>8} {'images/s':>9} {'peak RSS MB':>12} {'end RSS MB':>11}")
    best = {}
    for mode, runs in results.items():
        best[mode] = min(runs, key=lambda r: r["seconds"])
        rss = max(r["rss_peak_mb"] for r in runs)
        print(f"{mode:10} {best[mode]['seconds']:8.2f} {best[mode]['images'] / best[mode]['seconds']:9.0f} "
              f"{rss:12.0f} {max(r['rss_end_mb'] for r in runs):11.0f}")
    peak = {mode: max(r["rss_peak_mb"] for r in runs) for mode, runs in results.items()}
    print(f"bounded_vs_mapped_speed={best['mapped']['seconds'] / best['bounded']['seconds']:.2f} "
          f"mapped_rss_mb={peak['mapped']:.0f} bounded_rss_mb={peak['bounded']:.0f} uncached_rss_mb={peak['uncached']:.0f}")
    import shutil

    shutil.rmtree(cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
