"""Model metadata: hand-checked pretraining of well-known tags, counts on the meta device equal
to those of real models, failing models as error rows, and the two CSV files."""

from __future__ import annotations

import csv
import sys
import types

import pytest
import timm
import torch
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

from rbench.worker import metadata
from rbench.worker.benchmark import meta_counts
from rbench.frontend.cli import main
from rbench.worker.metadata import TECHNIQUE_SUFFIX, TECHNIQUES, metadata_rows, named_datasets, pretraining
from rbench.worker.metadevice import SHAPE_RULES, OpCounter
from rbench.report.results import MODEL_METADATA_COLUMNS

# (tag, timm's pretrain name, fine-tuning chain, technique), each checked against the tag's paper
# and timm's pretrained config (hub id, licence, origin).
HAND_CHECKED = [
    # ResNet strikes back, recipe A1: supervised on ImageNet-1k
    ("resnet50.a1_in1k", "in1k", "in1k", "supervised"),
    # DeiT with a distillation token and a RegNetY teacher
    ("deit_base_distilled_patch16_224.fb_in1k", "in1k-dist", "in1k", "distilled"),
    ("levit_128.fb_dist_in1k", "in1k-dist", "in1k", "distilled"),
    # TinyViT: distilled from a CLIP teacher during ImageNet-22k pretraining, then fine-tuned on 1k
    ("tiny_vit_21m_224.dist_in22k_ft_in1k", "in21k-dist", "in22k -> in1k", "distilled"),
    # Noisy Student: ImageNet-1k labels plus pseudo-labelled JFT-300M, in one training
    ("tf_efficientnet_b0.ns_jft_in1k", "jft300m-ns", "jft300m+in1k", "semi-supervised"),
    # AdvProp: adversarial examples as augmentation, with separate batch norms
    ("tf_efficientnet_b0.ap_in1k", "in1k-ap", "in1k", "advprop"),
    # adversarial training (Kurakin et al.) and ensemble adversarial training (Tramer et al.)
    ("inception_v3.tf_adv_in1k", "in1k-adv", "in1k", "adversarial"),
    ("inception_resnet_v2.tf_ens_adv_in1k", "in1k-adv", "in1k", "adversarial"),
    # Billion-scale semi-supervised (Yalniz et al.): teacher labels YFCC100M, student fine-tuned on 1k
    ("resnet50.fb_ssl_yfcc100m_ft_in1k", "yfc-semisl", "yfcc100m -> in1k", "semi-supervised"),
    # ... and semi-weakly supervised: the teacher learnt from Instagram hashtags
    ("resnext50_32x4d.fb_swsl_ig1b_ft_in1k", "ig1b-swsl", "ig1b -> in1k", "semi-weakly-supervised"),
    # Mahajan et al.: Instagram hashtags as labels, then ImageNet-1k
    ("resnext101_32x8d.fb_wsl_ig1b_ft_in1k", "ig1b-wsl", "ig1b -> in1k", "weakly-supervised"),
    # SWAG: 3.6B Instagram images with hashtags
    ("regnety_160.swag_ft_in1k", "ig3.6b-wsl", "ig3.6b -> in1k", "weakly-supervised"),
    # BEiT: masked image modelling on ImageNet-22k, supervised on 22k, then on 1k
    ("beit_base_patch16_224.in22k_ft_in22k_in1k", "in21k-selfsl", "in22k -> in22k -> in1k", "masked image modelling"),
    # EVA-02: MIM on ImageNet-22k (EVA-CLIP features as targets), then 22k and 1k fine-tuning
    ("eva02_base_patch14_448.mim_in22k_ft_in22k_in1k", "in21k-selfsl", "in22k -> in22k -> in1k",
     "masked image modelling"),
    # MAE on ImageNet-1k images, no fine-tuning
    ("vit_base_patch16_224.mae", "in1k-selfsl", "in1k", "masked image modelling"),
    # ConvNeXt V2: FCMAE on ImageNet-1k, then 22k and 1k fine-tuning
    ("convnextv2_tiny.fcmae_ft_in22k_in1k", "in1k-selfsl", "in1k -> in22k -> in1k", "masked image modelling"),
    # SAM's image encoder: MAE on ImageNet-1k, then Segment Anything's SA-1B
    ("samvit_base_patch16.sa1b", "in1k-selfsl", "in1k -> sa1b", "masked image modelling"),
    # OpenCLIP on LAION-2B, then ImageNet-12k and ImageNet-1k
    ("vit_base_patch16_clip_224.laion2b_ft_in12k_in1k", "laion2b-clip", "laion2b -> in12k -> in1k",
     "image-text contrastive"),
    # OpenAI CLIP, trained on its 400M WebImageText pairs
    ("vit_base_patch16_clip_224.openai", "wit400m-clip", "wit400m", "image-text contrastive"),
    # SigLIP on WebLI
    ("vit_so400m_patch14_siglip_224.webli", "webli-clip", "webli", "image-text contrastive"),
    # ConvNeXt supervised on ImageNet-22k (timm files it as in21k), then ImageNet-1k
    ("convnext_base.fb_in22k_ft_in1k", "in21k", "in22k -> in1k", "supervised"),
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "in21k", "in21k -> in1k", "supervised"),
    # DINOv2 on its curated LVD-142M, and DINO on ImageNet-1k images
    ("vit_base_patch14_dinov2.lvd142m", "lvd142m-selfsl", "lvd142m", "self-supervised"),
    ("vit_small_patch16_224.dino", "in1k-selfsl", "in1k", "self-supervised"),
    # SEER: SwAV on 1B random Instagram images, then ImageNet-1k
    ("regnety_320.seer_ft_in1k", "ig1b-selfsl", "ig1b -> in1k", "self-supervised"),
    # EUPE: "distilling from multiple domain-expert foundation vision encoders" (arXiv 2603.22387), on LVD-1689M
    ("vit_small_patch16_dinov3_qkvb.eupe_lvd1689m", "lvd1689m-dist", "lvd1689m", "distilled"),
    # AIMv2: autoregressive image-text pretraining
    ("aimv2_large_patch14_224.apple_pt", "dfn2b+coyo700m+hqitp134m-gen", "dfn2b+coyo700m+hqitp134m",
     "image-text generative"),
    # Perception Encoder (arXiv 2504.13181, 'Model Training'): "We scale up image pretraining to 5.4B
    # publicly available image alt-text pairs curated with MetaCLIP"
    ("vit_pe_core_base_patch16_224.fb", "metaclip5.4b-clip", "metaclip5.4b", "image-text contrastive"),
    ("vit_pe_spatial_tiny_patch16_512.fb", "metaclip5.4b-clip", "metaclip5.4b", "image-text contrastive"),
    # Sapiens2 (arXiv 2604.21681, §3.1 "Humans-1B Dataset", §3.2 "Self-Supervised Learning")
    ("vit_base_patch16_sapiens2.fb", "humans1b-selfsl", "humans1b", "self-supervised"),
]


@pytest.mark.parametrize(("tag", "pretrain", "chain", "technique"), HAND_CHECKED)
def test_hand_checked_pretraining(tag, pretrain, chain, technique):
    assert tag in timm.list_pretrained(tag)  # the tag exists in the installed timm
    how = pretraining(tag)
    assert (how.pretrain, " -> ".join(how.chain), how.technique) == (pretrain, chain, technique)


def test_hand_checked_tags_cover_every_technique():
    assert {t for _, _, _, t in HAND_CHECKED} == set(TECHNIQUE_SUFFIX)
    assert {t for _, t in TECHNIQUES} <= set(TECHNIQUE_SUFFIX)


def test_unknown_tags_fall_back_to_unknown():
    how = pretraining("gemma4_vit_167m.gemma4_e4b_it")  # Gemma 4 publishes no vision-tower data
    assert (how.data, how.technique, how.pretrain) == ("unknown", "unknown", "unknown")


def test_named_datasets_in_order_and_earlier_rules_win():
    assert named_datasets("clip_laion2b_augreg_ft_in12k_in1k_384") == ["laion2b", "in12k", "in1k"]
    assert named_datasets("ns_jft_in1k_475") == ["jft300m+in1k"]  # not jft300m+in1k, then in1k
    assert named_datasets("miil_in21k_ft_in1k") == ["in21k-p", "in1k"]


SMALL_TAGS = ["test_vit.r160_in1k", "test_efficientnet.r160_in1k", "test_byobnet.r160_in1k",
              "resnet18.a1_in1k", "mobilenetv3_small_050.lamb_in1k", "vit_tiny_patch16_224.augreg_in21k"]


@pytest.mark.parametrize("tag", SMALL_TAGS)
def test_param_count_on_meta_equals_the_built_model(tag):
    model = timm.create_model(tag)  # the tag's config sets the head (21,843 classes for augreg_in21k)
    counts = meta_counts(tag, [])
    assert round(counts.param_count * 1e6) == sum(p.numel() for p in model.parameters())
    assert counts.error is None


@pytest.mark.parametrize("tag", ["test_vit.r160_in1k", "test_efficientnet.r160_in1k", "resnet18.a1_in1k"])
def test_macs_on_meta_equal_flop_counter_on_a_real_forward(tag):
    """The fast meta-device path (cached shapes, shape rules) counts what FlopCounterMode counts on a real forward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from rbench.worker.metadevice import fvcore_formulas

    size = (3, 160, 160)
    # FlopCounterMode with fvcore's norm/pool formulas, as the benchmark tables count
    flops = FlopCounterMode(display=False, custom_mapping=fvcore_formulas())
    # the math kernel shows attention as matmuls, as the meta device does (the fused CPU kernel
    # has no FLOP formula)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), flops:
        timm.create_model(tag).eval()(torch.randn(1, *size))
    gmacs, _ = meta_counts(tag, [size]).macs[size]
    assert gmacs == pytest.approx(flops.get_total_flops() / 2 / 1e9, rel=1e-12)


def test_inplace_ops_are_read_from_the_schema_as_torch_tags_them():
    """An in-place op (writes its first argument, returns it) is found from its schema, so the
    meta device works on a torch without `torch.Tag.inplace` (before 2.12): every op that torch
    tags in-place is one, and the few others are writes of values only (copy_, index_put_)."""
    from rbench.worker.metadevice import _writes_first_argument

    if not hasattr(torch.Tag, "inplace"):
        pytest.skip("this torch has no inplace tag to compare with")
    aten = torch.ops.aten
    tagged, found = set(), set()
    for name in dir(aten):
        packet = getattr(aten, name)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        for overload in packet.overloads():
            op = getattr(packet, overload)
            returns = op._schema.returns
            if torch.Tag.inplace in op.tags and len(returns) == 1:
                tagged.add(op)
            if _writes_first_argument(op):
                found.add(op)
    assert len(tagged) > 100 and tagged <= found
    extra = {op.overloadpacket.__name__ for op in found - tagged}
    assert extra <= {"copy_", "index_put_", "_index_put_impl_", "shallow_copy_data_", "mul_"}, extra


def test_meta_counts_work_without_the_inplace_tag(monkeypatch):
    """torch 2.11 (the GPU machine's) has no `torch.Tag.inplace`: the counts are the same without it."""
    from rbench.worker import metadevice

    expected = metadevice.count_forward(metadevice.meta_model("test_vit"), (3, 160, 160))
    tags = types.SimpleNamespace(**{t: getattr(torch.Tag, t) for t in dir(torch.Tag)
                                    if not t.startswith("_") and t != "inplace"})
    monkeypatch.setattr(metadevice, "torch", types.SimpleNamespace(**{**vars(torch), "Tag": tags}))
    monkeypatch.setattr(metadevice.MetaInit, "skippable", {})  # class caches filled with the real tags
    monkeypatch.setattr(metadevice.OpCounter, "kinds", {})
    monkeypatch.setattr(metadevice.OpCounter, "cache", {})
    assert metadevice.count_forward(metadevice.meta_model("test_vit"), (3, 160, 160)) == expected


def _meta(*shape):
    return torch.empty(*shape, device="meta")


@pytest.mark.parametrize(("op", "args"), [
    (torch.ops.aten.native_layer_norm.default, (_meta(2, 7, 16), [16], _meta(16), _meta(16), 1e-5)),
    (torch.ops.aten.native_batch_norm.default, (_meta(2, 8, 5, 5), _meta(8), _meta(8), _meta(8), _meta(8), False, 0.1, 1e-5)),
    (torch.ops.aten._native_batch_norm_legit_no_training.default, (_meta(2, 8, 5, 5), _meta(8), _meta(8), _meta(8), _meta(8), 0.1, 1e-5)),
    (torch.ops.aten.native_group_norm.default, (_meta(2, 8, 5, 5), _meta(8), _meta(8), 2, 8, 25, 4, 1e-5)),
    (torch.ops.aten._softmax.default, (_meta(2, 3, 9), -1, False)),
    (torch.ops.aten._safe_softmax.default, (_meta(2, 3, 9), -1)),
    (torch.ops.aten.hardswish.default, (_meta(2, 3, 9),)),
    (torch.ops.aten.hardsigmoid.default, (_meta(2, 3, 9),)),
    (torch.ops.aten.addmm.default, (_meta(5), _meta(3, 4), _meta(4, 5))),
    (torch.ops.aten.add.Tensor, (_meta(2, 1, 4), _meta(3, 1))),
    (torch.ops.aten.gelu.default, (_meta(2, 3),)),
    (torch.ops.aten.gt.Scalar, (_meta(2, 3), 0.5)),
])
def test_fast_shapes_match_torch(op, args):
    assert op in SHAPE_RULES or torch.Tag.pointwise in op.tags
    expected = op(*args)
    with OpCounter():
        fast = op(*args)
    pairs = zip(fast, expected) if isinstance(expected, tuple) else [(fast, expected)]
    for a, b in pairs:
        assert (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)


@pytest.fixture
def broken_models():
    """Two registered timm architectures, each with one pretrained tag: `rbench_unbuildable`
    raises in its constructor, `rbench_unrunnable` builds but its forward raises."""
    from timm.models import generate_default_cfgs, register_model
    from timm.models._registry import _clear_model_entries, _model_entrypoints

    class Unrunnable(torch.nn.Module):
        def __init__(self, num_classes=1000, **kwargs):
            super().__init__()
            self.fc = torch.nn.Linear(8, num_classes)

        def forward(self, x):
            raise ValueError("needs real data")

    def rbench_unbuildable(pretrained=False, **kwargs):
        raise RuntimeError("no meta support")

    def rbench_unrunnable(pretrained=False, **kwargs):
        return Unrunnable(**kwargs)

    module = types.ModuleType("rbench_test_broken_models")
    cfg = {"hf_hub_id": "timm/", "num_classes": 1000, "input_size": (3, 160, 160), "license": "apache-2.0"}
    module.default_cfgs = generate_default_cfgs({"rbench_unbuildable.r160_in1k": cfg, "rbench_unrunnable.r160_in1k": cfg})
    sys.modules[module.__name__] = module
    for fn in (rbench_unbuildable, rbench_unrunnable):
        fn.__module__ = module.__name__
        register_model(fn)
    yield ["rbench_unbuildable.r160_in1k", "rbench_unrunnable.r160_in1k"]
    for name in ("rbench_unbuildable", "rbench_unrunnable"):
        _clear_model_entries(name)
        _model_entrypoints.pop(name, None)
    del sys.modules[module.__name__]


def test_model_that_fails_on_meta_is_an_error_row(broken_models):
    unbuildable, unrunnable, fine = metadata_rows([*broken_models, "test_vit.r160_in1k"], workers=0)
    # what the config and the name rules know is there; the counts are empty, with the reason
    assert unbuildable["model"] == "rbench_unbuildable.r160_in1k"
    assert (unbuildable["pretrain"], unbuildable["technique"], unbuildable["num_classes"]) == ("in1k", "supervised", 1000)
    assert unbuildable["test_img_size"] == 160 and unbuildable["license"] == "apache-2.0"
    assert unbuildable["param_count"] is None and unbuildable["gmacs"] is None
    assert unbuildable["note"] == "cannot build on the meta device: RuntimeError: no meta support"
    # a model that builds but cannot run still has its parameters
    assert unrunnable["param_count"] == pytest.approx((8 * 1000 + 1000) / 1e6)
    assert unrunnable["gmacs"] is None
    assert unrunnable["note"] == "cannot run on the meta device at 3x160x160: ValueError: needs real data"
    assert fine["gmacs"] and fine["note"] is None  # the others are not disturbed


def test_worker_processes_give_the_same_rows(monkeypatch):
    tags = ["test_vit.r160_in1k", "test_vit2.r160_in1k", "test_byobnet.r160_in1k"]
    here = metadata_rows(tags, workers=0)
    monkeypatch.setattr(metadata, "BUILDS_PER_PROCESS", 1)  # small enough to start processes
    assert metadata_rows(tags, workers=2) == here
    assert [row["model"] for row in here] == tags and all(row["gmacs"] for row in here)


def test_tags_of_one_architecture_and_config_share_one_build(monkeypatch):
    built = []
    monkeypatch.setattr(metadata, "_count", lambda job: built.append(job) or meta_counts(*job))
    rows = metadata_rows(["resnet50.a1_in1k", "resnet50.a2_in1k", "resnet50.fb_ssl_yfcc100m_ft_in1k",
                          "resnet50.tv_in1k"], workers=0)
    # one build, a forward pass at each eval size (a1/a2 test at 288, the others at 224)
    assert built == [("resnet50.a1_in1k", ((3, 224, 224), (3, 288, 288)))]
    a1, a2, ssl, tv = (row["gmacs"] for row in rows)
    assert a1 == a2 > ssl == tv


MODEL_METADATA_HEADER = ("model,architecture,pretrain,pretrain_data,finetune_chain,technique,num_classes,"
                         "train_img_size,test_img_size,crop_pct,test_crop_pct,interpolation,mean,std,param_count,"
                         "gmacs,macts,license,paper,origin_url,hub_id,recipe,optimizer,loss,epochs,lr_schedule,"
                         "augmentation,mixup,cutmix,label_smoothing,drop_path,random_erasing,ema,repeated_aug,"
                         "recipe_source,note")


def test_metadata_command_writes_both_files_and_lists_unknown_tags(tmp_path):
    result = CliRunner().invoke(main, ["metadata", "-m", "test_vit*,gemma4_vit_167m.gemma4_e4b_it",
                                       "--out", str(tmp_path), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert ",".join(MODEL_METADATA_COLUMNS) == MODEL_METADATA_HEADER
    lines = (tmp_path / "model_metadata.csv").read_text().splitlines()
    assert lines[0] == MODEL_METADATA_HEADER
    rows = {row["model"]: row for row in csv.DictReader(lines)}
    assert sorted(rows) == ["gemma4_vit_167m.gemma4_e4b_it", "test_vit.r160_in1k", "test_vit2.r160_in1k",
                            "test_vit3.r160_in1k"]
    vit = rows["test_vit.r160_in1k"]
    assert vit["pretrain"] == "in1k" and vit["finetune_chain"] == "in1k" and vit["technique"] == "supervised"
    assert vit["num_classes"] == "1000" and vit["test_img_size"] == "160" and vit["crop_pct"] == "0.950"
    assert vit["mean"] == "0.5,0.5,0.5" and vit["hub_id"] == "timm/test_vit.r160_in1k"
    assert float(vit["param_count"]) > 0 and float(vit["gmacs"]) >= 0 and vit["note"] == ""
    # only tags with a 1000-class head go to the two-column file (the gemma4 tag has none)
    assert (tmp_path / "model_metadata-in1k.csv").read_text().splitlines() == [
        "model,pretrain", "test_vit.r160_in1k,in1k", "test_vit2.r160_in1k,in1k", "test_vit3.r160_in1k,in1k"]
    assert "1 tag(s) with unknown pretraining" in result.output
    assert "gemma4_vit_167m.gemma4_e4b_it" in result.output.split("unknown pretraining")[1]


def test_run_bench_metadata_writes_both_files(tmp_path):
    result = CliRunner().invoke(main, ["run", "-m", "test_byobnet", "--bench", "metadata", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["model_metadata-in1k.csv", "model_metadata.csv"]
    assert (tmp_path / "model_metadata.csv").read_text().splitlines()[0] == MODEL_METADATA_HEADER
    assert (tmp_path / "model_metadata-in1k.csv").read_text().splitlines() == ["model,pretrain", "test_byobnet.r160_in1k,in1k"]
