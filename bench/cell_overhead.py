"""What isolating each model in its own process costs: the same grid of tiny models, validated
on a small folder, with the `local` executor (every cell in the rbench process) and with the
`subprocess` executor (each model in a worker process of its own), in turns.

    python bench/cell_overhead.py [--models 12] [--repeat 3] [--images 16]

Each figure is the wall time of one `python -m rbench run` (a fresh store each time), best of
--repeat; beside it the cells' recorded `seconds` (all cells, and the first one, which a worker
that imports torch and timm itself would pay for). Both executors build the same models and run
the same cells, so the difference of their wall times over the models is what isolation costs a
model, beyond building it. Prints a table and last, exactly:

    overhead_per_model_s=<(subprocess - local) / models> ratio=<subprocess / local>
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

EXECUTORS = ("local", "subprocess")
# timm's tiny test models that take 32x32 inputs (test_coatnet, test_maxvit, test_vit3 and
# test_vit_relpos need their own size).
MODELS = ("test_byobnet", "test_convnext", "test_convnext2", "test_convnext3", "test_efficientnet",
          "test_efficientnet_evos", "test_efficientnet_gn", "test_efficientnet_ln", "test_mambaout", "test_nfnet",
          "test_resnet", "test_vit", "test_vit2", "test_vit4")


def make_images(root: Path, images: int) -> None:
    """`images` small random JPEGs in two class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"img{i}.jpg", quality=90)


def run(models: list[str], data: Path, executor: str, out: Path, cache: Path) -> tuple[float, list[float]]:
    """The wall time of one run, and the recorded seconds of its cells in the order they ran."""
    command = [sys.executable, "-m", "rbench", "run", "-m", ",".join(models), "--weights", "random",
               "--bench", "validate", "--workers", "0", "--img-size", "32", "--data-dir", str(data),
               "--executor", executor, "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "RBENCH_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    wall = time.perf_counter() - started
    records = [json.loads(p.read_text()) for p in (out / "store" / "records").glob("*.json")]
    assert len(records) == len(models) and all(r["status"] == "ok" for r in records), "a cell failed"
    records.sort(key=lambda r: r["provenance"]["finished"])
    return wall, [r["provenance"]["seconds"] for r in records]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    models = list(MODELS[: args.models])
    best: dict[str, tuple[float, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "images"
        make_images(data, args.images)
        run(models[:1], data, "local", Path(tmp) / "warm-up", Path(tmp) / "cache")  # the input cache, the page cache
        for repeat in range(args.repeat):
            for executor in EXECUTORS:  # in turns, so that a busier moment of the machine hits both
                wall, seconds = run(models, data, executor, Path(tmp) / f"{executor}-{repeat}", Path(tmp) / "cache")
                if executor not in best or wall < best[executor][0]:
                    best[executor] = (wall, seconds)
    print(f"{len(models)} models ({', '.join(models)}), validate on {args.images} images, best of {args.repeat}")
    print(f"{'executor':<12} {'wall s':>8} {'cells s':>8} {'first cell s':>13} {'per model s':>12}")
    for executor in EXECUTORS:
        wall, seconds = best[executor]
        print(f"{executor:<12} {wall:>8.2f} {sum(seconds):>8.2f} {seconds[0]:>13.2f} {wall / len(models):>12.3f}")
    local, isolated = best["local"][0], best["subprocess"][0]
    print(f"overhead_per_model_s={(isolated - local) / len(models):.3f} ratio={isolated / local:.2f}")


if __name__ == "__main__":
    main()
