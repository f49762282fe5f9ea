"""Evaluation input: timm's eval data config and geometry, the decoding loader, and the move of
each batch to the device.

Loaders yield `(pixels, indices, ok)`: `pixels` is `[B, H, W, 3]` uint8, exactly what timm's eval
transform makes before its tensor conversion (resize, crop); `ok` is False for a sample that
could not be read. Normalisation happens on the device (`device_batches`), as timm's
prefetching loader does it: a quarter of the bytes cross to the device, and the decoded-input
cache (`input_cache`) can hold the pixels whatever a model's mean and std.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..specs import Source

# The most pixels the eval resize may make of one image, in crops (input_size's pixels): about an
# aspect ratio of 50:1 at timm's usual crop_pct. A long thin image (2 x 80000 pixels, a small PNG)
# passes PIL's pixel-count check but its resize to the shortest side would make gigabytes.
RESIZE_LIMIT = 64


def resized_size(geometry, image) -> tuple[int, int] | None:
    """`(width, height)` of what the first resize of `geometry` (see `eval_geometry`) makes of
    `image`, computed from its header alone (a PIL image opened, not decoded); None when the
    geometry has no resize that rbench knows (torchvision's `Resize`, timm's `ResizeKeepRatio`)."""
    from timm.data.transforms import ResizeKeepRatio
    from torchvision import transforms

    width, height = image.size
    for step in getattr(geometry, "transforms", [geometry]):
        if isinstance(step, ResizeKeepRatio):
            new_height, new_width = step.get_params(image, step.size, step.longest)
            return new_width, new_height
        if isinstance(step, transforms.Resize):
            size = [step.size] if isinstance(step.size, int) else list(step.size)
            if len(size) == 2:
                return size[1], size[0]
            # torchvision's rule: the shortest side to `size`, the longest in proportion, capped by max_size
            short, long = sorted((width, height))
            new_short, new_long = size[0], int(size[0] * long / max(short, 1))
            if step.max_size is not None and new_long > step.max_size:
                new_short, new_long = int(step.max_size * new_short / new_long), step.max_size
            return (new_short, new_long) if width <= height else (new_long, new_short)
    return None


class ImageTooLarge(ValueError):
    """An image whose eval resize would make more than `RESIZE_LIMIT` crops' pixels."""


def eval_data_config(model, img_size: int | None = None) -> dict[str, Any]:
    """timm's eval data config for `model` (its test size and crop where it has them).

    `img_size` overrides the input size, as timm's `validate.py --img-size` does.
    """
    from timm.data import resolve_data_config

    args = {"img_size": img_size} if img_size else {}
    return resolve_data_config(args, model=model, use_test_size=True)


def eval_geometry(data_config: dict[str, Any]):
    """timm's eval transform up to its conversion to a tensor: the resize and crop of a PIL image
    (the same steps, whatever the crop mode, as `timm.data.create_transform` makes)."""
    from timm.data import create_transform
    from torchvision import transforms

    steps = list(create_transform(**data_config, is_training=False, use_prefetcher=True).transforms)
    cut = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__ or "ToNumpy" in type(t).__name__),
               len(steps))
    return transforms.Compose(steps[:cut])


class ImageDataset:
    """The images of `samples`, decoded with PIL and resized and cropped by `geometry`.

    Yields `(pixels [H, W, 3] uint8, index, ok)`. An unreadable or truncated file, a
    decompression bomb (an image too large for PIL to open safely), or an image whose resize
    would make more than `RESIZE_LIMIT` times the crop's pixels (a long thin image, told from its
    header before it is decoded) gives a zero image and `ok=False` instead of killing the pass;
    the caller leaves it out of the metrics and lists it.
    A `border` (see `Source`) is cut off the decoded image before the resize; a
    `sample_transform` (see `Source`) runs on the cropped image; a `writer` (an input-cache
    entry being built) gets every row as it is made. Both run here, in the loader worker.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], geometry, input_size: Sequence[int],
                 sample_transform=None, writer=None, border: int = 0):
        self.samples = samples
        self.border = border
        self.geometry = geometry
        self.shape = (input_size[1], input_size[2], 3)
        self.sample_transform = sample_transform
        self.writer = writer
        self.max_resized = RESIZE_LIMIT * input_size[1] * input_size[2]

    def __len__(self) -> int:
        return len(self.samples)

    def _pixels(self, index: int, image):
        import numpy as np

        if self.border:
            from PIL import ImageOps

            image = ImageOps.crop(image, border=self.border)
        image = self.geometry(image)
        if self.sample_transform is not None:
            image = self.sample_transform(index, image)
        # C-contiguous whatever the transform returned (a transposed or sliced view): the cache
        # writes and checksums the row's buffer as it lies in memory.
        return np.array(image, dtype=np.uint8, order="C")

    def __getitem__(self, index: int):
        import numpy as np
        import torch
        from PIL import Image

        try:
            with Image.open(self.samples[index][0]) as image:
                resized = resized_size(self.geometry, image)
                if resized is not None and resized[0] * resized[1] > self.max_resized:
                    raise ImageTooLarge(f"{image.size[0]}x{image.size[1]} resizes to {resized[0]}x{resized[1]}")
                # convert() of an RGB image is a copy; the pixels are the same without it.
                pixels = self._pixels(index, image if image.mode == "RGB" else image.convert("RGB"))
            ok = True
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            # PIL's errors for unreadable, truncated or bad files, and for an image of more than
            # twice Image.MAX_IMAGE_PIXELS (a decompression bomb), and ImageTooLarge (a ValueError):
            # each is one skipped sample
            pixels, ok = np.zeros(self.shape, dtype=np.uint8), False
        if pixels.shape != self.shape:
            raise RuntimeError(f"sample {index} came out {pixels.shape}, not {self.shape} (a sample_transform "
                               "must keep the image's size)")
        if self.writer is not None:
            self.writer.write(index, pixels, ok)
        return torch.from_numpy(pixels), index, ok


def make_loader(source: Source, data_config: dict[str, Any], *, batch_size: int, workers: int, pin_memory: bool,
                writer=None):
    """A DataLoader that decodes `source`'s images in order (never shuffled: views index into
    it), yielding `(pixels [B, H, W, 3] uint8, indices, ok)`."""
    import torch

    dataset = ImageDataset(source.samples, eval_geometry(data_config), data_config["input_size"],
                           source.sample_transform, writer, source.border)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       pin_memory=pin_memory, persistent_workers=False)


def device_batches(batches: Iterable[Any], device: str, mean: Sequence[float], std: Sequence[float], *,
                   channels_last: bool = False) -> Iterator[tuple[Any, Any, Any]]:
    """Loader batches as a model takes them: on `device`, float32 `[B, 3, H, W]` (channels-last
    strides if asked), normalised as timm's prefetching loader does, `(x - 255 mean) / (255 std)`.

    The next batch's copy is queued before the current one is handed out, so that from pinned
    memory the transfer runs while the host waits for the model.
    """
    import torch

    mean_ = torch.tensor([m * 255 for m in mean], device=device).view(1, -1, 1, 1)
    std_ = torch.tensor([s * 255 for s in std], device=device).view(1, -1, 1, 1)
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def normalised(pixels):
        pixels = pixels.to(device, non_blocking=True)
        n, h, w, c = pixels.shape
        x = torch.empty((n, c, h, w), device=device, memory_format=layout)
        x.copy_(pixels.permute(0, 3, 1, 2))  # one pass: to float and to the layout
        return x.sub_(mean_).div_(std_)

    pending = None
    for pixels, indices, ok in batches:
        current = (normalised(pixels), indices, ok)
        if pending is not None:
            yield pending
        pending = current
    if pending is not None:
        yield pending
