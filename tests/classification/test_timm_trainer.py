"""The trainers take any timm model (``model.name: timm:<name>``, ``model.kwargs`` passed to
``timm.create_model``): a tiny ViT and a tiny Swin train one KeepCutout epoch on the embedded sample."""

import pytest
import torch

from classification.engine import Trainer

TINY = {
    "vit": ["model.name=timm:vit_tiny_patch16_224",
            "model.kwargs={img_size: 32, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}"],
    "swin": ["model.name=timm:swin_tiny_patch4_window7_224",
             "model.kwargs={img_size: 32, patch_size: 4, window_size: 4, embed_dim: 16, depths: [1, 1], "
             "num_heads: [1, 2]}"],
}


@pytest.mark.parametrize("family", list(TINY))
def test_timm_model_trains_a_keep_cutout_epoch(family, tiny_cfg):
    trainer = Trainer(tiny_cfg("model.kwargs={}", *TINY[family], "aug.method=keep_cutout"))  # {} clears width
    before = [p.detach().clone() for p in trainer.backbone.parameters()]
    metrics = trainer.fit()
    assert trainer.step == 2 and 0 <= metrics["val_top1"] <= 100 and metrics["train_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.backbone.parameters()))
