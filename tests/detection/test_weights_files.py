"""Files that are not what MODEL.WEIGHTS / tools/convert_det.py expect: one line that says what the file
is and what to do, never a detector silently trained from a random backbone (issue #20)."""

import subprocess
import sys

import pytest
import torch
import torchvision

from detection.config import load_config
from detection.weights import WeightsError, load_weights

from .conftest import ROOT, SMALL

TRAIN = ROOT / "tools" / "train_det.py"
DEPRECATIONS = ("FutureWarning", "torch.jit.script", "pkg_resources", "DeprecationWarning")


def build(config: str, weights):
    from detectron2.modeling import build_model

    cfg = load_config(config, [*SMALL, f"MODEL.WEIGHTS={weights}"])
    return build_model(cfg), cfg


@pytest.fixture(scope="module")
def r50_model():
    return build("faster_rcnn_R_50_FPN_3x.yaml", "")


def load(model_cfg, path):
    model, cfg = model_cfg
    return load_weights(model, cfg, str(path))


def test_an_unconverted_torchvision_resnet_names_the_conversion(tmp_path, r50_model):
    """The natural mistake: the export (or a torchvision / timm state dict) given straight to MODEL.WEIGHTS."""
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    with pytest.raises(WeightsError) as err:
        load(r50_model, tmp_path / "r50.pth")
    msg = str(err.value)
    assert "\n" not in msg and f"MODEL.WEIGHTS={tmp_path / 'r50.pth'}" in msg
    assert "torchvision-layout ResNet-50 state dict" in msg
    assert f"tools/convert_det.py {tmp_path / 'r50.pth'} {tmp_path / 'r50.pkl'} --depth 50" in msg


def test_a_classification_checkpoint_and_another_depth(tmp_path, r50_model):
    state = torchvision.models.resnet101().state_dict()
    torch.save({"model": state, "model_name": "resnet101", "epoch": 3}, tmp_path / "last.pt")
    with pytest.raises(WeightsError) as err:
        load(r50_model, tmp_path / "last.pt")
    msg = str(err.value)
    assert "classification training checkpoint (resnet101)" in msg and "ResNet-101" in msg
    assert "--depth 101" in msg and "MODEL.RESNETS.DEPTH=101" in msg


def test_a_non_resnet_state_dict_points_to_the_timm_backbone(tmp_path, r50_model):
    torch.save(torchvision.models.mobilenet_v2().state_dict(), tmp_path / "mbv2.pth")
    with pytest.raises(WeightsError, match=r"mbv2.pth has none of the backbone's weights.*MobileNet.*not a "
                                           r"ResNet.*timm backbone"):
        load(r50_model, tmp_path / "mbv2.pth")


def test_a_detector_checkpoint_missing_backbone_weights(tmp_path, r50_model):
    model, _ = r50_model
    partial = {k: v for k, v in model.state_dict().items() if ".res4." not in k}
    torch.save({"model": partial, "iteration": 10}, tmp_path / "model_final.pth")
    with pytest.raises(WeightsError, match=r"leaves \d+ backbone weights unloaded .*res4"):
        load(r50_model, tmp_path / "model_final.pth")
    torch.save({"model": model.state_dict(), "iteration": 10}, tmp_path / "whole.pth")
    assert load(r50_model, tmp_path / "whole.pth")["missing_backbone"] == []  # a whole one loads


def test_files_that_are_not_checkpoints(tmp_path, r50_model):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"notes.pth: cannot load it: it is a text file, not written by torch"):
        load(r50_model, tmp_path / "notes.pth")
    with pytest.raises(WeightsError, match=r"empty.pkl: cannot load it: it is an empty file"):
        load(r50_model, tmp_path / "empty.pkl")


def test_train_det_refuses_an_unconverted_file_in_one_line_and_prints_no_deprecation(tmp_path, tiny_datasets):
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    from detectron2.data import MetadataCatalog

    data = [a for name in tiny_datasets for a in ("--dataset", name, MetadataCatalog.get(name).json_file,
                                                   MetadataCatalog.get(name).image_root)]
    out = subprocess.run([sys.executable, str(TRAIN), "--config-file", "faster_rcnn_R_50_FPN_3x.yaml", *data, *SMALL,
                          f"MODEL.WEIGHTS={tmp_path / 'r50.pth'}", f"OUTPUT_DIR={tmp_path / 'out'}"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "tools/convert_det.py" in errors[0] and "Traceback" not in out.stderr
    assert not [w for w in DEPRECATIONS if w in out.stderr + out.stdout], out.stderr[-3000:]


@pytest.mark.parametrize("name, content, reason", [
    ("text.pth", b"hello, I am text\n", "it is a text file, not written by torch.save"),
    ("empty.pth", b"", "it is an empty file (0 bytes)"),
    ("cut.pth", None, "it is a damaged or truncated zip archive"),
])
def test_convert_det_says_what_is_wrong_with_the_file(tmp_path, name, content, reason, capsys):
    from tools import convert_det

    path = tmp_path / name
    if content is None:
        torch.save(torchvision.models.resnet18().state_dict(), path)
        path.write_bytes(path.read_bytes()[:4000])
    else:
        path.write_bytes(content)
    assert convert_det.main([str(path), str(tmp_path / "o.pkl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {path}: {reason}") and err.count("\n") == 1, err


def test_eval_only_json_has_null_for_metrics_cocoeval_cannot_compute(tmp_path, tiny_datasets):
    """COCOeval's -1 (no ground truth in an area range / category) is NaN in Detectron2's results: the printed
    JSON says null instead (NaN is not JSON). The evaluation itself is stubbed: this checks the printing."""
    import json

    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(tiny_datasets[1])
    code = (
        "import math, sys\n"
        "from tools import train_det\n"
        "train_det.Trainer.test = classmethod(lambda cls, cfg, model: "
        "{'bbox': {'AP': 12.5, 'APl': math.nan, 'AP-cat': -math.inf}})\n"
        "train_det.load_weights = lambda *a, **k: {}\n"
        "sys.exit(train_det.run(sys.argv[1:]))\n")
    out = subprocess.run([sys.executable, "-c", code, "--config-file", "retinanet_R_50_FPN_3x.yaml", "--eval-only",
                          "--dataset", "tiny_val", meta.json_file, meta.image_root, *SMALL, "MODEL.WEIGHTS=",
                          'DATASETS.TRAIN=()', f"OUTPUT_DIR={tmp_path}"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    block = out.stdout[out.stdout.rindex("\n{\n") + 1:] if "\n{\n" in out.stdout else out.stdout
    results = json.loads(block, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert results == {"bbox": {"AP": 12.5, "APl": None, "AP-cat": None}}
