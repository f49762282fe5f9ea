"""ImageNet-O (Hendrycks et al., "Natural Adversarial Examples", CVPR 2021): 2,000 images of
classes outside ImageNet-1k that ImageNet models take for one of 200 ImageNet classes, an
out-of-distribution detection test scored as its authors' evaluation does
(hendrycks/natural-adv-examples, `eval_many_models.py` and `calibration_tools.get_measures`):

- the logits are restricted to the 200 classes of the published folders, and a sample's anomaly
  score is minus its maximum softmax probability over them;
- the in-distribution set is the ImageNet val images of those 200 classes, scored by the same
  model over the same 200 classes: the `val-on-imagenet-o-classes` view added to ImageNet val's
  stored predictions (a class subset no view of a val run keeps: its cells need `--keep scores`);
- AUPR is the average precision with ImageNet-O as the positive class (scikit-learn's
  `average_precision_score`), in percent as the paper reports it.

Each view keeps its samples' maximum probabilities in its row (not written to the CSV), and
`report_rows` pairs each model's ImageNet-O row with its val row of the same image size: the
column comes from the stored predictions alone. Only `rbench`'s public API is imported here.
"""

from __future__ import annotations

import base64
from functools import cache
from pathlib import Path
from typing import Any

import rbench

from . import imagenet

NAME = "imagenet-o"
VAL_VIEW = "val-on-imagenet-o-classes"
IMAGES = 2_000
# Each view's samples' maximum softmax probabilities over the 200 classes, in its rows only.
CONFIDENCES = "imagenet_o_max_probs"
COLUMNS = ("model", "img_size", "top1", "top1_err", "top5", "top5_err", "aupr", "in_count", "out_count",
           "param_count", "crop_pct", "interpolation")

# The 200 ImageNet classes of the published folders (the `imagenet_o_wnids` of the reference).
WNIDS = tuple("""
n01443537 n01704323 n01770081 n01784675 n01819313 n01820546 n01910747 n01917289 n01968897 n02074367
n02317335 n02319095 n02395406 n02454379 n02606052 n02655020 n02666196 n02672831 n02730930 n02777292
n02783161 n02786058 n02787622 n02791270 n02808304 n02817516 n02841315 n02865351 n02877765 n02892767
n02906734 n02910353 n02916936 n02948072 n02965783 n03000134 n03000684 n03017168 n03026506 n03032252
n03075370 n03109150 n03126707 n03134739 n03160309 n03196217 n03207743 n03218198 n03223299 n03240683
n03271574 n03291819 n03297495 n03314780 n03325584 n03344393 n03347037 n03372029 n03376595 n03388043
n03388183 n03400231 n03445777 n03457902 n03467068 n03482405 n03483316 n03494278 n03530642 n03544143
n03584829 n03590841 n03598930 n03602883 n03649909 n03661043 n03666591 n03676483 n03692522 n03706229
n03717622 n03720891 n03721384 n03724870 n03729826 n03733131 n03733281 n03742115 n03786901 n03788365
n03794056 n03804744 n03814639 n03814906 n03825788 n03840681 n03843555 n03854065 n03857828 n03868863
n03874293 n03884397 n03891251 n03908714 n03920288 n03929660 n03930313 n03937543 n03942813 n03944341
n03961711 n03970156 n03982430 n03991062 n03995372 n03998194 n04005630 n04023962 n04033901 n04040759
n04067472 n04074963 n04116512 n04118776 n04125021 n04127249 n04131690 n04141975 n04153751 n04154565
n04201297 n04204347 n04209133 n04209239 n04228054 n04235860 n04243546 n04252077 n04254120 n04258138
n04265275 n04270147 n04275548 n04330267 n04332243 n04336792 n04347754 n04371430 n04371774 n04372370
n04376876 n04409515 n04417672 n04418357 n04423845 n04429376 n04435653 n04442312 n04482393 n04501370
n04507155 n04525305 n04542943 n04554684 n04557648 n04562935 n04579432 n04591157 n04597913 n04599235
n06785654 n06874185 n07615774 n07693725 n07695742 n07697537 n07711569 n07714990 n07715103 n07716358
n07717410 n07718472 n07720875 n07742313 n07745940 n07747607 n07749582 n07753275 n07753592 n07754684
n07768694 n07836838 n07871810 n07873807 n07880968 n09229709 n09472597 n12144580 n12267677 n13052670
""".split())


@cache
def class_indices() -> tuple[int, ...]:
    """The ImageNet-1k indices of ImageNet-O's 200 classes, ascending."""
    index = imagenet.wnid_index()
    return tuple(sorted(index[wnid] for wnid in WNIDS))


def max_probabilities(predictions: rbench.Predictions) -> dict[str, Any]:
    """A view's score: each sample's maximum softmax probability over the view's classes,
    kept in its row (float64, base64) for `report_rows`; no column of its own."""
    import numpy as np

    best = np.exp(np.asarray(predictions.topk_logp, dtype=np.float64)[:, 0])
    return {CONFIDENCES: base64.b64encode(np.ascontiguousarray(best, dtype="<f8").tobytes()).decode()}


def _decoded(text: str):
    import numpy as np

    return np.frombuffer(base64.b64decode(text), dtype="<f8")


def average_precision(positive, negative) -> float:
    """Average precision of anomaly scores, `positive` the scores of the positive class: the sum,
    over the distinct thresholds from the highest, of the recall gained times the precision there
    (scikit-learn's `average_precision_score`, ties forming one threshold)."""
    import numpy as np

    scores = np.concatenate([np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)])
    truth = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # each threshold's last sample
    true_positives = np.cumsum(truth)[last]
    precision = true_positives / (last + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def load(request: rbench.DataRequest) -> rbench.Source:
    if request.path is None:
        raise rbench.DataError(f"where is {NAME}? pass --data-root ROOT (with ROOT/{NAME}) or --data {NAME}=PATH "
                               "(the published imagenet-o folder of 200 wnid folders)")
    root = Path(request.path)
    if not root.is_dir():
        raise rbench.DataError(f"{NAME} folder {root} does not exist; pass --data {NAME}=PATH, the published "
                               "imagenet-o folder of 200 wnid folders")
    folders, samples = imagenet.wnid_folder_samples(NAME, root, set(WNIDS))
    missing = sorted(set(WNIDS) - set(folders))
    partial = bool(missing) or len(samples) != IMAGES
    if len(samples) > IMAGES:
        raise rbench.DataError(f"{NAME} at {root} has {len(samples):,} images, more than the published {IMAGES:,}; "
                               f"point --data {NAME}=PATH at the published imagenet-o folder")
    if partial and not request.allow_partial:
        lacks = f", no folder {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "") if missing else ""
        raise rbench.DataError(f"{NAME} at {root} is partial: {len(samples):,} of {IMAGES:,} images, {len(folders)} of "
                               f"200 class folders{lacks}; complete it, or pass --allow-partial to score what is there")
    view = rbench.ViewSpec(name=NAME, classes=class_indices(), score=max_probabilities, columns=COLUMNS)
    return rbench.Source(name=NAME, root=root, samples=samples, views=[view], partial=partial,
                         note=f"partial: {len(samples):,} of {IMAGES:,} images" if partial else "")


def val_on_imagenet_o_classes(source: rbench.Source) -> list[rbench.ViewSpec]:
    """ImageNet val's in-distribution images for ImageNet-O: those of its 200 classes, scored
    over those classes (the reference links the val folders named like ImageNet-O's)."""
    members = set(class_indices())
    kept = [i for i, (_, label) in enumerate(source.samples) if label in members]
    if not kept:
        return []
    return [rbench.ViewSpec(name=VAL_VIEW, samples=kept, classes=class_indices(), score=max_probabilities)]


def report_rows(request: rbench.ReportRequest) -> tuple[list[dict], list[str]]:
    """ImageNet-O's rows with `aupr`: each model's ImageNet-O maximum probabilities against
    those of its `val-on-imagenet-o-classes` row at the same image size (`in_count` images);
    empty, with one note, for a model without such a row."""
    if request.view != NAME:
        return [dict(row) for row in request.rows], []
    inside = {(row["model"], row["img_size"]): row for row in request.view_rows.get(VAL_VIEW, ())
              if row.get(CONFIDENCES)}
    rows, lacking = [], []
    for row in request.rows:
        if not row.get(CONFIDENCES):  # an imported row: nothing to pair
            rows.append(dict(row))
            continue
        found = inside.get((row["model"], row["img_size"]))
        if found is None:
            lacking.append(f"{row['model']} at {row['img_size']} px")
            rows.append({**row, "aupr": None, "in_count": None, "out_count": row.get("count")})
            continue
        outside, within = _decoded(row[CONFIDENCES]), _decoded(found[CONFIDENCES])
        rows.append({**row, "aupr": 100.0 * average_precision(-outside, -within), "in_count": len(within),
                     "out_count": len(outside)})
    notes = []
    if lacking:
        shown = ", ".join(lacking[:4]) + (", ..." if len(lacking) > 4 else "")
        notes.append(f"{NAME}: aupr is empty for {len(lacking)} row(s) ({shown}): no {VAL_VIEW} row of the same model "
                     f"and size in the store; validate them on imagenet with --keep imagenet=scores")
    return rows, notes


@rbench.hookimpl
def rbench_added_views():
    return [rbench.AddedViews(name=VAL_VIEW, source="imagenet", views={VAL_VIEW: None}, make=val_on_imagenet_o_classes,
                              description="ImageNet val images of ImageNet-O's 200 classes over those classes: "
                                          "ImageNet-O's in-distribution set (needs --keep imagenet=scores)")]


@rbench.hookimpl
def rbench_datasets():
    return [rbench.DatasetSpec(name=NAME, load=load, default_folder=NAME, views={NAME: None}, options={},
                               report_rows=report_rows,
                               description="ImageNet-O: 2,000 out-of-distribution images over 200 classes; AUPR "
                                           "against ImageNet val's images of those classes")]
