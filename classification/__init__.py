"""KeepAugment classification: CIFAR / ImageNet models and trainers built on :mod:`core`."""
