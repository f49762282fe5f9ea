"""Model metadata: the pretraining data set of each pretrained tag, from timm's configs alone.

The mapping is data: `PRETRAIN_RULES` is read top to bottom, the first rule whose regular
expression matches `architecture.tag` wins. timm's vocabulary comes first (`in1k`, `in1k-dist`,
`in1k-ap`, `in1k-adv`, `in21k`, `in21k-selfsl`, `jft300m-ns`, `yfc-semisl`, `ig1b-swsl`,
`ig1b-wsl`), then names for data sets that vocabulary lacks.
"""

from __future__ import annotations

import re
from typing import Any

from .models import architecture

PRETRAIN_RULES: tuple[tuple[str, str], ...] = (
    (r"\bns_jft|_ns\b|noisy", "jft300m-ns"),
    (r"(^|[._])ap_in1k|\.ap$|advprop", "in1k-ap"),
    (r"(^|[._])(tf_)?adv(_|$)|^adv_|^ens_adv", "in1k-adv"),
    (r"swsl", "ig1b-swsl"),
    (r"(^|_)wsl", "ig1b-wsl"),
    (r"ssl_yfcc|yfcc100m", "yfc-semisl"),
    (r"laion", "laion2b"),
    (r"openai", "openai-clip"),
    (r"dfn", "dfn"),
    (r"datacomp", "datacomp"),
    (r"metaclip", "metaclip"),
    (r"webli", "webli"),
    (r"^beit.*in22k|mim_in22k|in22k.*mim", "in21k-selfsl"),
    (r"in12k", "in12k"),
    (r"in21k|in22k|21k|22k", "in21k"),
    (r"distill|dist_in1k|\.dist", "in1k-dist"),
    (r"in1k|imagenet", "in1k"),
)


def pretrain_of(name: str) -> str:
    """The pretraining data set (`in1k`, `in21k`, ...) of a timm `architecture.tag`, or `unknown`."""
    for pattern, pretrain in PRETRAIN_RULES:
        if re.search(pattern, name):
            return pretrain
    return "unknown"


def metadata_row(name: str) -> dict[str, Any]:
    """`{"model": tag, "pretrain": ...}` for one model name (a bare architecture uses its default tag)."""
    import timm.models

    if "." not in name:
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is not None and getattr(cfg, "tag", None):
            name = f"{architecture(name)}.{cfg.tag}"
    return {"model": name, "pretrain": pretrain_of(name)}
