"""Each shipped config builds, loads its backbone, trains 2 iterations and evaluates on COCO-tiny."""

import math

import pytest
import timm
import torch
from detectron2.modeling import BACKBONE_REGISTRY

from detection.config import CONFIG_DIR, load_config
from detection.engine import Trainer

from .conftest import SMALL

RESNET_CONFIGS = ["faster_rcnn_R_50_C4_3x.yaml", "faster_rcnn_R_101_C4_3x.yaml", "faster_rcnn_R_50_FPN_3x.yaml",
                  "faster_rcnn_R_101_FPN_3x.yaml", "retinanet_R_50_FPN_3x.yaml", "retinanet_R_101_FPN_3x.yaml"]


def test_the_six_configs_are_shipped_with_the_3x_recipe():
    assert sorted(p.name for p in CONFIG_DIR.glob("*_3x.yaml")) == sorted(RESNET_CONFIGS)
    for name in RESNET_CONFIGS:
        cfg = load_config(name)
        depth = 101 if "R_101" in name else 50
        assert cfg.MODEL.RESNETS.DEPTH == depth and cfg.MODEL.WEIGHTS == f"weights/keepcutmix_R_{depth}.pkl"
        assert cfg.SOLVER.STEPS == (210000, 250000) and cfg.SOLVER.MAX_ITER == 270000
        assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.REFERENCE_WORLD_SIZE == 8
        assert cfg.SOLVER.BASE_LR == (0.01 if name.startswith("retinanet") else 0.02)
        assert cfg.INPUT.FORMAT == "RGB" and not cfg.MODEL.RESNETS.STRIDE_IN_1X1
        assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.28, 103.53] and cfg.MODEL.PIXEL_STD == [58.395, 57.12, 57.375]
        assert cfg.MODEL.RESNETS.NORM == "FrozenBN" and cfg.MODEL.MASK_ON is False
        arch = "RetinaNet" if name.startswith("retinanet") else "GeneralizedRCNN"
        assert cfg.MODEL.META_ARCHITECTURE == arch
        if arch == "GeneralizedRCNN":
            assert cfg.MODEL.ROI_HEADS.NAME == ("Res5ROIHeads" if "C4" in name else "StandardROIHeads")


def test_reference_world_size_scales_the_schedule_for_fewer_gpus():
    cfg = load_config("faster_rcnn_R_50_FPN_3x.yaml")
    scaled = Trainer.auto_scale_workers(cfg, 2)  # 2 GPUs instead of the recipe's 8
    assert scaled.SOLVER.IMS_PER_BATCH == 4 and scaled.SOLVER.BASE_LR == pytest.approx(0.005)
    assert scaled.SOLVER.MAX_ITER == 1080000 and scaled.SOLVER.STEPS == (840000, 1000000)


def train_and_evaluate(cfg):
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def check_box_metrics(results):
    box = results["bbox"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(box)
    assert math.isfinite(box["AP"]) and 0.0 <= box["AP"] <= 100.0


@pytest.mark.slow
@pytest.mark.parametrize("name", RESNET_CONFIGS)
def test_config_trains_two_iterations_and_evaluates(name, converted, small_val, tmp_path):
    depth = 101 if "R_101" in name else 50
    cfg = load_config(name, [*SMALL, f"MODEL.WEIGHTS={converted[depth]}", "SOLVER.MAX_ITER=2",
                             f"DATASETS.TEST=('{small_val}',)", f"OUTPUT_DIR={tmp_path}"])
    trainer = train_and_evaluate(cfg)
    assert trainer.iter == 2 and (tmp_path / "model_final.pth").is_file()
    check_box_metrics(trainer._last_eval_results)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["timm/faster_rcnn_timm_FPN_3x.yaml", "timm/retinanet_timm_FPN_3x.yaml"])
def test_timm_backbone_configs_train_and_evaluate(name, small_val, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0")  # not a ResNet: only the timm path can detect with it
    torch.save(model.state_dict(), tmp_path / "effnet.pth")
    cfg = load_config(name, [*SMALL, "MODEL.TIMM.NAME=efficientnet_b0", f"MODEL.TIMM.CHECKPOINT={tmp_path}/effnet.pth",
                             "SOLVER.MAX_ITER=2", f"DATASETS.TEST=('{small_val}',)", f"OUTPUT_DIR={tmp_path}"])
    trainer = train_and_evaluate(cfg)
    body = trainer.model.backbone.bottom_up.body
    assert torch.equal(body.conv_stem.weight, model.conv_stem.weight)  # frozen, loaded from the checkpoint
    check_box_metrics(trainer._last_eval_results)


def test_timm_backbones_are_registered_on_import():
    for name in ("build_timm_backbone", "build_timm_fpn_backbone", "build_timm_retinanet_fpn_backbone"):
        assert BACKBONE_REGISTRY.get(name) is not None
