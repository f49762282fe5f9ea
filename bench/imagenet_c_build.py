"""ImageNet-C build speed and a warm model pass over the made JPEGs.

Run through bench/imagenet_c_build.sh. On an ImageNet-like val folder of textured JPEGs
(320-640 px a side, in real wnid folders; made once under the system temp folder) it measures:

1. each corruption alone, in this process (one core): ms per image and images/s, on prepared
   224x224 images, the JPEG-85 encoding included, and their mean over the 15 (the build makes
   every corruption equally often);
2. `imagenet_c.build` in 1 process and in --processes processes, on --images val images x the
   corruptions and severities asked for: files/s, files/s per process; then the build as a run
   makes it (`make_slices`, in the cells): one node of --processes processes, one node of half
   as many, and two builders of half as many sharing the folder, as two nodes would (files/s
   per node, and what each builder made);
3. a model over the made JPEGs through rbench's loader and the decoded-input cache: the cold
   pass (decoding the JPEGs with the model's eval transform, writing the cache entry) and the
   warm pass (reading it), images/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from validate_speed import _write_image  # noqa: E402


def make_val(root: Path, images: int, classes: int) -> Path:
    """`images` textured JPEGs in `classes` real wnid folders, made once and kept."""
    import importlib.util

    if root.is_dir():
        return root
    info = Path(importlib.util.find_spec("timm").submodule_search_locations[0]) / "data" / "_info"
    wnids = (info / "imagenet_synsets.txt").read_text().split()
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    jobs = []
    for i in range(images):
        folder = tmp / wnids[(i % classes) * (1000 // classes)]
        folder.mkdir(exist_ok=True)
        jobs.append((folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG", i))
    with Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_image, jobs, chunksize=8)
    os.rename(tmp, root)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40, help="val images made into ImageNet-C [default 40]")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--severities", default="3", help="severities built, comma-separated [default 3]")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--per-corruption", type=int, default=6, help="images timed per corruption [default 6]")
    parser.add_argument("--model", default="test_vit")
    parser.add_argument("--img-size", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the cells' build, best kept [default 3]")
    args = parser.parse_args()

    import numpy as np
    import timm
    import torch
    from PIL import Image

    from rbench.worker.backends import resolve_stack
    from rbench.worker.data import eval_data_config
    from rbench.worker.input_cache import InputCache
    from rbench.plugins.datasets import corruptions, imagenet_c
    from rbench.registry import get_registry
    from rbench.worker.validate import predict

    per_class = max(1, args.images // args.classes)
    val = make_val(Path(tempfile.gettempdir()) / f"rbench-imagenet-c-val-{args.images}-{args.classes}",
                   per_class * args.classes, args.classes)
    files = sorted(val.rglob("*.JPEG"))
    chosen = [(str(f), f"{f.parent.name}/{f.name}") for f in files]
    severities = [int(s) for s in args.severities.split(",")]
    print(f"imagenet-c build: {len(files)} val images (320-640 px, textured) in {val}")
    print(f"corruptions {corruptions.VERSION}; numpy {np.__version__}, torch {torch.__version__}, timm {timm.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")

    # 1. Each corruption alone, one core.
    import cv2

    cv2.setNumThreads(1)
    prepared = []
    for f in files[:args.per_corruption]:
        with Image.open(f) as image:
            prepared.append(np.asarray(imagenet_c.prepare(image.convert("RGB"))))
    print()
    print(f"{'corruption (1 core, severity ' + args.severities.split(',')[0] + ')':<34}{'ms/img':>8}{'img/s':>8}")
    total_ms = []
    for k, name in enumerate(imagenet_c.CORRUPTIONS):
        t0 = time.perf_counter()
        for i, pixels in enumerate(prepared):
            np.random.seed(1000 * severities[0] + k + i)
            imagenet_c.encode_jpeg(imagenet_c.corrupt(pixels, name, severities[0]))
        ms = 1000 * (time.perf_counter() - t0) / len(prepared)
        total_ms.append(ms)
        print(f"{name:<34}{ms:>8.1f}{1000 / ms:>8.1f}")
    mean_ms = sum(total_ms) / len(total_ms)
    print(f"{'mean of the 15':<34}{mean_ms:>8.1f}{1000 / mean_ms:>8.1f}")

    # 2. The build, 1 process and N processes (decoding and preparing the val image included).
    cells = [(c, s) for c in imagenet_c.CORRUPTIONS for s in severities]
    files_total = len(chosen) * len(cells)
    quiet = lambda total, label: type("Quiet", (), {"advance": lambda self, n: None, "close": lambda self: None})()  # noqa: E731
    print()
    print(f"{'build':<34}{'files':>8}{'s':>8}{'files/s':>9}{'per process':>13}")
    rates = {}
    for processes in dict.fromkeys((1, args.processes)):
        out = Path(tempfile.mkdtemp(prefix="rbench-imagenet-c-build-"))
        t0 = time.perf_counter()
        made = imagenet_c.build(out, chosen, cells, workers=processes, progress=quiet)
        took = time.perf_counter() - t0
        assert made == files_total
        size = sum(p.stat().st_size for p in out.rglob("*.JPEG"))
        rates[processes] = made / took
        print(f"{f'{processes} process(es)':<34}{made:>8}{took:>8.1f}{made / took:>9.1f}{made / took / processes:>13.1f}")
        if processes == args.processes:
            build_dir = out
        else:
            shutil.rmtree(out)
    print(f"mean JPEG size: {size / files_total / 1000:.1f} KB")

    # 2b. As a run makes it: the cells' build (`make_slices`, a corruption's severities at a time,
    # one pool per cell), on one node with --processes processes; then the same work split by two
    # builders sharing the folder (two nodes of --processes/2 each, as two processes here),
    # against one builder with --processes/2.
    from dataclasses import replace

    from rbench import DataRequest

    half = max(1, args.processes // 2)
    request = DataRequest(path=val, cache_dir=Path(tempfile.gettempdir()), allow_partial=True,
                          options={"per_class": str(per_class), "severities": args.severities})
    print()
    print(f"{f'as the cells make it (best of {args.repeats})':<34}{'files':>8}{'s':>8}{'files/s':>9}{'per process':>13}")
    node_rates: dict = {}
    configs = ((f"1 node, {args.processes} process(es)", 1, args.processes), (f"1 node, {half} process(es)", 1, half),
               (f"2 nodes sharing it, {half} each", 2, half))
    shares: dict = {}
    for _ in range(args.repeats):  # in turns, so that other load falls on every configuration alike; the best
        for label, builders, processes in configs:
            out = Path(tempfile.mkdtemp(prefix="rbench-imagenet-c-slices-"))
            source = imagenet_c.load_made(replace(request, options={**request.options, "build_dir": str(out),
                                                                    "build_workers": str(processes)}), val)
            t0 = time.perf_counter()
            made = split_build(source.build, len(source.samples), builders)
            took = time.perf_counter() - t0
            assert sum(made) == files_total and len(list(out.rglob("*.JPEG"))) == files_total, made
            if files_total / took > node_rates.get((builders, processes), 0):
                node_rates[builders, processes], shares[builders, processes] = files_total / took, made
            shutil.rmtree(out)
    for label, builders, processes in configs:
        rate = node_rates[builders, processes]
        split = f" ({' + '.join(map(str, shares[builders, processes]))})" if builders > 1 else ""
        print(f"{label:<34}{files_total:>8}{files_total / rate:>8.1f}{rate:>9.1f}{rate / (builders * processes):>13.1f}{split}")
    print(f"cells' build vs imagenet_c.build, {args.processes} process(es): "
          f"{node_rates[1, args.processes] / rates[args.processes]:.2f}x; 2 nodes vs 1 node of {half}: "
          f"{node_rates[2, half] / node_rates[1, half]:.2f}x")

    # 3. A model over the made JPEGs: cold (decode + write the input cache) and warm (read it).
    registry = get_registry()
    stack = resolve_stack("cpu", registry)
    model = timm.create_model(args.model, pretrained=False, **({"img_size": args.img_size} if args.img_size else {}))
    model.eval()
    config = eval_data_config(model, args.img_size)
    samples = [(str(build_dir / c / str(s) / f.parent.name / f.name), 0) for c, s in cells for f in files]
    source = rbench_source(samples, build_dir)
    cache_root = Path(tempfile.mkdtemp(prefix="rbench-input-cache-"))
    cache = InputCache(cache_root, limit=10**15)
    loading = dict(batch_size=args.batch_size, workers=args.workers, pin_memory=False)
    timings = {}
    logits = {}
    for name in ("cold", "warm"):
        t0 = time.perf_counter()
        logits[name] = predict(model, cache.loader(source, config, **loading), stack, config, source)[0]
        timings[name] = time.perf_counter() - t0
    print()
    print(f"model pass: {args.model} at {config['input_size'][1]} px, batch {args.batch_size}, {args.workers} loader workers, "
          f"torch threads {torch.get_num_threads()}, {len(samples)} made JPEGs")
    x = torch.randn(args.batch_size, *config["input_size"])
    steps = -(-len(samples) // args.batch_size)
    with torch.inference_mode():
        model(x)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x)
        timings["model only"] = time.perf_counter() - t0
    for name, took in timings.items():
        n = steps * args.batch_size if name == "model only" else len(samples)
        print(f"{name:<34}{n / took:>8.0f} img/s  ({took:.2f} s)")
    print(f"cold and warm predictions identical: {'yes' if logits['cold'].equals(logits['warm']) else 'NO'}")
    shutil.rmtree(cache_root, ignore_errors=True)
    shutil.rmtree(build_dir, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"build_files_per_s_per_process={rates[args.processes] / args.processes:.1f} "
          f"build_files_per_s={rates[args.processes]:.1f} warm_img_per_s={len(samples) / timings['warm']:.0f} "
          f"node_files_per_s={node_rates[1, args.processes]:.1f} two_nodes_vs_one={node_rates[2, half] / node_rates[1, half]:.2f}")
    return 0


def _one_builder(build, needed: int, results) -> None:
    from rbench.builds import make_slices

    results.put(make_slices(build, "imagenet-c", needed))


def split_build(build, needed: int, builders: int) -> list[int]:
    """`make_slices` by `builders` fresh processes at once on one folder (as nodes sharing it
    would; one builder too, so that every configuration pays its processes' start): the files
    each made."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_one_builder, args=(build, needed, results)) for _ in range(builders)]
    for w in workers:
        w.start()
    made = [results.get() for _ in workers]
    for w in workers:
        w.join()
    return made


def rbench_source(samples, root):
    import rbench

    return rbench.Source(name="imagenet-c-bench", root=root, samples=samples, views=[rbench.ViewSpec(name="x")])


if __name__ == "__main__":
    sys.exit(main())
