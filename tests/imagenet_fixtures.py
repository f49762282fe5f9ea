"""Miniature copies of the ImageNet test sets in their real layouts.

Real wnids and the real class count of each set (1000 folders for val and Sketch, integer
folders 0..999 for V2, the real 200 for A and R), a few small real JPEG files per class.
Val files keep ILSVRC2012_val_XXXXXXXX names, chosen so that their ReaL label lists are
consistent with their folder, and a few with empty ReaL lists.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image

INFO = Path(importlib.util.find_spec("timm").submodule_search_locations[0]) / "data" / "_info"


def info_lines(name: str) -> list[str]:
    return (INFO / name).read_text().split()


def _jpeg(path: Path, rng: np.random.Generator) -> None:
    h, w = rng.integers(24, 48, size=2)
    base = rng.integers(0, 256, size=3)
    pixels = np.clip(base + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=80)


def build(root: Path, extra_classes: list[int], extra_per_class: int = 4) -> dict[str, tuple[int, int]]:
    """Write every layout under `root`; returns `{source: (classes, images)}` of what was written.

    Every class gets one image, and each class in `extra_classes` gets `extra_per_class` more.
    """
    rng = np.random.default_rng(0)
    synsets = info_lines("imagenet_synsets.txt")
    real = json.loads((INFO / "imagenet_real_labels.json").read_text())
    per_class = {c: 1 + (extra_per_class if c in extra_classes else 0) for c in range(1000)}

    # Val: pick for each image of class c an unused val index whose ReaL list contains c,
    # and give the first few classes an index with an empty ReaL list instead.
    by_class: dict[int, list[int]] = {}
    empty = [i for i, labels in enumerate(real) if not labels]
    for i, labels in enumerate(real):
        for c in labels:
            by_class.setdefault(c, []).append(i)
    used: set[int] = set()
    count = 0
    for c in range(1000):
        pool = [i for i in by_class.get(c, []) if i not in used]
        for k in range(per_class[c]):
            index = empty.pop() if (c < 3 and k == 0) or not pool else pool.pop(0)
            used.add(index)
            _jpeg(root / "imagenet" / "val" / synsets[c] / f"ILSVRC2012_val_{index + 1:08d}.JPEG", rng)
            count += 1
    counts = {"imagenet": (1000, count)}

    v2 = root / "imagenetv2-matched-frequency-format-val"
    sketch = root / "sketch"
    for c in range(1000):
        for k in range(per_class[c]):
            _jpeg(v2 / str(c) / f"{k:02d}_{c}.jpeg", rng)
            _jpeg(sketch / synsets[c] / f"sketch_{k}.JPEG", rng)
    images = sum(per_class.values())
    counts["imagenetv2-matched-frequency"] = counts["sketch"] = (1000, images)

    for subset in ("a", "r"):
        indices = [int(i) for i in info_lines(f"imagenet_{subset}_indices.txt")]
        n = 0
        for c in indices:
            for k in range(per_class[c]):
                _jpeg(root / f"imagenet-{subset}" / synsets[c] / f"{subset}_{k}.jpg", rng)
                n += 1
        counts[f"imagenet-{subset}"] = (200, n)
    return counts


def pinned_head_model(seed: int, classes: list[int], path: Path, name: str = "test_byobnet"):
    """A random timm model `name` that can only predict `classes` (the others get distinct, very
    low logits: no ties), so that accuracy is far from zero and depends on the image; saved to
    `path` as safetensors. Returns the model."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(name).eval()
    head = model.get_classifier()
    others = [c for c in range(1000) if c not in classes]
    with torch.no_grad():
        head.weight[others] = 0.0
        head.bias[others] = -1000.0 - 0.001 * torch.arange(len(others), dtype=torch.float32)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model
