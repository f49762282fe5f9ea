"""Bytes a sample of a predictions file with full scores (`--keep scores`) and without.

    python bench/keep_scores.py [--samples 10000] [--classes 1000] [--model resnet18]

Each kind of logits goes through rbench's reducer (`predictions.Reducer`) twice, keeping compact
predictions (the reference, in the same invocation) and keeping scores, and each frame is
encoded as the predictions file is (Parquet, zstd). The logits:

- `trained-like`: shaped like a trained classifier's. Each sample's logits are Gaussian
  (standard deviation 2) over the classes, five "confusable" classes get up to 6 more, and one
  class is raised so that its probability, the top-1 confidence, is drawn from Beta(2, 0.5)
  (mean 0.8, most of the mass above 0.9 and a long tail down to chance, as a trained ImageNet
  model's confidences are spread).
- `<model>@random`: a real timm architecture with random weights on random pixels (64x64):
  near-uniform outputs, which compress differently.

Prints a table (file bytes a sample, host bytes a sample in the worker, encoding seconds) and
last, exactly:

    scores_ratio=<file bytes a sample with scores / without, trained-like logits>
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def trained_like(n: int, classes: int, seed: int = 0):
    """Logits whose top-1 probability is spread like a trained classifier's (see above)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, classes))
    rows = np.arange(n)[:, None]
    confusable = rng.integers(0, classes, size=(n, 5))
    logits[rows, confusable] += rng.uniform(0.0, 6.0, size=(n, 5))
    target = rng.integers(0, classes, size=n)
    confidence = np.clip(rng.beta(2.0, 0.5, size=n), 1.5 / classes, 1 - 1e-6)
    logits[np.arange(n), target] = -np.inf
    rest = np.logaddexp.reduce(logits, axis=1)  # log of the other classes' mass
    logits[np.arange(n), target] = rest + np.log(confidence / (1 - confidence))
    return torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(target)


def random_model(name: str, n: int, classes: int):
    """A timm architecture with random weights, on random pixels: near-uniform logits."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=classes).eval()
    with torch.inference_mode():
        logits = torch.cat([model(torch.randn(min(250, n - i), 3, 64, 64)) for i in range(0, n, 250)])
    return logits.float(), torch.randint(0, classes, (n,))


def measure(logits, labels, keep_scores: bool) -> dict[str, float]:
    import numpy as np
    import torch

    import rbench
    from rbench.predictions import Reducer, encode

    n = len(labels)
    source = rbench.Source(name="s", root=Path("."), samples=[(f"{i}.jpg", int(c)) for i, c in enumerate(labels)],
                           views=[rbench.ViewSpec(name="s")])
    reducer = Reducer(source, keep_scores=keep_scores)
    for start in range(0, n, 256):
        reducer.add(logits[start:start + 256], torch.arange(start, min(start + 256, n)),
                    np.ones(min(256, n - start), dtype=bool))
    frame = reducer.frame()
    started = time.perf_counter()
    data = encode(frame)
    seconds = time.perf_counter() - started
    host = sum(a.nbytes for a in reducer.arrays.values())
    return {"file": len(data) / n, "host": host / n, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--model", default="resnet18")
    args = parser.parse_args()
    kinds = {"trained-like": trained_like(args.samples, args.classes),
             f"{args.model}@random": random_model(args.model, args.samples, args.classes)}
    print(f"samples={args.samples} classes={args.classes}")
    print(f"{'logits':>18} {'keep':>8} {'file B/sample':>14} {'host B/sample':>14} {'encode s':>9} {'x compact':>10}")
    ratios = {}
    for kind, (logits, labels) in kinds.items():
        compact = measure(logits, labels, keep_scores=False)
        for keep, row in (("compact", compact), ("scores", measure(logits, labels, keep_scores=True))):
            ratios[kind] = row["file"] / compact["file"]
            print(f"{kind:>18} {keep:>8} {row['file']:>14.1f} {row['host']:>14.1f} {row['seconds']:>9.3f} "
                  f"{ratios[kind]:>10.2f}")
    print(f"raw float16 scores: {2 * args.classes} bytes a sample")
    print(f"scores_ratio={ratios['trained-like']:.2f}")


if __name__ == "__main__":
    main()
