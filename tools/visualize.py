"""Figure-1-style grid (KeepAugment, CVPR 2021): original | saliency | Cutout | KeepCutout |
RandAugment | KeepRandAugment, one row per image, for a model checkpoint or a briefly trained model.

    python tools/visualize.py --checkpoint run/model.pt --out figure1.png
    python tools/visualize.py --train-steps 200 --out figure1.png      # trains on the embedded sample

Cut and paste regions are chosen by `core` from the model's saliency (label logit, tau = 0.6);
Cutout's fill is the dataset mean colour (0 in normalised space, as in the Cutout reference).
Outlines: red = region cut, green = region pasted back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.transforms import RandAugment
from tqdm import tqdm

from classification.models import create_model
from classification.sample import CIFAR_MEAN, load_image_archive, load_sample, normalize
from core import cutout, paste, random_boxes, saliency_map, selective_boxes
from core.engine.checkpoint import load_checkpoint as read_checkpoint
from tools.cli_common import one_line_errors

COLUMNS = ("original", "saliency", "Cutout", "KeepCutout", "RandAugment", "KeepRandAugment")


def train_briefly(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int,
                  batch: int = 128, lr: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """A short SGD run with crop + flip on uint8 images, so the saliency has something to show."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc="brief training", unit="step"):
        idx = torch.randint(len(images), (batch,), generator=g)
        x = F.pad(normalize(images[idx]), (4, 4, 4, 4))
        dy, dx = torch.randint(9, (2,), generator=g).tolist()
        x = x[:, :, dy:dy + 32, dx:dx + 32]
        flip = torch.rand(batch, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def load_checkpoint(path: str, model_name: str, num_classes: int, width: int | None) -> torch.nn.Module:
    """A training checkpoint (``last.pt`` / ``best.pt``), an export (with its JSON), or a plain state dict
    of ``model_name``. The model name and its arguments (width, ...) come from the checkpoint when it
    recorded them; ``--width`` overrides."""
    path = Path(path)
    state = read_checkpoint(path)  # a missing file or one that is not a checkpoint: one-line errors
    sidecar = path.with_suffix(".json")
    model_cfg = {}  # the ``model`` section the training checkpoint or the export's JSON recorded, if any
    if isinstance(state, dict) and isinstance(state.get("config"), dict):
        model_cfg = state["config"].get("model", {})
    elif sidecar.is_file():
        model_cfg = json.loads(sidecar.read_text()).get("config", {}).get("model", {})
    sd = state["model"] if isinstance(state, dict) and "model" in state else state
    name = model_cfg.get("name", model_name)
    kwargs = dict(model_cfg.get("kwargs", {}))
    if width is not None:
        kwargs["width"] = width
    elif not model_cfg:  # a plain state dict says nothing: the width this tool trains with
        kwargs["width"] = 32
    model = create_model(name, num_classes=model_cfg.get("num_classes", num_classes), **kwargs)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing and all(k.startswith("fc.") for k in missing):
        raise ValueError(f"{path} has no classifier (an export without --with-classifier): the saliency needs "
                         f"it; export with --with-classifier or pass the training checkpoint")
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match {name} {kwargs}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def heatmap(s: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) uint8, black -> red -> yellow -> white."""
    s = (s - s.min()) / (s.max() - s.min() + 1e-12)
    rgb = np.stack([np.clip(3 * s, 0, 1), np.clip(3 * s - 1, 0, 1), np.clip(3 * s - 2, 0, 1)], -1)
    return (rgb * 255).astype(np.uint8)


def make_figure(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int = 16,
                tau: float = 0.6, seed: int = 0, scale: int = 4) -> Image.Image:
    """The grid for uint8 ``images`` ``(N, 3, H, W)`` and their labels."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape
    sal = saliency_map(model, normalize(images), labels)
    mean = tuple(round(255 * m) for m in CIFAR_MEAN)
    cut_boxes = random_boxes(n, h, w, size, generator=g)
    keep_boxes = selective_boxes(sal, size, tau, "below", generator=g)
    torch.manual_seed(seed)  # torchvision's RandAugment draws from the global RNG
    ra = RandAugment(num_ops=2, magnitude=14)
    augmented = torch.stack([ra(img) for img in images])
    paste_boxes = selective_boxes(sal, size, tau, "above", generator=g)
    cells = [
        (images, None, None), (None, None, None),
        (cutout(images, cut_boxes, mean), cut_boxes, "red"), (cutout(images, keep_boxes, mean), keep_boxes, "red"),
        (augmented, None, None), (paste(augmented, images, paste_boxes), paste_boxes, "lime"),
    ]
    cw, ch, top = w * scale, h * scale, 14
    canvas = Image.new("RGB", (cw * len(COLUMNS), top + ch * n), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(COLUMNS):
        draw.text((c * cw + 3, 1), title, fill="black")
    for r in range(n):
        for c, (batch, boxes, colour) in enumerate(cells):
            arr = heatmap(sal[r].numpy()) if c == 1 else batch[r].permute(1, 2, 0).numpy()
            tile = Image.fromarray(arr).resize((cw, ch), Image.NEAREST)
            canvas.paste(tile, (c * cw, top + r * ch))
            if boxes is not None:
                x1, y1, x2, y2 = (v * scale for v in boxes[r].tolist())
                draw.rectangle((c * cw + x1, top + r * ch + y1, c * cw + x2 - 1, top + r * ch + y2 - 1), outline=colour)
    return canvas


def pick_images(images: torch.Tensor, labels: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first image of each class in turn, ``count`` in all."""
    order = [int(torch.nonzero(labels == c)[k]) for k in range(count) for c in labels.unique().tolist()]
    idx = torch.tensor(order[:count])
    return images[idx], labels[idx]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="model checkpoint; without it a model is trained briefly on the sample")
    ap.add_argument("--model", default="cifar_resnet18", help="model name (for a plain state dict)")
    ap.add_argument("--width", type=int, help="base width of the CIFAR ResNet (default: the checkpoint's, else 32)")
    ap.add_argument("--images", help="tar archive with test/<class>/*.jpg (default: the embedded sample)")
    ap.add_argument("--num-images", type=int, default=6)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--size", type=int, default=16, help="cut / paste region side")
    ap.add_argument("--tau", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/figure1.png")
    args = ap.parse_args(argv)
    return one_line_errors(lambda: figure(args), args)


def figure(args) -> int:
    test_x, test_y, classes = load_image_archive(args.images, "test") if args.images else load_sample("test")
    torch.manual_seed(args.seed)
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, args.model, len(classes), args.width)
    else:
        train_x, train_y, _ = load_sample("train")
        model = train_briefly(create_model(args.model, num_classes=len(classes), width=args.width or 32),
                              train_x, train_y, args.train_steps, seed=args.seed)
    images, labels = pick_images(test_x, test_y, args.num_images)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    make_figure(model, images, labels, args.size, args.tau, args.seed).save(args.out)
    print(f"wrote {args.out} ({', '.join(classes[i] for i in labels.tolist())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
