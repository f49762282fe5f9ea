"""Evaluation input: timm's data config and eval transform, a dataset and its loader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def eval_data_config(model, img_size: int | None = None) -> dict[str, Any]:
    """timm's eval data config for `model` (its test size and crop where it has them).

    `img_size` overrides the input size, as timm's `validate.py --img-size` does.
    """
    from timm.data import resolve_data_config

    args = {"img_size": img_size} if img_size else {}
    return resolve_data_config(args, model=model, use_test_size=True)


def eval_transform(data_config: dict[str, Any]):
    """timm's eval transform: resize to `img_size / crop_pct`, centre crop, to tensor, normalise."""
    from timm.data import create_transform

    return create_transform(**data_config, is_training=False)


class ImageDataset:
    """Images from `(path, label)` samples, decoded with PIL and transformed.

    Yields `(image, index, ok)`. An unreadable or truncated file gives a zero image and
    `ok=False` instead of killing the pass; the caller leaves it out of the metrics.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform, input_size: Sequence[int]):
        self.samples = samples
        self.transform = transform
        self.input_size = tuple(input_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        try:
            with Image.open(self.samples[index][0]) as img:
                return self.transform(img.convert("RGB")), index, True
        except (OSError, SyntaxError, ValueError):  # PIL's errors for unreadable, truncated or bad files
            return torch.zeros(self.input_size), index, False


def make_loader(samples: Sequence[tuple[str, int]], data_config: dict[str, Any], *, batch_size: int, workers: int,
                pin_memory: bool):
    """A DataLoader of eval-transformed images over `samples` in their order (never shuffled:
    views index into it)."""
    import torch

    return torch.utils.data.DataLoader(
        ImageDataset(samples, eval_transform(data_config), data_config["input_size"]),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
