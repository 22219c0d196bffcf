"""The evaluation path end to end: ground truth fed back as predictions scores AP 100 (Detectron2's %)."""

import pytest
import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import Boxes, BoxMode, Instances

from detection.config import load_config
from detection.engine import Trainer

from .conftest import SMALL


class GroundTruthModel(torch.nn.Module):
    """Answers every image with its own (non-crowd) ground-truth boxes, in original image coordinates."""

    def __init__(self, dataset: str, drop_every: int = 0):
        super().__init__()
        self.truth = {d["image_id"]: d for d in DatasetCatalog.get(dataset)}
        self.drop_every = drop_every

    def forward(self, inputs):
        outputs = []
        for x in inputs:
            record = self.truth[x["image_id"]]
            annos = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
            if self.drop_every:
                annos = [a for i, a in enumerate(annos) if i % self.drop_every]
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
            inst = Instances((record["height"], record["width"]))
            inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            inst.scores = torch.ones(len(annos))
            inst.pred_classes = torch.tensor([a["category_id"] for a in annos], dtype=torch.int64)
            outputs.append({"instances": inst})
        return outputs


def evaluate(model, tmp_path):
    cfg = load_config("faster_rcnn_R_50_FPN_3x.yaml", [*SMALL, f"OUTPUT_DIR={tmp_path}"])
    evaluator = Trainer.build_evaluator(cfg, "tiny_val", output_folder=str(tmp_path))
    assert evaluator._use_fast_impl is False  # pycocotools' official COCOeval on both install paths
    return inference_on_dataset(model, build_detection_test_loader(cfg, "tiny_val"), evaluator)["bbox"]


def test_ground_truth_as_predictions_scores_ap_100(tiny_datasets, tmp_path):
    box = evaluate(GroundTruthModel("tiny_val"), tmp_path)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert box[key] == pytest.approx(100.0), key
    assert (tmp_path / "coco_instances_results.json").is_file()


def test_missing_detections_lower_ap(tiny_datasets, tmp_path):
    """The same path is not stuck at 100: dropping every third box costs recall, hence AP."""
    box = evaluate(GroundTruthModel("tiny_val", drop_every=3), tmp_path)
    assert 40.0 < box["AP"] < 90.0
