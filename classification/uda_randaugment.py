"""UDA's strong augmentation for images, re-implemented: google-research/uda's RandAugment + Cutout 16.

Source (commit 960684e363251772a5938451d4d2bc0f1da9e24b of https://github.com/google-research/uda):
``image/randaugment/policies.py`` (``get_trans_list``, ``randaug_policies``),
``image/randaugment/augmentation_transforms.py`` (the ops, ``float_parameter`` / ``int_parameter``,
``pil_wrap`` / ``pil_unwrap``, ``create_cutout_mask``, ``cutout_numpy``), ``image/preprocess.py``
(``proc_and_dump_unsup_data``: the draw and the final Cutout) and ``image/data.py`` (the crop / flip, done
later and per view: see :mod:`classification.uda`). Not torchvision's ``RandAugment(2, 9)``.

**The draw** (``preprocess.py``). ``randaug_policies()`` lists every ordered pair of (op, 0.5, magnitude)
over the 15 ops of :data:`OPS` and magnitudes 1..9 (135 x 135 policies); one policy is drawn uniformly per
image, i.e. two independent draws, each op uniform over the 15 (repeats allowed) and magnitude uniform over
1..9. Each of the two ops is then applied with probability 0.5 (``random.random() < 0.5``); Rotate, ShearX/Y
and TranslateX/Y negate their parameter with probability 0.5 (``random.random() > 0.5``). After the policy,
``cutout_numpy(img)`` (size 16) is **always** applied.

**Magnitudes** (``PARAMETER_MAX = 10``; ``float_parameter(m, v) = m * v / 10``,
``int_parameter(m, v) = int(m * v / 10)``), m = 1..9 (see :func:`op_parameter`)::

    op            parameter                                  at m = 1 .. 9
    Invert        none (ImageOps.invert)                     -
    AutoContrast  none (ImageOps.autocontrast, cutoff 0)     -
    Equalize      none (ImageOps.equalize)                   -
    Posterize     bits kept = 4 - int_parameter(m, 4)        4 4 3 3 2 2 2 1 1
    Solarize      threshold = 256 - int_parameter(m, 256)    231 205 180 154 128 103 77 52 26 (>= it: inverted)
    Rotate        +-int_parameter(m, 30) degrees             3 6 9 ... 27 (PIL: + is counter-clockwise)
    ShearX        +-float_parameter(m, 0.3) = s              0.03 0.06 ... 0.27; AFFINE (1, s, 0, 0, 1, 0)
    ShearY        same s                                     AFFINE (1, 0, 0, s, 1, 0)
    TranslateX    +-int_parameter(m, 10) = t pixels          1 2 ... 9 (absolute); AFFINE (1, 0, t, 0, 1, 0)
    TranslateY    same t                                     AFFINE (1, 0, 0, 0, 1, t)
    Cutout (op)   side = int_parameter(m, 20), centre unif.  2 4 6 ... 18
    Color         factor = float_parameter(m, 1.8) + 0.1     0.28 0.46 0.64 0.82 1.0 1.18 1.36 1.54 1.72
    Contrast      same factor (ImageEnhance)                 same, no sign
    Brightness    same factor                                same, no sign
    Sharpness     same factor                                same, no sign

PIL's AFFINE data maps an output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f), so a
positive TranslateX moves the content left. Rotate and the affine ops resample NEAREST (PIL's default), so
no pixel is blended with the fill. The enhancers have no sign: m < 5 weakens (0.28 at m = 1), m = 5 is the
identity-ish 1.0, m > 5 strengthens; unlike torchvision's RandAugment, magnitude is not "strength".

**Fills.** UDA stores images normalised, ``(x / 255 - mean) / std``, and ``apply_policy`` runs the ops on an
RGBA PIL image made from them (``pil_wrap``: de-normalise, ``np.uint8``, alpha 255); ``pil_unwrap`` sets
every pixel whose alpha is 0 to 0 in *normalised* space, i.e. to the dataset mean. Rotate / Shear /
Translate fill with (0, 0, 0, 0) and Cutout-as-op writes (125, 122, 113, 0), so both end up as the mean —
*unless* a later op in the same policy is one of Invert, AutoContrast, Equalize, Posterize, Solarize: those
run on ``img.convert('RGB')`` and convert back to RGBA, which drops the alpha, so the fill's RGB (black, or
(125, 122, 113)) is processed like image content and kept. The enhancers keep the alpha (Pillow's
ImageEnhance carries it through). This class reproduces all of that by running the same PIL ops on RGBA.
The final ``cutout_numpy`` multiplies the normalised image by a 0/1 mask: the square becomes the mean too.

**Cutout geometry** (``create_cutout_mask``): centre (y, x) uniform over the pixels, box rows
``[max(0, y - s // 2), min(H, y + s // 2))``, same for columns: a full s x s square inside the image,
clipped at the borders (never empty, since the centre is inside), s - 1 wide for odd s. It is placed on the
whole stored image: ``image/data.py`` flips and crops the augmented image afterwards (from the reflect-padded
image), so in the training crop the box moves with the content and may be cut or mirrored into the padding.

Deliberate differences, all from working on uint8 PIL images instead of UDA's normalised floats:

* The fill is the mean as uint8, :data:`UDA_FILL` = round(255 * UDA's CIFAR-10 mean) = (125, 123, 114),
  where UDA has the exact float mean (125.31, 122.95, 113.87) (for SVHN UDA uses SVHN's mean; pass
  ``fill``). Normalised with this project's CIFAR mean (125.3, 123.0, 113.9) it is within 0.005 of 0.
* ``pil_wrap`` truncates ``(img * std + mean) * 255`` with ``np.uint8``, so a float round-off can lower a
  pixel by 1 before the ops; this class starts from the exact uint8 image.
* UDA's Cutout-as-op loops ``pixels[i, j]`` with i over the *row* range (PIL indexes [x, y]), i.e. the box
  is transposed; with its square images and a uniform centre the distribution is the same. Here the box is
  placed at (row, column) as drawn, which also works for non-square images (UDA asserts square).
* UDA draws from Python's ``random`` and NumPy; this class draws from the global torch RNG
  (``torch.randint`` / ``torch.rand``), which :class:`classification.data.EpochSeeded` seeds per item, so a
  run's augmentations are a function of (seed, stream position, index). UDA also precomputes a finite number
  of augmented copies per image (``--aug_copy``, 100 in its README); here every draw is fresh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

# image/randaugment/policies.py get_trans_list(), in its order
OPS = ("Invert", "Cutout", "Sharpness", "AutoContrast", "Posterize", "ShearX", "TranslateX", "TranslateY",
       "ShearY", "Rotate", "Equalize", "Contrast", "Color", "Solarize", "Brightness")
MAGNITUDES = tuple(range(1, 10))  # randaug_policies(): range(1, 10)
PROB = 0.5  # randaug_policies(): every op has probability 0.5
PARAMETER_MAX = 10
SIGNED = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})
RGB_OPS = frozenset({"Invert", "AutoContrast", "Equalize", "Posterize", "Solarize"})  # convert('RGB'): alpha lost
CUTOUT_OP_RGBA = (125, 122, 113, 0)  # _cutout_pil_impl's literal: alpha 0 -> the mean at pil_unwrap
UDA_CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)  # augmentation_transforms.get_mean_and_std()
UDA_FILL = tuple(round(255 * m) for m in UDA_CIFAR10_MEAN)  # (125, 123, 114): normalised 0 as uint8
CUTOUT_SIZE = 16  # cutout_numpy(img, size=16), called with the default in preprocess.py


def float_parameter(level: int, maxval: float) -> float:
    return float(level) * maxval / PARAMETER_MAX


def int_parameter(level: int, maxval: int) -> int:
    return int(level * maxval / PARAMETER_MAX)


def op_parameter(name: str, magnitude: int) -> float | int | None:
    """The unsigned parameter UDA derives from ``magnitude`` for op ``name`` (None: the op has none)."""
    if name in ("Invert", "AutoContrast", "Equalize"):
        return None
    if name == "Posterize":
        return 4 - int_parameter(magnitude, 4)  # bits kept
    if name == "Solarize":
        return 256 - int_parameter(magnitude, 256)  # threshold: pixels >= it are inverted
    if name == "Rotate":
        return int_parameter(magnitude, 30)  # degrees
    if name in ("ShearX", "ShearY"):
        return float_parameter(magnitude, 0.3)
    if name in ("TranslateX", "TranslateY"):
        return int_parameter(magnitude, 10)  # pixels
    if name == "Cutout":
        return int_parameter(magnitude, 20)  # side
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return float_parameter(magnitude, 1.8) + 0.1  # enhancement factor
    raise ValueError(f"unknown UDA op {name!r}; expected one of {', '.join(OPS)}")


def cutout_box(center: tuple[int, int], size: int, height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (half-open) of UDA's ``create_cutout_mask`` around ``center = (y, x)``."""
    y, x = center
    return max(0, y - size // 2), min(height, y + size // 2), max(0, x - size // 2), min(width, x + size // 2)


@dataclass(frozen=True)
class OpDraw:
    """One of the two drawn ops: whether it fired, and its own draws (sign; Cutout's centre (y, x))."""

    name: str
    magnitude: int
    applied: bool
    sign: int = 1
    center: tuple[int, int] | None = None


_ENHANCERS = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast, "Brightness": ImageEnhance.Brightness,
              "Sharpness": ImageEnhance.Sharpness}


def apply_op(img: Image.Image, name: str, magnitude: int, sign: int = 1,
             center: tuple[int, int] | None = None) -> Image.Image:
    """Op ``name`` at ``magnitude`` on an RGBA image, as UDA's ``augmentation_transforms`` does it; ``sign``
    (+1 / -1) for the signed ops, ``center`` (y, x) for Cutout. Returns RGBA; alpha 0 marks fill."""
    if img.mode != "RGBA":
        raise ValueError(f"apply_op works on RGBA images (alpha 0 = fill), got mode {img.mode}")
    p = op_parameter(name, magnitude)
    if name == "Invert":
        return ImageOps.invert(img.convert("RGB")).convert("RGBA")
    if name == "AutoContrast":
        return ImageOps.autocontrast(img.convert("RGB")).convert("RGBA")
    if name == "Equalize":
        return ImageOps.equalize(img.convert("RGB")).convert("RGBA")
    if name == "Posterize":
        return ImageOps.posterize(img.convert("RGB"), p).convert("RGBA")
    if name == "Solarize":
        return ImageOps.solarize(img.convert("RGB"), p).convert("RGBA")
    if name == "Rotate":
        return img.rotate(sign * p)  # NEAREST, same size, fill (0, 0, 0, 0)
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY"):
        s = sign * p
        data = {"ShearX": (1, s, 0, 0, 1, 0), "ShearY": (1, 0, 0, s, 1, 0), "TranslateX": (1, 0, s, 0, 1, 0),
                "TranslateY": (1, 0, 0, 0, 1, s)}[name]
        return img.transform(img.size, Image.AFFINE, data)  # NEAREST, fill (0, 0, 0, 0)
    if name == "Cutout":
        if center is None:
            raise ValueError("Cutout needs its centre (y, x)")
        top, bottom, left, right = cutout_box(center, p, img.height, img.width)
        out = np.array(img)
        out[top:bottom, left:right] = CUTOUT_OP_RGBA
        return Image.fromarray(out, "RGBA")
    return _ENHANCERS[name](img).enhance(p)


def finish(img: Image.Image, cutout_center: tuple[int, int] | None, size: int = CUTOUT_SIZE,
           fill: tuple[int, int, int] = UDA_FILL) -> Image.Image:
    """``pil_unwrap`` (alpha-0 pixels -> ``fill``) then ``cutout_numpy`` (a ``size`` box of ``fill``); RGB."""
    rgba = np.asarray(img.convert("RGBA"))
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = fill
    if cutout_center is not None and size > 0:
        top, bottom, left, right = cutout_box(cutout_center, size, rgb.shape[0], rgb.shape[1])
        rgb[top:bottom, left:right] = fill
    return Image.fromarray(rgb, "RGB")


class UDARandAugment:
    """UDA's strong augmentation of a PIL image (see the module docstring): two ops drawn from :data:`OPS`
    with magnitudes 1..9, each applied with probability 0.5, then Cutout ``cutout`` (16; 0 = none) filled
    with ``fill`` (UDA's normalised 0 = its CIFAR-10 mean). Random draws come from the global torch RNG."""

    def __init__(self, cutout: int = CUTOUT_SIZE, fill: tuple[int, int, int] = UDA_FILL, num_ops: int = 2) -> None:
        if cutout < 0:
            raise ValueError(f"cutout must be >= 0 (0 = no final Cutout), got {cutout}")
        if len(fill) != 3:
            raise ValueError(f"fill must be an RGB triple, got {fill!r}")
        self.cutout, self.fill, self.num_ops = cutout, tuple(int(v) for v in fill), num_ops

    def draw(self, height: int, width: int) -> tuple[list[OpDraw], tuple[int, int] | None]:
        """The random choices for one ``height`` x ``width`` image: the ops, and the final Cutout's centre."""
        names = torch.randint(len(OPS), (self.num_ops,)).tolist()
        mags = torch.randint(MAGNITUDES[0], MAGNITUDES[-1] + 1, (self.num_ops,)).tolist()
        ops = []
        for k, m in zip(names, mags):
            name = OPS[k]
            if not torch.rand(()).item() < PROB:
                ops.append(OpDraw(name, m, False))
                continue
            sign = -1 if name in SIGNED and torch.rand(()).item() > 0.5 else 1
            center = _center(height, width) if name == "Cutout" else None
            ops.append(OpDraw(name, m, True, sign, center))
        return ops, (_center(height, width) if self.cutout > 0 else None)

    def apply(self, img: Image.Image, ops: list[OpDraw], cutout_center: tuple[int, int] | None) -> Image.Image:
        out = img.convert("RGB").convert("RGBA")
        for op in ops:
            if op.applied:
                out = apply_op(out, op.name, op.magnitude, op.sign, op.center)
        return finish(out, cutout_center, self.cutout, self.fill)

    def __call__(self, img: Image.Image) -> Image.Image:
        ops, center = self.draw(img.height, img.width)
        return self.apply(img, ops, center)

    def marked(self, img: Image.Image) -> Image.Image:
        """:meth:`__call__` (the same draws, the same RGB) as RGBA whose alpha is 0 on the final Cutout's box and
        255 elsewhere: the crop / flip that follow move the mark with the content, so a selective paste done
        later (on the device) can be put *under* the final Cutout (:class:`classification.uda.UDATrainer`)."""
        ops, center = self.draw(img.height, img.width)
        out = np.array(self.apply(img, ops, center).convert("RGBA"))
        if center is not None:
            top, bottom, left, right = cutout_box(center, self.cutout, out.shape[0], out.shape[1])
            out[top:bottom, left:right, 3] = 0
        return Image.fromarray(out, "RGBA")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_ops={self.num_ops}, magnitudes=1..9, p={PROB}, cutout={self.cutout}, " \
               f"fill={self.fill})"


def _center(height: int, width: int) -> tuple[int, int]:
    """UDA's ``np.random.randint(0, H)``, ``np.random.randint(0, W)``: a centre (y, x) uniform over the pixels."""
    return int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
