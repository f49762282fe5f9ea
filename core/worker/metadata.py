"""Model metadata of timm's pretrained tags: how each was pretrained, its configs, and its size.

How a tag was pretrained comes from name rules kept as data, read top to bottom; to teach rbench
a new tag, add a line to a table:

- `DATASETS`: each data set that a tag names is one stage of its fine-tuning chain, in the order
  the tag names them (`laion2b_ft_in12k_in1k` -> `laion2b -> in12k -> in1k`). When two rules
  match overlapping text, the earlier rule wins.
- `UNNAMED_STAGES`: stages a tag does not name (`openai` is CLIP's 400M image-text pairs, `mae`
  pretrains on ImageNet-1k images); the first matching rule puts them before the named ones.
- `TECHNIQUES`: the first rule that matches `architecture.tag` gives the pretraining technique.
  A tag that matches none and whose chain holds only labelled classification data sets
  (`LABELLED`) was trained supervised; otherwise its technique is `unknown`.
- `TIMM_NAMES`: `<pretraining data>[-<technique suffix>]` rewritten into the vocabulary of
  timm's `model_metadata-in1k.csv` (`in22k` -> `in21k`, ...).

The rest comes from timm's pretrained configs (sizes, crop, normalisation, licence, paper) and
from the meta device (parameters, GMACs and activations at the eval size), counted once per
architecture and size, in parallel processes. Nothing is downloaded.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .benchmark import MetaCounts, meta_counts
from .models import architecture, pretrained_name
from .recipes import recipe_row, weights_origin

# Data sets a tag names: regex (matched between `_` separators of the tag) -> data set.
DATASETS: tuple[tuple[str, str], ...] = (
    (r"jft_in1k", "jft300m+in1k"),  # Noisy Student trains on both at once
    (r"in1k", "in1k"),
    (r"in12k", "in12k"),  # timm's 11,821-class subset of ImageNet-22k
    (r"miil_in21k", "in21k-p"),  # Alibaba MIIL's processed ImageNet-21k (11,221 classes)
    (r"inw21k", "in21k-w21"),  # ImageNet-21k, winter 2021 release
    (r"in21k", "in21k"),
    (r"in22k", "in22k"),  # the same images as in21k; tags keep the name their authors used
    (r"ig1b", "ig1b"),  # 1B Instagram images (hashtags for WSL/SWSL)
    (r"yfcc100m", "yfcc100m"),
    (r"yfcc15m", "yfcc15m"),
    (r"cc12m", "cc12m"),
    (r"laion2b", "laion2b"),
    (r"laion400m", "laion400m"),
    (r"laiona", "laion-aesthetics"),
    (r"datacomp1b", "datacomp1b"),
    (r"datacompxl", "datacomp-xl"),
    (r"dfn2b", "dfn2b"),
    (r"dfn5b", "dfn5b"),
    (r"dfndr2b", "dfndr2b"),  # MobileCLIP2's DFN-2B with reinforced captions
    (r"metaclip_400m", "metaclip400m"),
    (r"metaclip_2pt5b", "metaclip2.5b"),
    (r"metaclip2_worldwide", "metaclip2-worldwide"),
    (r"metaclip_altogether", "metaclip-altogether"),
    (r"merged2b", "merged2b"),  # EVA-CLIP: LAION-2B + COYO-700M
    (r"m38m", "merged38m"),  # EVA-02: IN-22k, CC12M, CC3M, COCO, ADE20K, Objects365, OpenImages
    (r"m30m", "merged30m"),  # EVA: IN-22k, CC12M, CC3M, COCO, ADE20K, Objects365
    (r"webli", "webli"),
    (r"lvd142m", "lvd142m"),  # DINOv2's curated images
    (r"lvd1689m", "lvd1689m"),  # DINOv3's curated images
    (r"sat493m", "sat493m"),  # DINOv3's satellite images
    (r"sa1b", "sa1b"),  # Segment Anything's 11M images and 1.1B masks
    (r"bamboo", "bamboo"),
    (r"mix", "paligemma-mix"),
    (r"ocrvqa", "ocr-vqa"),
    (r"refcoco_seg", "refcoco"),
    (r"docci", "docci"),
)

# Stages a tag does not name: regex on `architecture.tag` -> data sets put before the named ones.
UNNAMED_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"\.openai", ("wit400m",)),  # OpenAI CLIP's WebImageText, 400M image-text pairs
    (r"\.clip_ft_in1k$", ("laion400m",)),  # EVA-CLIP giant, trained on LAION-400M
    (r"\.pali", ("webli", "paligemma-pt")),  # SigLIP on WebLI, then PaliGemma's multimodal pretraining
    (r"\.(fb_)?dino$|\.(fc)?mae(_ft|$)", ("in1k",)),  # DINO, MAE, FCMAE: ImageNet-1k images, no labels
    (r"^samvit_", ("in1k",)),  # SAM's image encoder starts from MAE on ImageNet-1k
    (r"^sam2_hiera", ("in1k", "sa1b+sa-v")),  # Hiera MAE, then SAM 2's images and videos
    (r"\.seer", ("ig1b",)),  # SEER: 1B random Instagram images
    (r"\.swag", ("ig3.6b",)),  # SWAG: 3.6B Instagram images with hashtags
    (r"^beit3_", ("beit3-mix",)),  # BEiT-3: 21M image-text pairs, 14M images, 160 GB of text
    (r"^aimv2_", ("dfn2b+coyo700m+hqitp134m",)),
    (r"\.apple_mclip(_lt)?$", ("datacompdr1b",)),  # MobileCLIP's DataComp-1B with reinforced captions
    (r"\.msft_florence2$", ("fld5b",)),  # Florence-2's 126M images with 5.4B annotations
    (r"\.ssld_stage2", ("in22k",)),  # PaddleClas SSLD: stage 1 on ImageNet-22k, stage 2 on in1k
    # Perception Encoder (arXiv 2504.13181, 'Model Training' before §2.5): "We scale up image pretraining
    # to 5.4B publicly available image alt-text pairs curated with MetaCLIP"; PE lang and spatial are
    # aligned from PE core, the small ones distilled from PE core G
    (r"^vit_pe_", ("metaclip5.4b",)),
    # Sapiens2 (arXiv 2604.21681, §3.1 "Humans-1B Dataset"): "a curated, balanced corpus of ~1B
    # high-quality human images for pretraining"
    (r"_sapiens2\.fb$", ("humans1b",)),
)

# Pretraining technique: regex on `architecture.tag` -> technique; the first match wins.
TECHNIQUES: tuple[tuple[str, str], ...] = (
    (r"\.tf_(ens_)?adv_in1k$", "adversarial"),  # (ensemble) adversarial training
    (r"\.ap_in1k$", "advprop"),  # AdvProp: adversarial examples as augmentation, separate BN
    (r"\.ns_jft", "semi-supervised"),  # Noisy Student self-training on pseudo-labelled JFT-300M
    (r"_ssl_yfcc100m", "semi-supervised"),  # billion-scale semi-supervised (teacher labels YFCC100M)
    (r"_swsl_", "semi-weakly-supervised"),  # teacher trained on hashtags labels Instagram images
    (r"_wsl_|\.swag_", "weakly-supervised"),  # Instagram hashtags as labels
    (r"tinyclip|(^|[._])dist(illed)?([._]|$)|ssld|\.usi_in1k$|\.c_radio$", "distilled"),
    # EUPE (arXiv 2603.22387, abstract): "We achieve this by distilling from multiple
    # domain-expert foundation vision encoders"
    (r"\.eupe_", "distilled"),
    # LingBot-Vision (github robbyant/lingbot-vision README): "a family of self-supervised ViT
    # backbones"; "We train a ViT-g/16 teacher ... and distill ViT-L, ViT-B, and ViT-S backbones from it"
    (r"^vit_giant_patch16_lingbot\.", "self-supervised"),
    (r"_lingbot\.robbyant$", "distilled"),
    # Sapiens2 (arXiv 2604.21681, §3.2 "Self-Supervised Learning"): "we combine masked image
    # reconstruction with self-distilled contrastive objectives"
    (r"_sapiens2\.fb$", "self-supervised"),
    (r"\.(fb_)?dino$|ijepa|\.lvd142m$|(\.|dinov3_)lvd1689m$|\.sat493m$|\.seer", "self-supervised"),
    (r"clip|siglip|tipsv2|^vitamin_|^vit_pe_", "image-text contrastive"),  # CLIP, SigLIP and kin
    (r"^beit|\.(fc)?mae|\.mim_|^eva_(giant|large)_patch14_\d+\.|^samvit_|^sam2_hiera", "masked image modelling"),
    (r"^aimv2_|florence", "image-text generative"),  # autoregressive / captioning pretraining
)

# Data sets with class labels: a chain of these and no technique rule means supervised.
LABELLED = frozenset({"in1k", "in12k", "in21k", "in21k-p", "in21k-w21", "in22k", "bamboo"})

# Suffix of each technique in the two-column file's names (timm's `in1k-dist`, `in21k-selfsl`, ...).
TECHNIQUE_SUFFIX = {
    "supervised": "",
    "distilled": "dist",
    "advprop": "ap",
    "adversarial": "adv",
    "semi-supervised": "semisl",
    "semi-weakly-supervised": "swsl",
    "weakly-supervised": "wsl",
    "self-supervised": "selfsl",
    "masked image modelling": "selfsl",  # timm files BEiT's MIM as in21k-selfsl
    "image-text contrastive": "clip",
    "image-text generative": "gen",
}

# `<data>[-<suffix>]` -> timm's name, where timm's vocabulary says it differently.
TIMM_NAMES: tuple[tuple[str, str], ...] = (
    (r"^in2[12]k(-p|-w21)?(?=-|$)", "in21k"),
    (r"^yfcc100m-semisl$", "yfc-semisl"),
    (r"^jft300m\+in1k-semisl$", "jft300m-ns"),
)

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Pretraining:
    """How one tag was trained: its data sets, pretraining first, and its pretraining technique."""

    chain: tuple[str, ...]
    technique: str

    @property
    def data(self) -> str:
        """The pretraining data set(s) (`jft300m+in1k`), or `unknown`."""
        return self.chain[0] if self.chain else UNKNOWN

    @property
    def known(self) -> bool:
        return bool(self.chain) and self.technique != UNKNOWN

    @property
    def pretrain(self) -> str:
        """The `pretrain` name of timm's `model_metadata-in1k.csv` (`in21k`, `in1k-dist`, `laion2b-clip`)."""
        if not self.known:
            return UNKNOWN
        suffix = TECHNIQUE_SUFFIX.get(self.technique, self.technique)
        name = f"{self.data}-{suffix}" if suffix else self.data
        for pattern, timm_name in TIMM_NAMES:
            name = re.sub(pattern, timm_name, name)
        return name


def named_datasets(tag: str) -> list[str]:
    """The data sets a pretrained tag names, in order: `laion2b_ft_in12k_in1k` -> laion2b, in12k, in1k."""
    found: list[tuple[int, int, str]] = []
    for pattern, data in DATASETS:
        for match in re.finditer(rf"(?<![^_]){pattern}(?![^_])", tag):
            if not any(start < match.end() and match.start() < end for start, end, _ in found):
                found.append((match.start(), match.end(), data))
    return [data for _, _, data in sorted(found)]


def pretraining(name: str) -> Pretraining:
    """How the pretrained tag `name` (`architecture.tag`) was trained, from the tables above."""
    tag = name.partition(".")[2]
    unnamed = next((stages for pattern, stages in UNNAMED_STAGES if re.search(pattern, name)), ())
    chain = (*unnamed, *named_datasets(tag))
    technique = next((t for pattern, t in TECHNIQUES if re.search(pattern, name)), None)
    if technique is None:
        technique = "supervised" if chain and set(chain) <= LABELLED else UNKNOWN
    return Pretraining(chain=chain, technique=technique)


def config_row(name: str) -> dict[str, Any]:
    """What timm's pretrained config and the name rules tell about one tag (no model is built)."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    how = pretraining(name)
    row: dict[str, Any] = {
        "model": name,
        "architecture": architecture(name),
        "pretrain": how.pretrain,
        "pretrain_data": how.data,
        "finetune_chain": " -> ".join(how.chain) or UNKNOWN,
        "technique": how.technique,
        **recipe_row(name, weights_origin(cfg)),
    }
    if cfg is None:
        return row
    test_size = cfg.test_input_size or cfg.input_size
    return {
        **row,
        "num_classes": cfg.num_classes,
        "train_img_size": cfg.input_size[-1],
        "test_img_size": test_size[-1],
        "crop_pct": cfg.crop_pct,
        "test_crop_pct": cfg.test_crop_pct,
        "interpolation": cfg.interpolation,
        "mean": cfg.mean,
        "std": cfg.std,
        "license": cfg.license,
        "paper": cfg.paper_ids or cfg.paper_name,
        "origin_url": cfg.origin_url,
        "hub_id": cfg.hf_hub_id,
        "eval_size": tuple(test_size),  # not written: where the MACs are counted
        "build_key": _build_key(cfg),  # not written: tags with the same key build the same model
    }


def _build_key(cfg) -> tuple:
    """What a tag's config changes in the model that `timm.create_model` builds (see timm's
    `_update_default_model_kwargs`): the classes, pooling, channels, and a fixed input size."""
    values = cfg.to_dict()
    fixed_size = tuple(cfg.input_size) if cfg.fixed_input_size else None
    return (cfg.architecture, cfg.num_classes, values.get("global_pool"), cfg.input_size[0], fixed_size)


# A process pays seconds to import torch and timm; below this many builds per process, fewer
# processes finish sooner.
BUILDS_PER_PROCESS = 40


def metadata_rows(names: Iterable[str], *, workers: int | None = None, progress=None,
                  counts: bool = True) -> list[dict[str, Any]]:
    """One row per pretrained tag of `names` (bare architectures take their default tag), in order.

    Parameters, GMACs and activations come from the meta device: one build per architecture and
    config, one forward pass per eval size, spread over `workers` processes (default: one per
    CPU; 0 or 1: this process); `counts=False` leaves them out (seconds for the whole zoo).
    `progress` is a rich `Progress` to show the tags done.
    """
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        tag = pretrained_name(name)
        rows.setdefault(tag, config_row(tag))
    if counts:
        _count_rows(rows, workers, progress)
    return [{k: v for k, v in row.items() if k not in ("eval_size", "build_key")} for row in rows.values()]


def _count_rows(rows: dict[str, dict[str, Any]], workers: int | None, progress) -> None:
    """Add the meta device's counts to `rows` (tag -> row), one build per architecture and config."""
    shared: dict[tuple, list[str]] = {}
    for tag, row in rows.items():
        shared.setdefault(row.get("build_key", (tag,)), []).append(tag)
    builds = sorted(shared.values())  # neighbours (resnet50, resnet50d, ...) share op shapes
    work = [(tags[0], tuple(sorted({rows[t]["eval_size"] for t in tags if "eval_size" in rows[t]}))) for tags in builds]
    if workers is None:
        workers = os.cpu_count() or 1
    task = progress.add_task("metadata", total=len(rows)) if progress else None
    with _counted(work, min(workers, len(work) // BUILDS_PER_PROCESS)) as results:
        for tags, counts in zip(builds, results):
            for tag in tags:
                _add_counts(rows[tag], counts)
            if progress:
                progress.advance(task, len(tags))


def _add_counts(row: dict[str, Any], counts: MetaCounts) -> None:
    gmacs, macts = counts.macs.get(row.get("eval_size"), (None, None))
    row.update(param_count=counts.param_count, gmacs=gmacs, macts=macts, note=counts.error)


@contextmanager
def _counted(work: Sequence[tuple[str, tuple]], processes: int) -> Iterator[Iterator[MetaCounts]]:
    """The `meta_counts` of each `(name, sizes)`, in order: in `processes` worker processes when
    above 1. Leaving the `with` (at the end, or on Ctrl-C) ends the workers at once."""
    if processes <= 1:
        yield map(_count, work)
        return
    # forkserver (or spawn) starts clean workers: forking a process that holds torch's threads
    # is unsafe. The preloaded modules are imported once and shared by every worker.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["rbench.worker.metadevice", "timm"])
        _start_forkserver()
    chunk = max(1, min(8, len(work) // (processes * 8)))  # neighbours share op shapes; keep the tail short
    # A Pool rather than a ProcessPoolExecutor: its exit terminates the workers, where an
    # executor's would wait for every queued build.
    with context.Pool(processes, initializer=_init_worker) as pool:
        yield pool.imap(_count, work, chunksize=chunk)


def _start_forkserver() -> None:
    """Start this process's forkserver (when it is not running) in the standard library's folder.
    The forkserver imports the preloaded modules with its working directory first on its path
    (it is started by `python -c`, and CPython does not give it this process's path), so a folder
    named `rbench` or `timm` there (a clone) would shadow the installed package in every worker.
    The standard library's modules come before the installed packages on the path anyway, and
    that folder stays (a removed one breaks MKL's loading of torch). Each worker moves to this
    process's working directory and path before it runs anything."""
    import sysconfig
    from multiprocessing import forkserver

    stdlib = sysconfig.get_path("stdlib")
    if not os.path.isdir(stdlib):  # a zipped standard library: no folder to start from
        forkserver.ensure_running()
        return
    here = os.getcwd()
    os.chdir(stdlib)
    try:
        forkserver.ensure_running()
    finally:
        os.chdir(here)


def _init_worker() -> None:
    import gc

    import torch

    torch.set_num_threads(1)  # meta tensors do no arithmetic; idle threads would only compete
    gc.freeze()  # the garbage collector need not walk torch's and timm's modules again and again


def _count(job: tuple[str, tuple]) -> MetaCounts:
    name, sizes = job
    return meta_counts(name, sizes)


def in1k_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `model_metadata-in1k.csv`: tags with a 1000-class ImageNet head."""
    return [row for row in rows if row.get("num_classes") == 1000]


def unknown_tags(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Tags whose pretraining data or technique no rule knows: candidates for new table lines."""
    return [row["model"] for row in rows if UNKNOWN in (row["pretrain_data"], row["technique"])]
