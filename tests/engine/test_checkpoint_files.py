"""core.engine.checkpoint: a file that is not a checkpoint is one line saying what it is (torch's own
message spans lines and advises weights_only=False, beside the point for a text file)."""

import argparse

import pytest
import torch

from core.engine.checkpoint import config_from_checkpoint, load_checkpoint, load_error_reason, torch_file_problem
from core.engine.config import ConfigError


def test_what_a_file_is_from_its_first_bytes(tmp_path):
    (tmp_path / "README.md").write_text("# KeepAugment\n\nSaliency-guided ...\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "binary.pt").write_bytes(bytes(range(250, 256)) * 10)
    torch.save({"a": torch.ones(3)}, tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    torch.save({"a": 1}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert torch_file_problem(tmp_path / "README.md") == "a text file, not written by torch.save"
    assert torch_file_problem(tmp_path / "empty.pt") == "an empty file (0 bytes)"
    assert "neither a zip archive nor a pickle" in torch_file_problem(tmp_path / "binary.pt")
    assert "truncated zip archive" in torch_file_problem(tmp_path / "cut.pt")
    assert torch_file_problem(tmp_path / "good.pt") is None and torch_file_problem(tmp_path / "legacy.pt") is None


@pytest.mark.parametrize("name, content, match", [
    ("README.md", b"# not a checkpoint\n", r"README.md is not a checkpoint: a text file, not written by torch.save "
                                            r"\(a training run writes <output_dir>/last.pt"),
    ("empty.pt", b"", r"empty.pt is not a checkpoint: an empty file \(0 bytes\) \("),
    ("broken.pt", b"\x80\x04garbage", r"cannot read checkpoint .*broken.pt: "),
])
def test_load_checkpoint_errors_are_one_line(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        load_checkpoint(tmp_path / name)
    assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)


def test_objects_beyond_tensors_and_a_non_dict(tmp_path):
    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt")
    with pytest.raises(ValueError, match=r"holds Python objects .*argparse.Namespace") as err:
        load_checkpoint(tmp_path / "ns.pt")
    assert "\n" not in str(err.value)
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    with pytest.raises(ConfigError, match="holds no config"):
        config_from_checkpoint(dict, tmp_path / "tensor.pt")


def test_load_error_reason_is_one_line():
    assert load_error_reason(EOFError()) == "it ends early (truncated?)"
    assert load_error_reason(RuntimeError("first line\nsecond")) == "RuntimeError: first line"
    assert load_error_reason(KeyError()) == "KeyError"
