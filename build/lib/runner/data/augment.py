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
        self._tables: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def __repr__(self) -> str:
        parts = [f"random crop (padding {self.padding})"] if self.padding else []
        if self.flip:
            parts.append("horizontal flip")
        return " + ".join(parts) or "identity"

    def _table(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Flat source index in the padded image for every (dy, dx, mirror) choice: (K, H*W) int64.

        Built once per image size, so each batch only picks rows of it (a memcpy) instead of
        doing index arithmetic over every pixel.
        """
        key = (h, w, device)
        if key not in self._tables:
            wp, n = w + 2 * self.padding, 2 * self.padding + 1
            dy = torch.arange(n).view(n, 1, 1, 1, 1)
            dx = torch.arange(n).view(1, n, 1, 1, 1)
            rows = torch.arange(h).view(1, 1, 1, h, 1)
            cols = torch.stack([torch.arange(w), torch.arange(w).flip(0)]).view(1, 1, 2, 1, w)
            flat = (dy + rows) * wp + dx + cols  # (n, n, 2, h, w)
            self._tables[key] = flat.reshape(n * n * 2, h * w).to(device)
        return self._tables[key]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return a new batch: every image shifted by its own (dy, dx) in [-p, p] and maybe mirrored."""
        b, c, h, w = x.shape
        p, n = self.padding, 2 * self.padding + 1
        dy = torch.randint(0, n, (b,), generator=generator)
        dx = torch.randint(0, n, (b,), generator=generator)
        mirror = (torch.rand(b, generator=generator) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool))
        choice = ((dy * n + dx) * 2 + mirror.long()).to(x.device)
        flat = self._table(h, w, x.device).index_select(0, choice).view(b, 1, h * w)
        xp = F.pad(x, (p, p, p, p)) if p else x
        out = torch.gather(xp.reshape(b, c, (h + 2 * p) * (w + 2 * p)), 2, flat.expand(b, c, h * w))
        return out.view(b, c, h, w)
