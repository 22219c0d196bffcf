"""tools/train_det.py: train, resume, evaluate, and the errors a user meets first."""

import json
import subprocess
import sys

import pytest
import torch
import torchvision

from core.engine.config import ConfigError
from detection.config import load_config
from detection.convert import save_detectron2_pkl, torchvision_to_detectron2
from detection.data import DatasetError, check_datasets, register_coco_json
from detection.weights import WeightsError, load_weights

from .conftest import ROOT, SMALL

TOOL = ROOT / "tools" / "train_det.py"


def datasets(coco, val_json=None):
    """--dataset flags for COCO-tiny (``val_json``: another instances JSON of its val images)."""
    val_json = val_json or coco / "annotations/instances_val2017.json"
    return ["--dataset", "tiny_train", str(coco / "annotations/instances_train2017.json"), str(coco / "train2017"),
            "--dataset", "tiny_val", str(val_json), str(coco / "val2017")]


def train_det(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_train_resume_and_eval_only(coco_tiny, val_subset, converted, tmp_path):
    flags = ["--config-file", "retinanet_R_50_FPN_3x.yaml", *datasets(coco_tiny, val_subset)]
    common = [*SMALL, f"MODEL.WEIGHTS={converted[50]}", f"OUTPUT_DIR={tmp_path}"]  # overrides come last
    first = train_det(*flags, *common, "SOLVER.MAX_ITER=2", "SOLVER.CHECKPOINT_PERIOD=2", 'DATASETS.TEST=()')
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "model_final.pth").is_file()
    loaded = f"loaded {converted[50]}: "  # detection.weights' INFO line: configured like detectron2's own
    assert loaded in first.stderr + first.stdout and loaded in (tmp_path / "log.txt").read_text()
    resumed = train_det(*flags, "--resume", *common, "SOLVER.MAX_ITER=3", 'DATASETS.TEST=()')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Starting training from iteration 2" in resumed.stderr + resumed.stdout
    assert "resumed from " in resumed.stderr + resumed.stdout  # our line, not only Detectron2's
    state = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert state["iteration"] == 2  # the resumed run did iteration 2 only and saved again
    evaluated = train_det(*flags, "--eval-only", *common, f"MODEL.WEIGHTS={tmp_path / 'model_final.pth'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}  # one test set: Detectron2 returns its results


def test_corrupt_weights_file(tmp_path, tiny_datasets):
    bad = tmp_path / "corrupt.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    cfg = load_config("faster_rcnn_R_50_FPN_3x.yaml", [*SMALL, f"MODEL.WEIGHTS={bad}"])
    from detectron2.modeling import build_model

    with pytest.raises(WeightsError, match="corrupt.pkl: cannot load it"):
        load_weights(build_model(cfg), cfg)
    out = train_det("--config-file", "faster_rcnn_R_50_FPN_3x.yaml", "--dataset", "tiny_train",
                    *tiny_paths("tiny_train"), "--dataset", "tiny_val", *tiny_paths("tiny_val"),
                    *SMALL, f"MODEL.WEIGHTS={bad}", f"OUTPUT_DIR={tmp_path}")
    assert out.returncode == 2 and "MODEL.WEIGHTS=" in out.stderr and "cannot load it" in out.stderr


def tiny_paths(name):
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    return [meta.json_file, meta.image_root]


def test_missing_weights_file_and_depth_mismatch(tmp_path):
    from detectron2.modeling import build_model

    cfg = load_config("faster_rcnn_R_101_FPN_3x.yaml", [*SMALL, f"MODEL.WEIGHTS={tmp_path}/absent.pkl"])
    model = build_model(cfg)
    with pytest.raises(WeightsError, match="absent.pkl: file not found"):
        load_weights(model, cfg)
    weights, report = torchvision_to_detectron2(torchvision.models.resnet50().state_dict())
    save_detectron2_pkl(weights, tmp_path / "r50.pkl", report)
    with pytest.raises(WeightsError, match="holds a ResNet-50 .* MODEL.RESNETS.DEPTH is 101"):
        load_weights(model, cfg, str(tmp_path / "r50.pkl"))


def test_backbone_weights_that_do_not_match_are_an_error(tmp_path):
    from detectron2.modeling import build_model

    weights, report = torchvision_to_detectron2(torchvision.models.resnet50().state_dict())
    weights = {k: v for k, v in weights.items() if not k.startswith("res4.")}
    save_detectron2_pkl(weights, tmp_path / "partial.pkl", {})
    cfg = load_config("faster_rcnn_R_50_C4_3x.yaml", [*SMALL, f"MODEL.WEIGHTS={tmp_path}/partial.pkl"])
    with pytest.raises(WeightsError, match="backbone weights unloaded"):
        load_weights(build_model(cfg), cfg)


def test_missing_annotation_file(tmp_path, coco_tiny):
    with pytest.raises(DatasetError, match="annotation file not found: .*nope.json"):
        register_coco_json("nope", tmp_path / "nope.json", coco_tiny / "val2017")
    out = train_det("--config-file", "faster_rcnn_R_50_FPN_3x.yaml", "--dataset", "x", str(tmp_path / "nope.json"),
                    str(coco_tiny / "val2017"), "MODEL.DEVICE=cpu")
    assert out.returncode == 2 and "annotation file not found" in out.stderr


def test_builtin_coco_under_missing_root_names_the_variable(tmp_path):
    code = ("import detection, os; from detection.data import check_datasets; check_datasets(['coco_2017_val'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "DETECTRON2_DATASETS": str(tmp_path)})
    assert out.returncode != 0 and "DETECTRON2_DATASETS" in out.stderr and str(tmp_path) in out.stderr


def test_unregistered_dataset_name():
    with pytest.raises(DatasetError, match="'my_set' is not registered: pass --dataset my_set"):
        check_datasets(["my_set"])


def test_unknown_config_key_in_file_and_override(tmp_path):
    bad = tmp_path / "bad.yaml"
    base = ROOT / "detection" / "configs" / "faster_rcnn_R_50_FPN_3x.yaml"
    bad.write_text(f'_BASE_: "{base}"\nMODEL:\n  RESNETZ:\n    DEPTH: 50\n')
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key: MODEL.RESNETZ"):
        load_config(bad)
    with pytest.raises(ConfigError, match="override SOLVER.MAXITER=3: unknown config key: SOLVER.MAXITER"):
        load_config("faster_rcnn_R_50_FPN_3x.yaml", ["SOLVER.MAXITER=3"])
    with pytest.raises(ConfigError, match="--resume goes before the KEY=value overrides"):
        load_config("faster_rcnn_R_50_FPN_3x.yaml", ["SOLVER.MAX_ITER=3", "--resume"])
    with pytest.raises(ConfigError, match="has no value"):
        load_config("faster_rcnn_R_50_FPN_3x.yaml", ["SOLVER.MAX_ITER"])
    out = train_det("--config-file", "faster_rcnn_R_50_FPN_3x.yaml", "MODEL.DEVICE=cpu", "SOLVER.MAXITER=3")
    assert out.returncode == 2 and "SOLVER.MAXITER" in out.stderr


def test_overrides_accept_both_forms():
    cfg = load_config("faster_rcnn_R_50_FPN_3x.yaml", ["SOLVER.MAX_ITER=7", "SOLVER.BASE_LR", "0.5",
                                                      'DATASETS.TRAIN=("a", "b")'])
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.SOLVER.BASE_LR == 0.5 and cfg.DATASETS.TRAIN == ("a", "b")


def test_more_gpus_than_visible_is_a_clear_error():
    if torch.cuda.device_count() >= 64:
        pytest.skip("a machine with 64 GPUs")
    out = train_det("--config-file", "faster_rcnn_R_50_FPN_3x.yaml", "--num-gpus", "64")
    assert out.returncode == 2 and "--num-gpus 64 but" in out.stderr


def test_evaluating_a_timm_detector_needs_only_its_full_checkpoint(tmp_path, tiny_datasets):
    """--eval-only / --resume take every weight from the detector checkpoint: MODEL.TIMM.CHECKPOINT (the
    classification backbone it started from) need not exist on the evaluating machine."""
    from tools import train_det as train_det_module
    (tmp_path / "model_final.pth").write_bytes(b"")
    args = train_det_module.build_parser().parse_args([
        "--config-file", "timm/faster_rcnn_timm_FPN_3x.yaml", "--eval-only", "MODEL.DEVICE=cpu",
        f"MODEL.WEIGHTS={tmp_path / 'model_final.pth'}", 'DATASETS.TEST=("tiny_val",)', 'DATASETS.TRAIN=()'])
    assert train_det_module.prepare(args).MODEL.TIMM.CHECKPOINT == ""
    args = train_det_module.build_parser().parse_args([
        "--config-file", "timm/faster_rcnn_timm_FPN_3x.yaml", "MODEL.DEVICE=cpu", 'DATASETS.TEST=("tiny_val",)',
        'DATASETS.TRAIN=("tiny_train",)', f"MODEL.TIMM.CHECKPOINT={tmp_path / 'backbone.pth'}"])
    assert train_det_module.prepare(args).MODEL.TIMM.CHECKPOINT.endswith("backbone.pth")  # training: kept
