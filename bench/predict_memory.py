"""Peak memory of one validation cell's forward pass, by number of samples.

    python bench/predict_memory.py [--samples 50000,500000] [--classes 1000]

Each measurement runs in a fresh process (peak RSS from getrusage): a tiny 1000-class model on
synthetic uint8 batches (no decoding, so the pass's own memory is what grows), through
rbench's `validate.predict` (each batch reduced to its stored predictions on the device), and,
as the reference in the same invocation, the way a pass kept every batch's logits before
predictions were stored (a list of float32 logits, concatenated at the end). Prints a table,
the predictions file's bytes per sample, and last, exactly:

    growth_ratio=<reference growth / rbench growth from the smallest to the largest N>
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
mode, n, classes, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), 500
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, classes)).eval()
def batches():
    for start in range(0, n, batch):
        size = min(batch, n - start)
        yield (torch.randint(0, 256, (size, 8, 8, 3), dtype=torch.uint8), torch.arange(start, start + size),
               torch.ones(size, dtype=torch.bool))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.time()
extra = {}
if mode == "rbench":
    import rbench
    from rbench.worker.backends import resolve_stack
    from rbench.registry import get_registry
    from rbench.worker.validate import predict
    from rbench.predictions import write
    source = rbench.Source(name="s", root=Path("."), samples=[("x", i % classes) for i in range(n)],
                           views=[rbench.ViewSpec(name="s")])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the listing is not the pass's
    stack = resolve_stack("cpu", get_registry())
    frame, _ = predict(model, batches(), stack, {"mean": (0.5,) * 3, "std": (0.25,) * 3}, source)
    extra["file_bytes"] = Path("/tmp/rbench-bench-predictions.parquet").stat().st_size if write(frame, Path("/tmp/rbench-bench-predictions.parquet")) else 0
else:  # the reference: every batch's logits kept, then concatenated
    outputs = []
    with torch.inference_mode():
        for pixels, indices, ok in batches():
            x = pixels.permute(0, 3, 1, 2).float().sub(127.5).div(64)
            outputs.append(model(x).float().cpu())
        logits = torch.cat(outputs)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mib": (peak - base) / 1024, "peak_mib": peak / 1024, "seconds": time.time() - started, **extra}))
"""


def measure(mode: str, n: int, classes: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(n), str(classes)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", default="50000,500000")
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.samples.split(",")]
    rows = []
    print(f"{'samples':>9} {'mode':>10} {'peak MiB':>9} {'growth MiB':>11} {'B/sample':>9} {'s':>6}")
    for n in sizes:
        for mode in ("reference", "rbench"):
            r = measure(mode, n, args.classes)
            rows.append((n, mode, r))
            print(f"{n:>9,} {mode:>10} {r['peak_mib']:>9.1f} {r['growth_mib']:>11.1f} "
                  f"{r['growth_mib'] * 2**20 / n:>9.1f} {r['seconds']:>6.1f}")
    big = {mode: r for n, mode, r in rows if n == sizes[-1]}
    print(f"predictions file: {big['rbench']['file_bytes'] / sizes[-1]:.1f} bytes a sample at {sizes[-1]:,} samples")
    small = {mode: r for n, mode, r in rows if n == sizes[0]}
    growth = {m: big[m]["growth_mib"] - small[m]["growth_mib"] for m in big}
    print(f"growth_ratio={growth['reference'] / max(growth['rbench'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
