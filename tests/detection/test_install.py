"""The Detectron2 install step and the compatibility shim (detection/compat.py)."""

import importlib
import io
import subprocess
import sys
import tarfile

import pytest
import torch

from detection import compat

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
install = importlib.import_module("install_detectron2")


def test_apply_is_idempotent_and_import_time_safe():
    assert compat.apply() == []  # `import detection` applied everything already
    from PIL import Image

    assert Image.LINEAR == Image.BILINEAR
    from detectron2.data.transforms import ExtentTransform  # the v0.6 import-time Pillow 10 failure

    assert ExtentTransform((0, 0, 4, 4), (2, 2)).interp == Image.BILINEAR


def test_compiled_ops_are_either_real_or_a_clear_error():
    from detectron2 import _C

    if compat.has_compiled_ops():  # detectron2 built from source: the shim must not touch it
        assert not getattr(_C, "KEEPAUGMENT_STANDIN", False)
        return
    with pytest.raises(compat.MissingCompiledOp, match="deform_conv_forward .* --mode source"):
        _C.deform_conv_forward
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    boxes = RotatedBoxes(torch.tensor([[5.0, 5.0, 2.0, 2.0, 0.0]]))
    with pytest.raises(compat.MissingCompiledOp, match="box_iou_rotated"):
        pairwise_iou_rotated(boxes, boxes)
    from detectron2.utils.collect_env import collect_env_info

    assert compat.STANDIN_VERSION in collect_env_info()  # default_setup logs this: it must not raise


def test_detectron2_without_detection_shows_what_the_shim_fixes():
    """Without `import detection` first, a Python-only detectron2 on Pillow >= 10 fails where compat.py
    says; with it, the data and evaluation packages import."""
    probe = ("import PIL.Image as I, importlib.util as u; "
             "print(hasattr(I, 'LINEAR'), u.find_spec('detectron2._C') is None)")
    has_linear, no_ops = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                        check=True).stdout.split()
    bare = subprocess.run([sys.executable, "-c", "import detectron2.data, detectron2.evaluation"],
                          capture_output=True, text=True)
    if has_linear == "False":
        assert bare.returncode != 0 and "LINEAR" in bare.stderr
    elif no_ops == "True":
        assert bare.returncode != 0 and "_C" in bare.stderr
    shimmed = subprocess.run([sys.executable, "-c", "import detection, detectron2.data, detectron2.evaluation"],
                             capture_output=True, text=True)
    assert shimmed.returncode == 0, shimmed.stderr


def fake_sdist(tmp_path, with_configs=True):
    path = tmp_path / f"{install.SDIST_NAME}-{install.SDIST_VERSION}.tar.gz"
    top = f"{install.SDIST_NAME}-{install.SDIST_VERSION}"
    files = {f"{top}/setup.py": b"raise SystemExit('needs the C++ sources')\n",
             f"{top}/detectron2/__init__.py": b"__version__ = '0.6'\n",
             f"{top}/detectron2/model_zoo/__init__.py": b""}
    if with_configs:
        files[f"{top}/detectron2/model_zoo/configs/Base-RCNN-FPN.yaml"] = b"MODEL: {}\n"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_fallback_stages_the_python_package_with_its_configs(tmp_path):
    project = install.stage_python_package(fake_sdist(tmp_path), tmp_path / "work")
    assert (project / "detectron2" / "model_zoo" / "configs" / "Base-RCNN-FPN.yaml").is_file()
    meta = (project / "pyproject.toml").read_text()
    assert 'name = "detectron2"' in meta and 'version = "0.6+pyonly"' in meta and '"pycocotools>=2.0.2"' in meta
    assert '"detectron2.model_zoo" = ["configs/*.yaml", "configs/**/*.yaml"]' in meta
    assert not (project / "setup.py").exists()  # the sdist's setup.py (C++ build) is not used


def test_fallback_refuses_an_sdist_without_configs(tmp_path):
    with pytest.raises(RuntimeError, match="model_zoo/configs"):
        install.stage_python_package(fake_sdist(tmp_path, with_configs=False), tmp_path / "work")


def test_installer_is_a_no_op_when_detectron2_is_there(capsys):
    assert install.main([]) == 0
    assert "already installed" in capsys.readouterr().out


def test_installed_detectron2_carries_the_model_zoo_configs():
    from detection.config import model_zoo_config_dir

    for name in ("faster_rcnn_R_50_C4_3x", "faster_rcnn_R_101_FPN_3x", "retinanet_R_101_FPN_3x"):
        assert (model_zoo_config_dir() / "COCO-Detection" / f"{name}.yaml").is_file()
