"""The re-ID config tree (defaults = the BoT "all tricks" Market-1501 recipe, RECIPES.md A.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.engine.sections import SaliencyConfig, TrainConfig

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
ERASING_FILLS = ("bot", "mean", "random")


@dataclass
class ModelConfig:
    depth: int = 50  # 50 | 101 (the paper's); 18 | 34 also work (512-d features)
    last_stride: int = 1
    pretrained: str = ""  # path: torchvision ImageNet checkpoint or a classification export
    torchvision_weights: str = ""  # e.g. IMAGENET1K_V1: torchvision's weights by name (needs internet)
    channels_last: bool = False
    neck_feat: str = "after"  # test feature: after | before the BNNeck (BoT's TEST.NECK_FEAT, default after)

    def validate(self) -> None:
        if self.neck_feat not in ("after", "before"):
            raise ValueError(f"model.neck_feat must be after or before, got {self.neck_feat!r}")


@dataclass
class DataConfig:
    dataset: str = "market1501"
    root: str = ""
    height: int = 256
    width: int = 128
    pad: int = 10
    p: int = 16  # identities per batch
    k: int = 4  # images per identity
    test_batch: int = 128
    workers: int = 4
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass
class AugConfig(SaliencyConfig):
    """Random erasing in the training step; the saliency keys (tau, low_res, ...) of :class:`SaliencyConfig`."""

    erasing: bool = True  # random erasing in the training step
    keep: bool = False  # selective: erase only below-threshold regions (KeepAugment)
    erasing_prob: float = 0.5
    erasing_area: list[float] = field(default_factory=lambda: [0.02, 0.4])
    erasing_ratio: list[float] = field(default_factory=lambda: [0.3, 3.33])
    erasing_fill: str = "bot"  # bot | mean | random: what the erased box is filled with (see erasing_fill_value)
    low_res: bool = True  # re-ID: 256 x 128 images, the paper's cheap variant by default

    def validate(self) -> None:
        super().validate()
        if self.erasing_fill not in ERASING_FILLS:
            raise ValueError(f"aug.erasing_fill must be one of {', '.join(ERASING_FILLS)}, got {self.erasing_fill!r}")

    def erasing_fill_value(self, mean: list[float]):
        """The :class:`core.KeepAugment` ``fill`` of ``aug.erasing_fill`` for images normalised with ``mean``
        (erasing runs after normalisation, as BoT's): ``bot`` -> the per-channel ``mean`` values themselves, in
        normalised space (BoT's quirk, the default as the baseline numbers are BoT's: reid-strong-baseline
        ``data/transforms/build.py`` builds ``RandomErasing(mean=cfg.INPUT.PIXEL_MEAN)`` after ``Normalize``, and
        ``data/transforms/transforms.py`` writes those values into the box), ``mean`` -> 0.0 (the mean colour,
        as fast-reid / timm), ``random`` -> ``"random"`` (per-pixel standard normal in normalised space: the
        paper's "random values", timm's ``mode='pixel'``)."""
        return {"bot": [float(v) for v in mean], "mean": 0.0, "random": "random"}[self.erasing_fill]


@dataclass
class OptimConfig:
    lr: float = 3.5e-4  # Adam
    weight_decay: float = 5e-4
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    label_smooth: float = 0.1
    margin: float = 0.3
    center_weight: float = 5e-4
    center_lr: float = 0.5


@dataclass
class EvalConfig:
    metric: str = "cosine"  # cosine | euclidean
    flip: bool = False  # flip test-time augmentation
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    every: int = 40  # epochs

    def validate(self) -> None:
        if self.metric not in ("cosine", "euclidean"):
            raise ValueError(f"eval.metric must be cosine or euclidean, got {self.metric!r}")
        if self.every < 1:
            raise ValueError(f"eval.every must be >= 1, got {self.every}")


@dataclass
class ReidTrainConfig(TrainConfig):
    epochs: int = 120
    output_dir: str = "runs/reid"


@dataclass
class ReidConfig:
    source: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: ReidTrainConfig = field(default_factory=ReidTrainConfig)

    # keys that may differ between a run and its resumption (besides the shared ones of core.engine.run_dir)
    RESUME_MAY_CHANGE = ("eval.",)
