"""The classification config tree (defaults = the CIFAR-10 Cutout recipe of the KeepAugment paper)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.engine.sections import SaliencyConfig, TrainConfig

from .augment import POLICY_ORDERS, AugPlan, plan

LOADERS = ("auto", "device", "workers")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")

CIFAR_MEAN = [125.3 / 255, 123.0 / 255, 113.9 / 255]  # Cutout / CutMix-PyTorch CIFAR normalisation
CIFAR_STD = [63.0 / 255, 62.1 / 255, 66.7 / 255]


@dataclass
class ModelConfig:
    name: str = "cifar_resnet18"  # a name of classification.models, or "timm:<name>"
    num_classes: int = 10
    kwargs: dict = field(default_factory=dict)  # extra constructor arguments (e.g. width, dropout)
    channels_last: bool = False  # CUDA
    compile: bool = False  # torch.compile the step's KeepAugment + forward + loss as one graph (UDA: the forward)
    compile_backend: str = "inductor"  # torch.compile backend (timm's --torchcompile): inductor | aot_eager | eager

    def validate(self) -> None:
        from .models import check_model_kwargs  # the model entry points' signatures

        check_model_kwargs(self.name, self.kwargs)
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"model.compile_backend must be one of {', '.join(COMPILE_BACKENDS)}, "
                             f"got {self.compile_backend!r}")


@dataclass
class DataConfig:
    dataset: str = "cifar10"  # cifar10 (torchvision format or ImageFolder layout) | imagefolder | sample
    root: str = ""
    download: bool = False  # torchvision download of CIFAR-10 (needs internet)
    train_split: str = "train"
    val_split: str = "test"  # "val" for ImageNet
    image_size: int = 32
    pad: int = 4  # CIFAR random crop padding
    imagenet_style: bool = False  # RandomResizedCrop + flip (+ aug.color_jitter, aug.lighting); val Resize + CenterCrop
    batch_size: int = 128  # per process
    workers: int = 4
    loader: str = "auto"  # auto | device | workers: device-resident data (CIFAR-sized) or DataLoader workers
    mean: list[float] = field(default_factory=lambda: list(CIFAR_MEAN))
    std: list[float] = field(default_factory=lambda: list(CIFAR_STD))
    skip_corrupt: bool = False  # skip unreadable images (counted per epoch) instead of stopping
    limit_train: int = 0  # N evenly spaced train images only (tests, presets); 0 = all
    limit_val: int = 0

    def validate(self) -> None:
        if self.dataset not in ("cifar10", "imagefolder", "sample"):
            raise ValueError(f"data.dataset must be cifar10, imagefolder or sample, got {self.dataset!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("data.mean and data.std need 3 values")
        if self.loader not in LOADERS:
            raise ValueError(f"data.loader must be one of {', '.join(LOADERS)}, got {self.loader!r}")


@dataclass
class AugConfig(SaliencyConfig):
    # a preset of image / region / keep_cut / keep_paste (classification.augment.PRESETS); a component
    # key set here overrides the preset's value for it ("" / null: the preset's)
    method: str = "cutout"
    image: str = ""  # none | autoaugment | randaugment: per-image policy in the data pipeline
    region: str = ""  # none | cutout | erasing | cutmix: region op on the device, after the paste
    keep_cut: bool | None = None  # selective-cut: the region op never cuts above the tau-quantile
    keep_paste: bool | None = None  # selective-paste of the clean image's important region after the policy
    length: int = 16  # Cutout length = cut / paste region side
    early_head: bool = False  # auxiliary head + loss; with a keep method, saliency from it
    early_head_at: str = ""  # hook point; "" = the model's first block
    early_head_weight: float = 0.3
    autoaugment_policy: str = "cifar10"  # cifar10 | imagenet | svhn (torchvision policies)
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    cutmix_beta: float = 1.0
    cutmix_prob: float = 1.0
    erasing_prob: float = 0.5
    erasing_area: list[float] = field(default_factory=lambda: [0.02, 0.4])
    erasing_ratio: list[float] = field(default_factory=lambda: [0.3, 1 / 0.3])
    uda_cutout: int = 16  # aug.image=uda_randaugment: side of its final Cutout (UDA cutout_numpy size=16; 0 = off)
    # where the image policy runs: after_crop (on the crop / flip: torchvision, timm, the ImageNet AutoAugment
    # code) | before_crop (on the stored image, then pad-crop / flip: AutoAugment's CIFAR data_utils.py)
    policy_order: str = "after_crop"
    cutmix_mode: str = "elem"  # elem (one lambda / box per image) | batch (one per batch: CutMix-PyTorch train.py)
    cutout_area: float = 0.0  # > 0: plain Cutout cutting this many px per image on average (area-matched control)
    color_jitter: float = 0.4  # data.imagenet_style only: ColorJitter brightness / contrast / saturation (0 = off)
    lighting: float = 0.1  # data.imagenet_style only: PCA lighting alphastd (CutMix-PyTorch utils.Lighting; 0 = off)

    def validate(self) -> None:
        super().validate()
        if self.policy_order not in POLICY_ORDERS:
            raise ValueError(f"aug.policy_order must be one of {', '.join(POLICY_ORDERS)}, got {self.policy_order!r}")
        if self.color_jitter < 0 or self.lighting < 0:
            raise ValueError(f"aug.color_jitter and aug.lighting must be >= 0 (0 = off), got {self.color_jitter}, "
                             f"{self.lighting}")
        if self.cutout_area < 0:
            raise ValueError(f"aug.cutout_area must be >= 0 (0 = off: Cutout of side aug.length), "
                             f"got {self.cutout_area}")
        _ = self.plan  # the preset and the components: names and combinations

    @property
    def plan(self) -> AugPlan:
        """The resolved pipeline (:func:`classification.augment.plan`), computed once per combination of
        ``method`` / ``image`` / ``region`` / ``keep_cut`` / ``keep_paste`` (and the keys it checks them with)."""
        key = (self.method, self.image, self.region, self.keep_cut, self.keep_paste, self.cutmix_mode,
               self.cutout_area)
        cached = self.__dict__.get("_plan")
        if cached is None or cached[0] != key:
            self.__dict__["_plan"] = cached = (key, plan(self))
        return cached[1]


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_reference_batch: int = 0  # > 0: lr is scaled by global batch / this (linear scaling rule)
    schedule: str = "cosine"  # cosine | multistep
    milestones: list[int] = field(default_factory=list)  # epochs, for multistep
    gamma: float = 0.1
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.0  # cosine ends at lr * this (UDA: 0.004)
    clip_grad_norm: float = 0.0  # > 0: clip the gradients' global L2 norm to this (AutoAugment CIFAR: 5)

    def validate(self) -> None:
        if self.schedule not in ("cosine", "multistep"):
            raise ValueError(f"optim.schedule must be cosine or multistep, got {self.schedule!r}")
        if self.clip_grad_norm < 0:
            raise ValueError(f"optim.clip_grad_norm must be >= 0 (0 = off), got {self.clip_grad_norm}")


@dataclass
class ClsTrainConfig(TrainConfig):
    eval_every: int = 1  # epochs between evaluations (and best.pt)

    def validate(self) -> None:
        super().validate()
        if self.eval_every < 1:
            raise ValueError(f"train.eval_every must be >= 1, got {self.eval_every}")


@dataclass
class ClsConfig:
    source: str = ""  # where the recipe's numbers come from
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: ClsTrainConfig = field(default_factory=ClsTrainConfig)

    # keys that may differ between a run and its resumption (besides the shared ones of core.engine.run_dir)
    RESUME_MAY_CHANGE = ("train.eval_every",)

    def validate(self) -> None:
        if self.data.loader == "device" and (blocker := device_loader_blocker(self)):
            raise ValueError(f"data.loader=device cannot be used with {blocker}; use data.loader=workers (or auto)")


def device_loader_blocker(cfg) -> str:
    """Why the device-resident loader cannot serve this config ("" if it can): it does crop + flip only,
    so per-image PIL augmentation (AutoAugment / RandAugment, the ImageNet pipeline) needs workers."""
    if cfg.data.imagenet_style:
        return "data.imagenet_style=true (RandomResizedCrop, ColorJitter and lighting run per image)"
    image_op = cfg.aug.plan.image_op
    return f"aug.image={image_op} ({image_op} runs per image on PIL in the workers)" if image_op else ""
