"""The training side's numbers did not change with the engine refactoring: fixed tiny runs of every trainer
(classification Cutout, KeepCutout low-res + early head, AutoAugment + paste + Cutout with clipping, UDA with
KeepRandAugment, re-ID with selective erasing) reproduce, bit for bit, the final checkpoint tensors and the
last metrics row recorded on the code before it (commit 65d03d0).

The numbers were recorded on x86 hosts whose best instruction set was AVX2; a host with AVX-512 rounds
convolutions and vectorised reductions differently. So the runs go to a subprocess with PyTorch's and oneDNN's
dispatch capped at AVX2 (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``), which any x86-64 host with AVX2
reproduces bit for bit."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from . import fingerprints
from .shared_data import extract_once

RECORDED = json.loads((Path(__file__).parent / "fingerprints_65d03d0.json").read_text())
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    """Every run's fingerprint from this working tree, computed once in a subprocess on the AVX2 paths."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the fingerprints were recorded on x86-64 AVX2 code paths; this host is {platform.machine()}")
    names = list(fingerprints.RUNS)
    try:
        assert extract_once("market1501-mini.tar.gz", "keepaug-market-mini") == fingerprints.MINI
    except pytest.skip.Exception:  # no re-ID sample here: the re-ID run is skipped, the others still run
        names = [n for n in names if fingerprints.RUNS[n][0] != "reid"]
    out = tmp_path_factory.mktemp("fingerprints") / "fingerprints.json"
    done = subprocess.run([sys.executable, "-m", "tests.fingerprints", str(out), *names], cwd=fingerprints.ROOT,
                          env={**os.environ, **AVX2}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", list(fingerprints.RUNS))
def test_run_reproduces_the_recorded_fingerprint(name, measured):
    if name not in measured:
        pytest.skip("the re-ID run needs the shared market1501-mini archive")
    got = measured[name]
    assert got["metrics"] == RECORDED[name]["metrics"]
    assert got["digest"] == RECORDED[name]["digest"], "the final weights / optimizer state changed"


def test_digest_sees_a_changed_weight():
    import torch

    ckpt = {"model": {"w": torch.zeros(3)}, "optimizer": {"state": {0: {"step": torch.tensor(1.0)}}}}
    before = fingerprints.tensors_digest(ckpt)
    ckpt["model"]["w"][1] = 1e-30
    assert fingerprints.tensors_digest(ckpt) != before
