"""What a subprocess worker spends before its first cell can start, on an ImageNet-val-sized
folder (50,000 files in 1000 class folders).

    python bench/worker_listing.py [--files 50000] [--repeat 3]

Each figure is the wall time of a fresh `python` process (the interpreter, `import rbench`, the
plugins, and the work): "plan" does what a worker did before jobs carried their sources,
rebuilding the whole plan (listing and checking the data folder, stat'ing every file for the
source identity); "job" does what a worker does now, reading the source listing that the
parent kept in the store. Both import torch and timm, which any cell needs. Prints a table (best of --repeat) and last, exactly:

    overhead_ratio=<plan seconds / job seconds>
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAN = r"""
import sys
from pathlib import Path
from rbench.parent.plan import RunOptions, make_plan
from rbench.parent.plan import plan_cells
from rbench.registry import get_registry
options = RunOptions(models=["test_vit"], benches=["validate"], data_paths={"imagefolder": Path(sys.argv[1])},
                     datasets=["imagefolder"], weights="random", out=Path(sys.argv[2]))
plan = make_plan(options, get_registry())
plan_cells(plan)
"""

JOB = r"""
import sys
import timm, torch  # a worker needs them for its cell anyway, as the plan did
from rbench.store import Store
source = Store(sys.argv[2] + "/store").get_source(sys.argv[3])
assert len(source.samples) > 0
"""


def timed(code: str, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "val"
        for i in range(args.files):
            folder = root / f"n{i % 1000:08d}"
            if i < 1000:
                folder.mkdir(parents=True)
            (folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(b"")
        out = Path(tmp) / "out"
        # The parent's side, once per grid: the plan, and the listing kept in the store.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from rbench.parent.plan import source_identity
        from rbench.parent.plan import RunOptions, make_plan
        from rbench.registry import get_registry
        from rbench.store import Store

        options = RunOptions(models=["test_vit"], benches=["validate"], data_paths={"imagefolder": root},
                             datasets=["imagefolder"], weights="random", out=out)
        (source,) = make_plan(options, get_registry()).sources
        listing = Store(out / "store").put_source(source, source_identity(source))
        bare = min(timed("import rbench, rbench.registry; rbench.registry.get_registry()") for _ in range(args.repeat))
        plan = min(timed(PLAN, str(root), str(out)) for _ in range(args.repeat))
        job = min(timed(JOB, str(root), str(out), listing) for _ in range(args.repeat))
    print(f"{'worker start':<40} {'seconds':>8}")
    print(f"{'interpreter + import rbench + plugins':<40} {bare:>8.3f}")
    print(f"{'  + rebuild the plan (before)':<40} {plan:>8.3f}")
    print(f"{'  + read the source listing (now)':<40} {job:>8.3f}")
    print(f"files={args.files}")
    print(f"overhead_ratio={plan / job:.2f}")


if __name__ == "__main__":
    main()
