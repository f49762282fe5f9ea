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


def split_at_tensor(transform):
    """`(geometry, to_tensor)`: a torchvision `Compose` split before its first conversion to a
    tensor, so that a per-sample change can run on the resized, cropped PIL image."""
    from torchvision import transforms

    steps = list(transform.transforms)
    cut = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if cut is None:
        raise ValueError(f"the eval transform has no ToTensor step: {transform}")
    return transforms.Compose(steps[:cut]), transforms.Compose(steps[cut:])


class ImageDataset:
    """Images from `(path, label)` samples, decoded with PIL and transformed.

    Yields `(image, index, ok)`. An unreadable or truncated file gives a zero image and
    `ok=False` instead of killing the pass; the caller leaves it out of the metrics. With a
    `sample_transform` (see `Source`), it is applied between the crop and the tensor
    conversion, here in the loader worker.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform, input_size: Sequence[int],
                 sample_transform=None):
        self.samples = samples
        self.input_size = tuple(input_size)
        self.sample_transform = sample_transform
        self.transform = transform
        # Kept as attributes (not a closure) so that the dataset pickles for spawned workers.
        self.geometry, self.to_tensor = split_at_tensor(transform) if sample_transform else (None, None)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        try:
            with Image.open(self.samples[index][0]) as img:
                img = img.convert("RGB")
            if self.sample_transform is not None:
                return self.to_tensor(self.sample_transform(index, self.geometry(img))), index, True
            return self.transform(img), index, True
        except (OSError, SyntaxError, ValueError):  # PIL's errors for unreadable, truncated or bad files
            return torch.zeros(self.input_size), index, False


def make_loader(samples: Sequence[tuple[str, int]], data_config: dict[str, Any], *, batch_size: int, workers: int,
                pin_memory: bool, sample_transform=None):
    """A DataLoader of eval-transformed images over `samples` in their order (never shuffled:
    views index into it)."""
    import torch

    return torch.utils.data.DataLoader(
        ImageDataset(samples, eval_transform(data_config), data_config["input_size"], sample_transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
