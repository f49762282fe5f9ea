"""Logits of backend stacks against a reference stack (`cpu`), on rbench's synthetic data set.

    python bench/logits_check.py --models resnet18,vit_small_patch16_224 \\
        --stacks cuda,cuda-amp,cuda-amp-bf16,cuda-amp+channels-last,cuda-amp+channels-last+compile

Each model (random weights, seeded by its name, so every stack gets the same weights) runs over
the synthetic data set's 100 real JPEG files (decoded once, through rbench's own loader and
eval geometry) on the reference stack and on each stack, through rbench's `predict`, the
function validation uses. Per stack it prints:

- top-1 agreement with the reference, over all images;
- the largest logit difference, absolute and relative to the largest reference logit;
- decisive disagreements: images whose reference top-1 leads its runner-up by more than twice
  that largest difference, yet get another top-1. Such an image cannot change class through
  rounding alone, so there must be none; near-ties of random weights may flip and only lower
  the agreement.

A stack passes when its relative difference is within the tolerance of its precision (fp32,
TF32 on a GPU: 1e-2; fp16 autocast: 3e-2; bf16 autocast: 1.5e-1) and it has no decisive
disagreement. The last line is exactly:

    logits_ok=<yes|no> min_agreement=<x> worst_rel_diff=<y>
"""

from __future__ import annotations

import argparse
import sys
import time

# Largest logit difference, relative to the largest reference logit, allowed per precision.
TOLERANCE = {"fp32": 1e-2, "amp": 3e-2, "fp16": 3e-2, "amp_bf16": 1.5e-1, "bf16": 1.5e-1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="test_vit,test_efficientnet", help="comma-separated timm names")
    parser.add_argument("--stacks", default="cpu+channels-last,cpu-amp-bf16,cpu+compile",
                        help="comma-separated backend stacks to compare with the reference")
    parser.add_argument("--reference", default="cpu", help="the reference stack [default: cpu]")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import timm
    import torch

    from rbench import DataRequest
    from rbench.worker.backends import resolve_stack
    from rbench.worker.data import eval_data_config, make_loader
    from rbench.worker.models import create_model
    from rbench.paths import cache_dir
    from rbench.registry import get_registry
    from rbench.worker.validate import logits as all_logits

    registry = get_registry()
    reference = resolve_stack(args.reference, registry)
    stacks = [resolve_stack(name, registry) for name in args.stacks.split(",") if name]
    source = registry.datasets["synthetic"].load(DataRequest(path=None, cache_dir=cache_dir()))
    print(f"logits: {len(source.samples)} JPEG files of {source.root}; reference {reference.name}; "
          f"torch {torch.__version__}, timm {timm.__version__}"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print()
    print(f"{'model':<24}{'stack':<34}{'top-1 agree':>12}{'max |diff|':>12}{'max |ref|':>11}{'rel diff':>10}"
          f"{'tol':>8}{'decisive':>10}{'flips':>7}{'s':>7}  verdict")

    ok, agreements, rels = True, [], []
    for name in args.models.split(","):
        model = create_model(name, "random")
        config = eval_data_config(model)
        # Decoded once: every stack gets the same uint8 pixels, normalised on its own device.
        batches = list(make_loader(source, config, batch_size=args.batch_size, workers=args.workers, pin_memory=False))

        def logits(stack):
            started = time.perf_counter()
            prepared = stack.prepare_model(create_model(name, "random"))
            out = all_logits(prepared, batches, stack, config)
            del prepared
            stack.cleanup()
            return out, time.perf_counter() - started

        ref, ref_s = logits(reference)
        top2 = ref.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
        scale = float(ref.abs().max())
        print(f"{name:<24}{reference.name:<34}{'-':>12}{'-':>12}{scale:>11.4g}{'-':>10}{'-':>8}{'-':>10}{'-':>7}"
              f"{ref_s:>7.1f}  reference")
        for stack in stacks:
            out, seconds = logits(stack)
            finite = bool(torch.isfinite(out).all())
            diff = float((out - ref).abs().max()) if finite else float("inf")
            rel = diff / scale if scale else float("inf")
            same = out.argmax(1) == ref.argmax(1)
            decisive = margin > 2 * diff
            flips = int((decisive & ~same).sum())
            agreement = float(same.float().mean())
            tolerance = TOLERANCE.get(stack.precision, 1e-2)
            passed = finite and rel <= tolerance and flips == 0
            ok &= passed
            agreements.append(agreement)
            rels.append(rel)
            verdict = "ok" if passed else "FAIL" + ("" if finite else " (non-finite logits)")
            print(f"{'':<24}{stack.name:<34}{agreement:>12.1%}{diff:>12.4g}{scale:>11.4g}{rel:>10.2e}"
                  f"{tolerance:>8.2g}{int(decisive.sum()):>10}{flips:>7}{seconds:>7.1f}  {verdict}")

    print()
    print(f"logits_ok={'yes' if ok else 'no'} min_agreement={min(agreements, default=1.0):.3f} "
          f"worst_rel_diff={max(rels, default=0.0):.3e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
