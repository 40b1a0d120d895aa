"""Batched training augmentation on tensors: one gather per batch, on whatever device the batch is on.

``RandomCropFlip(padding=4, flip=True)`` is the standard CIFAR recipe (random
crop of the zero-padded image + horizontal flip); ``RandomCropFlip(padding=2,
flip=False)`` is the MNIST-like "small random shift". Both do exactly what
torchvision's ``RandomCrop(size, padding)`` (+ ``RandomHorizontalFlip``) do per
image, but for a whole ``(B, C, H, W)`` batch at once, so the fast path needs
no per-sample PIL work. The random numbers come from the loader's CPU
generator (the data-order RNG saved with checkpoints), so runs replay exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RandomCropFlip:
    """Random ``padding``-pixel shift (zero fill) and optional horizontal flip for each image of a batch.

    Works on any dtype (the fast path calls it on the uint8 batch before
    normalising, so padding is black exactly as in torchvision's ``RandomCrop``).
    """

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        self.padding = int(padding)
        self.flip = bool(flip)

    def __repr__(self) -> str:
        parts = [f"random crop (padding {self.padding})"] if self.padding else []
        if self.flip:
            parts.append("horizontal flip")
        return " + ".join(parts) or "identity"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return a new batch: every image shifted by its own (dy, dx) in [-p, p] and maybe mirrored."""
        b, c, h, w = x.shape
        p = self.padding
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        mirror = torch.rand(b, generator=generator) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool)
        dy, dx, mirror = dy.to(x.device), dx.to(x.device), mirror.to(x.device)
        xp = F.pad(x, (p, p, p, p)) if p else x
        hp, wp = h + 2 * p, w + 2 * p
        rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H) rows of the padded image
        cols = torch.arange(w, device=x.device).expand(b, w)
        cols = torch.where(mirror[:, None], cols.flip(1), cols) + dx[:, None]  # (B, W)
        flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w)  # (B, 1, H*W)
        out = torch.gather(xp.reshape(b, c, hp * wp), 2, flat.expand(b, c, h * w))
        return out.view(b, c, h, w)

