"""Any timm model (``features_only``) as a Detectron2 backbone, plain or with an FPN.

Registered in Detectron2's ``BACKBONE_REGISTRY`` when ``detection`` is imported:

- ``build_timm_backbone``: the timm feature extractor; its feature maps are named by stride
  (``res2`` = 1/4, ``res3`` = 1/8, ``res4`` = 1/16, ``res5`` = 1/32; the last map of timm's
  ``feature_info`` at each stride), so model-zoo heads and FPN configs apply unchanged.
- ``build_timm_fpn_backbone``: + FPN with P6 by max-pool (Faster R-CNN, like ``build_resnet_fpn_backbone``).
- ``build_timm_retinanet_fpn_backbone``: + FPN with P6/P7 from res5 (RetinaNet).

Keys: ``MODEL.TIMM.*``, documented in ``config.add_keepaugment_config``.
"""

from __future__ import annotations

import logging

import timm
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7
from timm.layers import freeze_batch_norm_2d
from torch import nn

from .convert import ConversionError, read_weights
from .weights import WeightsError

logger = logging.getLogger(__name__)
STRIDES = {4: "res2", 8: "res3", 16: "res4", 32: "res5"}


def full_state_dict(name: str, path: str, in_chans: int = 3, trust_pickle: bool = False) -> dict:
    """The weights of ``path`` as a complete state dict of timm model ``name`` (its classifier may be
    missing or of any size: it is not used). A missing backbone weight is a :class:`WeightsError`."""
    try:
        state, kind = read_weights(path, trust_pickle, trust_hint="MODEL.TIMM.TRUST_PICKLE=True")
    except (FileNotFoundError, ConversionError) as err:
        raise WeightsError(f"MODEL.TIMM.CHECKPOINT: {err}") from err
    model = timm.create_model(name, pretrained=False, in_chans=in_chans)
    classifier = model.pretrained_cfg.get("classifier") or ()
    head = tuple(c + "." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    result = model.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(head)]
    if missing:
        raise WeightsError(f"MODEL.TIMM.CHECKPOINT={path} ({kind}) lacks {len(missing)} weights of timm's {name}, "
                           f"e.g. {missing[:5]}: is it a checkpoint of MODEL.TIMM.NAME?")
    logger.info("MODEL.TIMM.CHECKPOINT %s (%s): not used by %s: %s", path, kind, name, result.unexpected_keys)
    return model.state_dict()


class TimmBackbone(Backbone):
    def __init__(self, name: str, out_features=("res2", "res3", "res4", "res5"), *, in_chans: int = 3,
                 pretrained: bool = False, checkpoint: str = "", freeze_at: int = 0, norm: str = "FrozenBN",
                 trust_pickle: bool = False):
        super().__init__()
        # A checkpoint is checked against the whole model, then handed to timm, which loads it before
        # wrapping the model for features_only (wrappers may rename modules, e.g. stages.0 -> stages_0).
        weights = dict(pretrained=pretrained)
        if checkpoint:
            state = full_state_dict(name, checkpoint, in_chans, trust_pickle)
            weights = dict(pretrained=True, pretrained_cfg_overlay=dict(state_dict=state))
        try:
            self.body = timm.create_model(name, features_only=True, in_chans=in_chans, **weights)
        except Exception as err:  # noqa: BLE001 - unknown name, no features_only support, offline hub
            raise ValueError(f"MODEL.TIMM.NAME={name!r}: cannot build a timm features_only model ({err})") from err
        info = self.body.feature_info
        by_name = {STRIDES[r]: i for i, r in enumerate(info.reduction()) if r in STRIDES}  # last one per stride
        missing = [f for f in out_features if f not in by_name]
        if missing:
            raise ValueError(f"MODEL.TIMM.OUT_FEATURES: {missing} not produced by {name} (it has {sorted(by_name)})")
        self._index = {f: by_name[f] for f in out_features}
        self._out_features = list(out_features)
        self._out_feature_strides = {f: info.reduction()[i] for f, i in self._index.items()}
        self._out_feature_channels = {f: info.channels()[i] for f, i in self._index.items()}
        if norm == "FrozenBN":
            self.body = freeze_batch_norm_2d(self.body)
        elif norm == "SyncBN":
            self.body = nn.SyncBatchNorm.convert_sync_batchnorm(self.body)
        elif norm not in ("BN", ""):
            raise ValueError(f"MODEL.TIMM.NORM={norm!r}: expected FrozenBN, BN or SyncBN")
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> None:
        """Freeze the parameters computed before feature level ``freeze_at`` of timm's feature_info."""
        if freeze_at <= 0:
            return
        params = list(self.body.named_parameters())
        modules = self.body.feature_info.module_name()
        stop = len(params)
        if freeze_at < len(modules):
            boundary = modules[freeze_at]
            prefixes = (boundary + ".", boundary.replace(".", "_") + ".", "model." + boundary + ".")
            stop = next((i for i, (n, _) in enumerate(params) if n.startswith(prefixes)), len(params))
        for _, p in params[:stop]:
            p.requires_grad_(False)

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.body(x)
        return {f: feats[i] for f, i in self._index.items()}


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    t = cfg.MODEL.TIMM
    return TimmBackbone(t.NAME, tuple(t.OUT_FEATURES), in_chans=input_shape.channels, pretrained=t.PRETRAINED,
                        checkpoint=t.CHECKPOINT, freeze_at=t.FREEZE_AT, norm=t.NORM, trust_pickle=t.TRUST_PICKLE)


def _fpn(cfg, bottom_up: Backbone, top_block: nn.Module) -> FPN:
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=top_block, fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    return _fpn(cfg, build_timm_backbone(cfg, input_shape), LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_timm_retinanet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    bottom_up = build_timm_backbone(cfg, input_shape)
    last = cfg.MODEL.FPN.IN_FEATURES[-1]
    in_channels = bottom_up.output_shape()[last].channels
    return _fpn(cfg, bottom_up, LastLevelP6P7(in_channels, cfg.MODEL.FPN.OUT_CHANNELS, in_feature=last))

