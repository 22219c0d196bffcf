import json
from pathlib import Path

import pytest
import torch
import torchvision

import detection  # noqa: F401  (compat shims before any detectron2 import)
from detection.convert import save_detectron2_pkl, torchvision_to_detectron2
from detection.data import register_coco_json

from ..shared_data import extract_once

ROOT = Path(__file__).resolve().parents[2]

# Small images, few proposals, 2 images per batch, a gentle lr: a CPU-sized run of any config.
SMALL = ["MODEL.DEVICE=cpu", "SOLVER.REFERENCE_WORLD_SIZE=0", "SOLVER.IMS_PER_BATCH=2", "SOLVER.BASE_LR=0.001",
         "INPUT.MIN_SIZE_TRAIN=(128,)", "INPUT.MAX_SIZE_TRAIN=192", "INPUT.MIN_SIZE_TEST=128",
         "INPUT.MAX_SIZE_TEST=192", "DATALOADER.NUM_WORKERS=0", "MODEL.RPN.POST_NMS_TOPK_TEST=10",
         "MODEL.RPN.PRE_NMS_TOPK_TEST=200",
         "MODEL.RPN.PRE_NMS_TOPK_TRAIN=400", "MODEL.RPN.POST_NMS_TOPK_TRAIN=100",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=64", "MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0",
         "MODEL.RETINANET.SCORE_THRESH_TEST=0.0", "TEST.DETECTIONS_PER_IMAGE=20",
         'DATASETS.TRAIN=("tiny_train",)', 'DATASETS.TEST=("tiny_val",)']

EVAL_IMAGES = 16  # val images of the tests that only need an evaluation to run (COCO-tiny val has 80)


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    """COCO-tiny from the shared archive, extracted once per machine."""
    return extract_once("coco-tiny.tar", "keepaug-coco-tiny") / "coco-tiny"


@pytest.fixture(scope="session")
def tiny_datasets(coco_tiny):
    """``tiny_train`` / ``tiny_val`` registered in Detectron2's catalog."""
    for split in ("train", "val"):
        register_coco_json(f"tiny_{split}", coco_tiny / "annotations" / f"instances_{split}2017.json",
                           coco_tiny / f"{split}2017")
    return "tiny_train", "tiny_val"


@pytest.fixture(scope="session")
def val_subset(coco_tiny, tmp_path_factory) -> Path:
    """The first :data:`EVAL_IMAGES` images of COCO-tiny val with their boxes, as an instances JSON: enough
    for a test that checks an evaluation runs and reports finite metrics, at a fifth of its time."""
    data = json.loads((coco_tiny / "annotations" / "instances_val2017.json").read_text())
    images = data["images"][:EVAL_IMAGES]
    ids = {im["id"] for im in images}
    data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    path = tmp_path_factory.mktemp("coco") / f"instances_val2017_first{EVAL_IMAGES}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="session")
def small_val(val_subset, coco_tiny, tiny_datasets) -> str:
    """:func:`val_subset` registered as ``tiny_val_small``; returns the name."""
    register_coco_json("tiny_val_small", val_subset, coco_tiny / "val2017")
    return "tiny_val_small"


def random_resnet(depth: int, seed: int = 0) -> torch.nn.Module:
    """A torchvision ResNet with random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, f"resnet{depth}")()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.0)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Converted random torchvision ResNet-50/101 weights (plain init: trainable from them)."""
    out = {}
    for depth in (50, 101):
        torch.manual_seed(depth)
        net = getattr(torchvision.models, f"resnet{depth}")(zero_init_residual=True)  # bounded activations
        model, report = torchvision_to_detectron2(net.state_dict())
        path = tmp_path_factory.mktemp("weights") / f"R_{depth}.pkl"
        save_detectron2_pkl(model, path, report)
        out[depth] = path
    return out
