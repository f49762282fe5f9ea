"""Models on the meta device, made cheap enough to count the whole timm zoo in minutes.

A meta tensor has a shape and no data, so building a model there costs no memory and a forward
pass gives every op's output shape, which is all that counting MACs needs. What is slow is the
Python around it: weight initialisers that fill tensors with nothing, and torch's shape functions
for common ops (a layer norm costs about 3 ms). Two modes remove most of it:

- `MetaInit` (while building) puts new tensors on the meta device and returns in-place
  initialisers of meta tensors at once;
- `OpCounter` (while running) counts FLOPs and activations, caches each op's output shapes by
  its inputs' shapes (a ViT block repeats the same ops 12 times, and so do many models of one
  family), and computes the shapes of pointwise, normalisation and softmax ops itself. It stays
  out of the build, where nearly every op creates a parameter and torch does that fast.

The counts are those of `torch.utils.flop_counter.FlopCounterMode` (the same FLOP formulas on
the same shapes) plus fvcore's formulas for norms, pooling and upsampling, so that they match
the GMACs of timm's published benchmark tables. This module imports torch; `import rbench` never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._device import DeviceContext
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, shape_wrapper

Tensor = torch.Tensor
aten = torch.ops.aten

# Activations are the outputs of these ops, as in timm's benchmark script.
ACTIVATION_OPS = frozenset({
    aten.convolution.default, aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
})
# Cached op shapes are pure functions of the op and its inputs' shapes, so one cache serves every
# model of a process; past this many entries it starts again, to bound memory.
CACHE_LIMIT = 100_000


def fvcore_formulas():
    """FLOP formulas for `FlopCounterMode` (`custom_mapping`) that add what fvcore counts beyond
    convolutions and matmuls, so that MACs match timm's published tables.

    fvcore counts one multiply-add as one, and these ops as it does (norms per input element:
    2 for an inference batch norm with affine, else 1; 5 for a training or layer/group/instance
    norm with affine, else 4; adaptive average pooling 1 per input element; nearest upsampling
    1 and bilinear upsampling or grid sampling 4 per output element). FlopCounterMode counts a
    multiply-add as 2 FLOPs, so each formula returns twice fvcore's count and the total halves.
    """
    import math

    def batch_norm(input_shape, weight, *rest, out_shape=None, **kwargs):
        training = next((a for a in rest if isinstance(a, bool)), False)  # absent in the no-training variant
        per_element = (5 if weight is not None else 4) if training else (2 if weight is not None else 1)
        return 2 * per_element * math.prod(input_shape)

    def norm(weight_index: int):
        def formula(*args, out_shape=None, **kwargs):
            return 2 * (5 if args[weight_index] is not None else 4) * math.prod(args[0])

        return formula

    def per_input(scale: int):
        return lambda input_shape, *args, out_shape=None, **kwargs: 2 * scale * math.prod(input_shape)

    def per_output(scale: int):
        return lambda *args, out_shape=None, **kwargs: 2 * scale * math.prod(out_shape)

    # A global average pool (output 1x1) reaches aten as `mean`, like a squeeze-excite mean,
    # which fvcore does not count; it is left out too (one read of the last feature map).
    return {
        aten.native_batch_norm: batch_norm,
        aten._native_batch_norm_legit: batch_norm,
        aten._native_batch_norm_legit_no_training: batch_norm,
        aten.native_layer_norm: norm(2),
        aten.native_group_norm: norm(1),
        aten._adaptive_avg_pool2d: per_input(1),
        aten.upsample_nearest2d: per_output(1),
        aten.upsample_bilinear2d: per_output(4),
        aten.grid_sampler_2d: per_output(4),
    }


# FlopCounterMode's formulas, plus fvcore's for norms, pooling and upsampling (shape-wrapped as
# FlopCounterMode wraps a custom mapping), so that counts match timm's published tables.
FLOP_FORMULAS = {**flop_registry, **{op: shape_wrapper(f) for op, f in fvcore_formulas().items()}}


def _empty(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _layer_norm(x, normalized_shape, *_):
    stats = [*x.shape[: x.dim() - len(normalized_shape)], *[1] * len(normalized_shape)]
    return _empty(x.shape), _empty(stats), _empty(stats)


def _batch_norm(x, *_):
    return _empty(x.shape), _empty([x.shape[1]]), _empty([x.shape[1]])


def _group_norm(x, weight, bias, n, c, hxw, groups, eps):
    return _empty(x.shape), _empty([n, groups]), _empty([n, groups])


def _same_shape(x, *_, **__):
    return _empty(x.shape)


def _addmm(bias, mat1, mat2, **_):
    return _empty([mat1.shape[0], mat2.shape[1]])


# Output shapes of slow ops, for float32 meta inputs only; each matches torch's own shape function
# (tests/test_metadata.py checks them against it).
SHAPE_RULES: dict[Any, Callable[..., Any]] = {
    aten.native_layer_norm.default: _layer_norm,
    aten.native_batch_norm.default: _batch_norm,
    aten._native_batch_norm_legit_no_training.default: _batch_norm,
    aten.native_group_norm.default: _group_norm,
    aten._softmax.default: _same_shape,
    aten._safe_softmax.default: _same_shape,
    aten.hardswish.default: _same_shape,
    aten.hardsigmoid.default: _same_shape,
    aten.addmm.default: _addmm,
}


def _writes_first_argument(op) -> bool:
    """Whether the aten overload `op` writes into its first argument and returns it (`zero_`,
    `add_`, `copy_`), read from its schema: `torch.Tag.inplace` says the same but is missing
    before torch 2.12, and an op of `Tensor(a!) self -> Tensor(a!)` is exactly what it tags."""
    args, returns = op._schema.arguments, op._schema.returns
    return (bool(args) and not args[0].kwarg_only and args[0].alias_info is not None and args[0].alias_info.is_write
            and len(returns) == 1 and returns[0].alias_info is not None and returns[0].alias_info.is_write)


def _inplace_initialiser(func) -> bool:
    """Whether `func` only writes values into its first argument (an initialiser, `fill_`, `x[i] = v`)."""
    name = getattr(func, "__name__", "")
    if getattr(func, "__module__", None) == "torch.nn.init":
        return name.endswith("_")
    if name == "__setitem__":
        return True
    if not name.endswith("_") or name.endswith("__") or name == "requires_grad_":
        return False
    packet = getattr(aten, name, None)
    if packet is None:
        return False
    overloads = [getattr(packet, overload) for overload in packet.overloads()]
    # inplace_view ops (squeeze_, transpose_, ...) change the shape, so they must run
    return any(map(_writes_first_argument, overloads)) and not any(torch.Tag.inplace_view in o.tags for o in overloads)


class MetaInit(DeviceContext):
    """`torch.device("meta")` that skips in-place writes into meta tensors: initialising a tensor
    without data is a no-op.

    `DeviceContext` is the mode that `with torch.device(...)` enters; extending it keeps one mode
    rather than two stacked, which matters because every torch call of a constructor passes
    through it.
    """

    skippable: dict[Any, bool] = {}

    def __init__(self) -> None:
        super().__init__("meta")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes the tensor by keyword
        if isinstance(target, Tensor) and target.is_meta:
            skip = self.skippable.get(func)
            if skip is None:
                skip = self.skippable[func] = _inplace_initialiser(func)
            if skip:
                return None if func.__name__ == "__setitem__" else target
        return super().__torch_function__(func, types, args, kwargs)


def _key(value):
    """A hashable stand-in for an op argument: tensors by shape, strides and dtype."""
    if isinstance(value, Tensor):
        return (value.shape, value.stride(), value.dtype, value.is_meta)
    if isinstance(value, (list, tuple)):
        return tuple([_key(v) for v in value])
    return value


def _spec(out):
    if isinstance(out, Tensor):
        return (out.shape, out.stride(), out.dtype)
    return tuple(_spec(o) for o in out)


def _from_spec(spec):
    if isinstance(spec[-1], torch.dtype):
        return torch.empty_strided(spec[0], spec[1], dtype=spec[2], device="meta")
    return tuple(_from_spec(s) for s in spec)


def _broadcast(shapes: Sequence[Sequence[int]]) -> list[int]:
    out = [1] * max(len(s) for s in shapes)
    for shape in shapes:
        for i, size in enumerate(shape, len(out) - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
                out[i] = size
    return out


class OpCounter(TorchDispatchMode):
    """Counts the FLOPs and activations of the ops it sees, and computes meta shapes fast.

    `flops` is what `FlopCounterMode` counts (MACs are half of it); `activations` the output
    elements of convolutions and matmuls.
    """

    cache: dict[Any, tuple[Any, int, int]] = {}
    kinds: dict[Any, str] = {}
    pointwise_dtypes: dict[Any, torch.dtype | None] = {}

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.activations = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing here is compiled; torch's guard against it costs microseconds per op

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = self.kinds.get(func) or self.kinds.setdefault(func, _kind(func))
        if kind == "inplace" and args and isinstance(args[0], Tensor) and args[0].is_meta:
            return args[0]  # writes values only, and a meta tensor has none
        if kind == "alias" or not any(isinstance(a, Tensor) for a in args):
            out = func(*args, **kwargs)  # views and factories: torch is fast enough
            self._count(func, args, kwargs, out)
            return out
        try:
            key = (func, _key(args), _key(tuple(kwargs.items())))
            hit = self.cache.get(key)
        except TypeError:  # an unhashable argument: no caching for this call
            key = hit = None
        if hit is not None:
            spec, flops, activations = hit
            self.flops += flops
            self.activations += activations
            return _from_spec(spec)
        out = self._fast_shapes(func, kind, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        flops, activations = self._count(func, args, kwargs, out)
        outs = [out] if isinstance(out, Tensor) else out
        if key is not None and isinstance(outs, (list, tuple)) and outs and all(isinstance(t, Tensor) and t.is_meta for t in outs):
            if len(self.cache) >= CACHE_LIMIT:
                self.cache.clear()
            self.cache[key] = (_spec(out), flops, activations)
        return out

    def _count(self, func, args, kwargs, out) -> tuple[int, int]:
        """Add the FLOPs and activations of one op call; returns them."""
        formula = FLOP_FORMULAS.get(func.overloadpacket)
        flops = formula(*args, **kwargs, out_val=out) if formula is not None else 0
        activations = out.numel() if func in ACTIVATION_OPS else 0
        self.flops += flops
        self.activations += activations
        return flops, activations

    def _fast_shapes(self, func, kind: str, args, kwargs):
        """The outputs of `func` made from shape rules, or None to let torch compute them."""
        tensors = [a for a in args if isinstance(a, Tensor)]
        if any(t.dtype != torch.float32 or not t.is_meta for t in tensors) or any(isinstance(v, Tensor) for v in kwargs.values()):
            return None
        rule = SHAPE_RULES.get(func)
        if rule is not None:
            return rule(*args, **kwargs)
        if kind != "pointwise" or any(isinstance(a, (list, tuple)) for a in args):
            return None
        dtype = self._pointwise_dtype(func, args, kwargs)
        return None if dtype is None else _empty(_broadcast([t.shape for t in tensors]), dtype)

    def _pointwise_dtype(self, func, args, kwargs) -> torch.dtype | None:
        """The output dtype of a pointwise op on float32 inputs, found once on one-element CPU tensors."""
        key = (func, _key(tuple(kwargs.items())))
        if key not in self.pointwise_dtypes:
            try:
                probe = func(*[torch.ones(()) if isinstance(a, Tensor) else a for a in args], **kwargs)
                self.pointwise_dtypes[key] = probe.dtype if isinstance(probe, Tensor) else None
            except Exception:  # an op that cannot run on a scalar: torch computes its shapes
                self.pointwise_dtypes[key] = None
        return self.pointwise_dtypes[key]


def _kind(func) -> str:
    """`inplace`, `alias` (views, in-place views, no outputs), `pointwise` or `functional`."""
    tags = func.tags
    if _writes_first_argument(func) and torch.Tag.inplace_view not in tags:
        return "inplace"
    returns = func._schema.returns
    if not returns or any(r.alias_info is not None for r in returns):
        return "alias"
    return "pointwise" if torch.Tag.pointwise in tags else "functional"


def meta_model(name: str):
    """`name` (an architecture or `architecture.tag`) built on the meta device, in eval mode.

    The tag's pretrained config sets the number of classes and the input size, as with
    `timm.create_model(name)`. Raises whatever timm raises for a model that cannot be built there.
    """
    import timm

    with MetaInit():
        return timm.create_model(name, pretrained=False).eval()


def count_forward(model, size: Sequence[int]) -> tuple[float, int]:
    """MACs and activations of one forward pass of one image of `size` (C, H, W) through a meta `model`."""
    counter = OpCounter()
    with torch.no_grad(), counter:
        model(_empty([1, *size]))
    return counter.flops / 2, counter.activations
