"""KeepAugment core: batched, sync-free saliency and selective cut / paste on (B, C, H, W) tensors.

Gong, Wang, Li, Chandra, Liu. "KeepAugment: A Simple Information-Preserving Data Augmentation
Approach", CVPR 2021. This package imports only torch; nothing here does I/O or reads configs.
"""

from .compose import KeepPipeline
from .early_head import EarlyHead
from .keep import OPS, KeepAugment, KeepOutput, KeepParams
from .layout import LAYOUTS
from .model_io import fixed_input_size, select_logits
from .ops import box_area_fraction, boxes_to_mask, cutmix, cutout, erase, mix_targets, paste
from .policy import random_boxes, selective_boxes
from .regions import anchor_boxes, region_scores, summed_area_table
from .saliency import downscale, eval_mode, saliency_map
from .sampling import (
    candidate_mask,
    region_threshold,
    sample_beta,
    sample_cutmix_sizes,
    sample_erasing_sizes,
    sample_gamma,
    select_anchors,
)
from .wrappers import BackboneWithHead, unwrap_model

__all__ = [
    "BackboneWithHead", "EarlyHead", "KeepAugment", "KeepOutput", "KeepParams", "KeepPipeline", "LAYOUTS", "OPS",
    "anchor_boxes", "box_area_fraction", "boxes_to_mask", "candidate_mask", "cutmix", "cutout", "downscale", "erase",
    "eval_mode", "fixed_input_size", "mix_targets", "paste", "random_boxes", "region_scores", "region_threshold",
    "saliency_map", "sample_beta", "sample_cutmix_sizes", "sample_erasing_sizes", "sample_gamma", "select_anchors",
    "select_logits", "selective_boxes", "summed_area_table", "unwrap_model",
]
