"""The Detectron2 install step and the compatibility shim (detection/compat.py)."""

import importlib
import importlib.util
import io
import subprocess
import sys
import tarfile

import pytest
import torch

from detection import compat

install = importlib.import_module("tools.install_detectron2")


def test_apply_is_idempotent_and_import_time_safe():
    assert compat.apply() == []  # `import detection` applied everything already
    from PIL import Image

    assert not compat.needs_pillow_alias()  # applied (fallback on Pillow >= 10) or never needed
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


def compiled_op_names() -> set[str]:
    """Every name detectron2's installed sources reach through ``torch.ops.detectron2`` or ``_C``."""
    import re
    from pathlib import Path

    root = Path(importlib.util.find_spec("detectron2").origin).parent
    names = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        names |= {f"torch.ops.detectron2.{n}" for n in re.findall(r"torch\.ops\.detectron2\.(\w+)", text)}
        if re.search(r"from detectron2 import _C\b|import detectron2\._C as _C\b", text):
            names |= {f"_C.{n}" for n in re.findall(r"\b_C\.(?!__)(\w+)", text)}  # not module metadata
    return names


def test_every_compiled_op_the_sources_call_is_real_or_a_clear_error():
    names = compiled_op_names()
    # the enumeration finds what v0.6 is known to call (rotated NMS through the dispatcher, the rest via _C)
    assert {"torch.ops.detectron2.nms_rotated", "_C.box_iou_rotated", "_C.deform_conv_forward",
            "_C.roi_align_rotated_forward", "_C.COCOevalAccumulate"} <= names
    if compat.has_compiled_ops():
        return
    from detectron2 import _C

    answered = {"_C.get_compiler_version", "_C.get_cuda_version", "_C.has_cuda"}  # the stand-in's collect_env answers
    for name in sorted(names - answered):
        owner = torch.ops.detectron2 if name.startswith("torch.ops.") else _C
        with pytest.raises(compat.MissingCompiledOp, match=name.split(".")[-1] + " is a compiled op"):
            getattr(owner, name.split(".")[-1])
    from detectron2.layers import nms_rotated

    boxes = torch.tensor([[5.0, 5.0, 2.0, 2.0, 0.0], [5.0, 5.0, 2.0, 2.0, 10.0]])
    with pytest.raises(compat.MissingCompiledOp, match="torch.ops.detectron2.nms_rotated .* --mode source"):
        nms_rotated(boxes, torch.tensor([0.9, 0.8]), 0.5)
    assert not hasattr(torch.ops.detectron2, "__origin__")  # TorchScript's probe still gets an AttributeError


def test_detectron2_without_detection_shows_what_the_shim_fixes():
    """Without `import detection` first, a Python-only detectron2 on Pillow >= 10 fails where compat.py
    says; with it, the data and evaluation packages import."""
    probe = ("import PIL.Image as I, importlib.util as u, pathlib; "  # without importing detection (it applies)
             "d = pathlib.Path(u.find_spec('detectron2').origin).parent; "
             "print(not hasattr(I, 'LINEAR') and 'Image.LINEAR' in (d / 'data/transforms/transform.py').read_text(), "
             "u.find_spec('detectron2._C') is not None)")
    needs_alias, has_ops = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                          check=True).stdout.split()
    bare = subprocess.run([sys.executable, "-c", "import detectron2.data, detectron2.evaluation"],
                          capture_output=True, text=True)
    if needs_alias == "True":
        assert bare.returncode != 0 and "LINEAR" in bare.stderr
    elif has_ops == "False":
        assert bare.returncode != 0 and "_C" in bare.stderr
    else:  # a source build of a current detectron2: nothing to fix
        assert bare.returncode == 0, bare.stderr
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
    assert '"detectron2.model_zoo" = ["configs/**/*.yaml", "configs/**/*.py"]' in meta
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
    assert (model_zoo_config_dir() / "common" / "coco_schedule.py").is_file()  # LazyConfig files too


@pytest.fixture
def loopback_index(tmp_path, monkeypatch):
    """A PEP 691 index on the loopback serving one file for the sdist's name (relative URL, as indexes
    give); ``serve(data, listed_sha256)`` sets what it serves."""
    import http.server
    import json
    import threading

    served = {}
    name = f"{install.SDIST_NAME}-{install.SDIST_VERSION}.tar.gz"

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path == f"/simple/{install.SDIST_NAME}/":
                entry = {"filename": name, "url": f"../../files/{name}", "hashes": {}}
                if served["listed"] is not None:
                    entry["hashes"]["sha256"] = served["listed"]
                body = json.dumps({"files": [entry]}).encode()
            elif self.path == f"/files/{name}":
                body = served["data"]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_address[1]}/simple/")

    def serve(data: bytes, listed: str | None):
        served.update(data=data, listed=listed)

    yield serve
    server.shutdown()
    server.server_close()


def test_fallback_fetch_refuses_anything_but_the_pinned_sdist(tmp_path, loopback_index):
    import hashlib

    fake = b"twenty bytes of fake"
    fake_digest = hashlib.sha256(fake).hexdigest()
    for n, listed in enumerate((None, fake_digest)):  # no listed hash, or the index vouching for the fake
        loopback_index(fake, listed)
        (tmp_path / str(n)).mkdir()
        with pytest.raises(RuntimeError, match=f"sha256 {fake_digest} is not the pinned {install.SDIST_SHA256}"):
            install.fetch_sdist(tmp_path / str(n))
        assert list((tmp_path / str(n)).iterdir()) == []  # the refused file is not left behind


def test_fallback_fetch_accepts_the_pinned_file_and_checks_the_listing_too(tmp_path, loopback_index):
    import hashlib

    sdist = fake_sdist(tmp_path).read_bytes()
    digest = hashlib.sha256(sdist).hexdigest()
    for n, listed in enumerate((digest, None)):
        loopback_index(sdist, listed)
        (tmp_path / f"ok{n}").mkdir()
        assert install.fetch_sdist(tmp_path / f"ok{n}", expected_sha256=digest).read_bytes() == sdist
    loopback_index(sdist, "0" * 64)
    (tmp_path / "bad").mkdir()
    with pytest.raises(RuntimeError, match="does not match the index"):
        install.fetch_sdist(tmp_path / "bad", expected_sha256=digest)


def test_pins_are_a_full_sha256_and_a_commit():
    assert len(install.SDIST_SHA256) == 64 and int(install.SDIST_SHA256, 16) >= 0
    assert len(install.OFFICIAL_COMMIT) == 40 and install.OFFICIAL_SOURCE.endswith("@" + install.OFFICIAL_COMMIT)


def test_index_url_follows_pip(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple/")
    assert install.index_url() == "https://mirror.example/simple"
    monkeypatch.delenv("PIP_INDEX_URL")
    assert install.index_url().startswith(("http://", "https://", "file:"))
