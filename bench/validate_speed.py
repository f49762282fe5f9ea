"""Validation input speed: timm's loader pipeline against rbench's cold and warm (cached) passes.

Run through bench/validate_speed.sh, which documents the options. In one process, on one
ImageNet-like folder of JPEG files and one model, it times (best of --repeats, in turns):

- timm: `timm.data.create_loader` (prefetcher, same workers, same eval transform) feeding the
  model, as timm's validate.py does;
- rbench uncached: rbench's decoding loader, no cache (--no-cache);
- rbench cold: the same, writing the decoded-input cache entry as it goes;
- rbench warm: the pass read from that entry;
- model only: the model on one normalised batch already on the device, as many batches.

and checks that the cold and warm passes gave the same logits. The last line is exactly
`cold_vs_timm=<x> warm_vs_cold=<y>`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

CLASSES = 20


def _write_image(job: tuple[Path, int]) -> None:
    """One textured JPEG, 320-640 px a side: stripes, blobs and noise, so it decodes like a photo."""
    import numpy as np
    from PIL import Image

    path, seed = job
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(320, 641, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 215, size=3).astype(np.float32)
    waves = sum(rng.uniform(10, 40) * np.sin(xx * rng.uniform(0.01, 0.3) + yy * rng.uniform(0.01, 0.3)
                                             + rng.uniform(0, 6.3)) for _ in range(3))
    image = base + waves[..., None] + rng.normal(0, 18, size=(h, w, 3)).astype(np.float32)
    for _ in range(6):  # blobs of another colour
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(20, 120)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        image[mask] = image[mask] * 0.4 + rng.uniform(0, 255, size=3) * 0.6
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_folder(root: Path, images: int, processes: int) -> Path:
    """An image folder of `images` JPEGs in CLASSES class folders, made once and kept."""
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    jobs = []
    for i in range(images):
        folder = tmp / f"class_{i % CLASSES:03d}"
        folder.mkdir(exist_ok=True)
        jobs.append((folder / f"img_{i:06d}.jpg", i))
    with Pool(processes) as pool:
        pool.map(_write_image, jobs, chunksize=16)
    os.rename(tmp, root)
    return root


def read_all(root: Path) -> int:
    """Read every file once, so that every pipeline finds them in the page cache."""
    total = 0
    for path in root.rglob("*.jpg"):
        total += len(path.read_bytes())
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backend", help="rbench backend stack [default: cpu, or cuda-amp+channels-last]")
    parser.add_argument("--model", default="test_vit")
    parser.add_argument("--img-size", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, help="image folder [default: made under the system temp folder]")
    parser.add_argument("--cache-dir", type=Path, help="input cache folder [default: a new temp folder]")
    args = parser.parse_args()

    import timm
    import torch
    from timm.data import ImageDataset as TimmImageDataset
    from timm.data import create_loader

    from rbench import DataRequest
    from rbench.worker.backends import resolve_stack
    from rbench.worker.data import device_batches, eval_data_config, make_loader
    from rbench.worker.input_cache import InputCache
    from rbench.registry import get_registry
    from rbench.worker.validate import predict

    backend = args.backend or ("cpu" if args.device == "cpu" else "cuda-amp+channels-last")
    data = args.data or Path(tempfile.gettempdir()) / f"rbench-validate-speed-{args.images}"
    started = time.time()
    make_folder(data, args.images, max(1, os.cpu_count() or 1))
    made = time.time() - started
    read_all(data)

    registry = get_registry()
    stack = resolve_stack(backend, registry)
    try:  # a ViT is built for the size it runs at
        model = timm.create_model(args.model, pretrained=False, **({"img_size": args.img_size} if args.img_size else {}))
    except TypeError:  # a model without that argument takes any size
        model = timm.create_model(args.model, pretrained=False)
    model.eval()
    config = eval_data_config(model, args.img_size)
    model = stack.prepare_model(model)
    source = registry.datasets["imagefolder"].load(DataRequest(path=data, cache_dir=Path(tempfile.gettempdir())))
    channels_last = stack.layout == "nhwc"
    pin = stack.base.pin_memory
    cache_root = args.cache_dir or Path(tempfile.mkdtemp(prefix="rbench-input-cache-"))
    cache = InputCache(cache_root, limit=10**15)
    n = len(source.samples)

    def timed(run) -> tuple[float, object]:
        stack.synchronize()
        t0 = time.perf_counter()
        out = run()
        stack.synchronize()
        return time.perf_counter() - t0, out

    def timm_pass():
        dataset = TimmImageDataset(str(data))
        loader = create_loader(dataset, input_size=config["input_size"], batch_size=args.batch_size,
                               is_training=False, use_prefetcher=True, interpolation=config["interpolation"],
                               mean=config["mean"], std=config["std"], num_workers=args.workers,
                               crop_pct=config["crop_pct"], crop_mode=config.get("crop_mode", "center"),
                               pin_memory=pin, device=torch.device(args.device))
        outputs = []
        with torch.inference_mode(), stack.autocast():
            for images, _ in loader:
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                outputs.append(model(images))
        return outputs

    loading = dict(batch_size=args.batch_size, workers=args.workers, pin_memory=pin)

    def rbench_pass(batches):  # the real validation pass: predictions reduced batch by batch
        return predict(model, batches, stack, config, source)[0]

    def uncached():
        return rbench_pass(make_loader(source, config, **loading))

    def warm():
        return rbench_pass(cache.loader(source, config, **loading))

    def cold():
        for entry in cache.entries():
            cache.remove(entry.path)
        return warm()  # finds no entry: decodes and writes it

    batch = torch.randint(0, 256, (args.batch_size, config["input_size"][1], config["input_size"][2], 3),
                          dtype=torch.uint8)
    (fixed, _, _), = device_batches([(batch, torch.arange(args.batch_size), torch.ones(args.batch_size, dtype=torch.bool))],
                                    stack.device, config["mean"], config["std"], channels_last=channels_last)
    steps = -(-n // args.batch_size)

    def model_only():
        with torch.inference_mode(), stack.autocast():
            return [model(stack.prepare_input(fixed)) for _ in range(steps)]

    pipelines = {"timm loader": timm_pass, "rbench uncached": uncached, "rbench cold": cold, "rbench warm": warm,
                 "model only": model_only}
    model_only()  # warm-up: kernels, allocator, autotuning
    seconds: dict[str, list[float]] = {name: [] for name in pipelines}
    logits = {}
    for _ in range(args.repeats):
        for name, run in pipelines.items():
            took, out = timed(run)
            seconds[name].append(took)
            logits[name] = out

    print(f"validate speed: {args.model} at {config['input_size'][1]}px (crop_pct {config['crop_pct']}, "
          f"{config['interpolation']}), backend {stack.name}, batch {args.batch_size}, {args.workers} workers, "
          f"{n} JPEGs 320-640 px in {data}" + (f" (made in {made:.0f} s)" if made > 1 else ""))
    print(f"torch {torch.__version__}, timm {timm.__version__}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    print()
    print(f"{'pipeline':<18}{'img/s':>10}{'best s':>9}   every run (s)")
    rate = {}
    for name, runs in seconds.items():
        rate[name] = (steps * args.batch_size if name == "model only" else n) / min(runs)
        print(f"{name:<18}{rate[name]:>10.0f}{min(runs):>9.2f}   {' '.join(f'{s:.2f}' for s in runs)}"
              f"   (median {statistics.median(runs):.2f})")
    cold_frame = logits["rbench cold"]
    same = all(cold_frame.equals(logits[k]) for k in ("rbench warm", "rbench uncached"))

    def logp(frame):
        return torch.tensor(frame["topk_logp"].to_list())

    diff = max(float((logp(cold_frame) - logp(logits[k])).abs().max()) for k in ("rbench warm", "rbench uncached"))
    print()
    print(f"cold, warm and uncached predictions identical: {'yes' if same else f'NO (largest difference {diff:.3g})'}")
    if not same and args.device != "cpu":  # GPU kernels (cuDNN, atomics) need not repeat bit for bit
        same = all(cold_frame["topk_class"].arr.first().equals(logits[k]["topk_class"].arr.first())
                   for k in ("rbench warm", "rbench uncached"))
        print(f"  the same top-1 for every image: {'yes' if same else 'NO'}")
    entry_bytes = sum(e.bytes for e in cache.entries())
    print(f"cache entry: {entry_bytes / 1e6:.0f} MB in {cache_root}")
    print(f"warm_vs_model={rate['rbench warm'] / rate['model only']:.3f} "
          f"uncached_vs_timm={rate['rbench uncached'] / rate['timm loader']:.3f}")
    if args.cache_dir is None:
        shutil.rmtree(cache_root, ignore_errors=True)
    print(f"cold_vs_timm={rate['rbench cold'] / rate['timm loader']:.3f} "
          f"warm_vs_cold={rate['rbench warm'] / rate['rbench cold']:.3f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
