"""KeepAugment person re-ID: the Bag-of-Tricks baseline (Luo et al. 2019) with selective random erasing."""
