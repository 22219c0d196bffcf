"""`make demo`: run `core` on the embedded CIFAR-10 sample and write the Figure-1-style grid.

Trains a narrow CIFAR ResNet-18 briefly on the sample (CPU, about a minute), then draws
original | saliency | Cutout | KeepCutout | RandAugment | KeepRandAugment for a few test images.
"""

from __future__ import annotations

import sys

import visualize

if __name__ == "__main__":
    visualize.main(["--out", "outputs/demo/figure1.png", "--num-images", "8", *sys.argv[1:]])
