"""The training side's numbers did not change with the engine refactoring: fixed tiny runs of every trainer
(classification Cutout, KeepCutout low-res + early head, AutoAugment + paste + Cutout with clipping, UDA with
KeepRandAugment, re-ID with selective erasing) reproduce, bit for bit, the final checkpoint tensors and the
last metrics row recorded on the code before it (commit 65d03d0)."""

import json
from pathlib import Path

import pytest

from . import fingerprints
from .shared_data import extract_once

RECORDED = json.loads((Path(__file__).parent / "fingerprints_65d03d0.json").read_text())


@pytest.mark.parametrize("name", list(fingerprints.RUNS))
def test_run_reproduces_the_recorded_fingerprint(name, tmp_path):
    if fingerprints.RUNS[name][0] == "reid":
        assert extract_once("market1501-mini.tar.gz", "keepaug-market-mini") == fingerprints.MINI  # or skip
    got = fingerprints.run(name, tmp_path / name)
    assert got["metrics"] == RECORDED[name]["metrics"]
    assert got["digest"] == RECORDED[name]["digest"], "the final weights / optimizer state changed"


def test_digest_sees_a_changed_weight():
    import torch

    ckpt = {"model": {"w": torch.zeros(3)}, "optimizer": {"state": {0: {"step": torch.tensor(1.0)}}}}
    before = fingerprints.tensors_digest(ckpt)
    ckpt["model"]["w"][1] = 1e-30
    assert fingerprints.tensors_digest(ckpt) != before
