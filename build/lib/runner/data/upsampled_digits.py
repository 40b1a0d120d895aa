"""An MNIST-shaped task that needs no download: the 8x8 digits upscaled to 20x20 inside a 28x28 frame.

Like MNIST, the digit fills a 20x20 box centred in a 28x28 canvas; each digit
is then shifted by a seeded random offset of up to ``max_shift`` pixels, so the
task is not a pixel-exact copy of the 8x8 one. Used by ``bench/lr_finder.py`` to try the LR finder on
28x28 inputs: ``data._target_=runner.data.upsampled_digits.UpsampledDigitsDataModule data.image_size=28``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from runner.data.datamodule import Split
from runner.data.digits import DigitsDataModule


class UpsampledDigitsDataModule(DigitsDataModule):
    """Digits resized bilinearly to ``digit_size``, centred in an ``image_size`` canvas, shifted up to ``max_shift``."""

    name = "upsampled_digits"

    def __init__(self, digit_size: int = 20, max_shift: int = 2, placement_seed: int = 0, **kwargs) -> None:
        kwargs.setdefault("image_size", 28)
        super().__init__(**kwargs)
        if not 0 < int(digit_size) <= self.image_size:
            raise ValueError(f"data.digit_size={digit_size}: must be between 1 and data.image_size={self.image_size}")
        self.digit_size = int(digit_size)
        room = self.image_size - self.digit_size
        if not 0 <= int(max_shift) <= room // 2:
            raise ValueError(f"data.max_shift={max_shift}: must be between 0 and {room // 2} for this canvas")
        self.max_shift = int(max_shift)
        self.placement_seed = int(placement_seed)

    def _upsample(self, split: Split, generator: torch.Generator) -> Split:
        small = F.interpolate(split.images.float(), size=(self.digit_size, self.digit_size), mode="bilinear",
                              align_corners=False)
        n, centre = len(split), (self.image_size - self.digit_size) // 2
        canvas = torch.zeros(n, 1, self.image_size, self.image_size)
        offsets = centre + torch.randint(-self.max_shift, self.max_shift + 1, (n, 2), generator=generator)
        for i, (dy, dx) in enumerate(offsets.tolist()):
            canvas[i, :, dy:dy + self.digit_size, dx:dx + self.digit_size] = small[i]
        return Split(canvas.round().clamp(0, 255).to(torch.uint8), split.labels)

    def _load(self) -> tuple[Split, Split]:
        train, test = super()._load()
        g = torch.Generator().manual_seed(self.placement_seed)
        return self._upsample(train, g), self._upsample(test, g)
