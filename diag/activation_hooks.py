"""Forward hooks on activation modules, attached only for the batches that are sampled.

For ReLU-like units a unit is dead when it never produced a positive output on
any sampled example (an OR over the window, kept on the device). Saturation is
only measured for bounded activations (sigmoid near 0/1, tanh near ±1): an
unbounded ReLU output above 0.99 is not saturated.
"""

from __future__ import annotations

import torch
from torch import nn

from diag.layer_names import activation_names

RELU_LIKE = (nn.ReLU, nn.ReLU6)
BOUNDED: dict[type[nn.Module], tuple[float, float]] = {
    nn.Sigmoid: (0.0, 1.0),
    nn.Tanh: (-1.0, 1.0),
    nn.Hardtanh: (-1.0, 1.0),
}
# the activation layers a run watches (their activations go to histograms); a sample measures
# only the MEASURED ones
WATCHED: tuple[type[nn.Module], ...] = (
    *RELU_LIKE,
    nn.LeakyReLU,
    nn.GELU,
    nn.ELU,
    nn.SiLU,
    *BOUNDED,
)
# the units a sample measures: dead ReLU-like units, saturated bounded ones (std is not read by any rule)
MEASURED: tuple[type[nn.Module], ...] = (*RELU_LIKE, *BOUNDED)
SATURATION_MARGIN = 0.01  # within 1% of the range from a bound
STAT_SAMPLE = 65536  # activation values the saturated fraction (and a histogram) is estimated from


def activation_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Named activation modules worth watching, in forward order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, WATCHED)}


class ActivationRecorder:
    """Attach with :meth:`attach` before a forward pass, read with :meth:`collect`, then :meth:`detach`.

    Activations are keyed by the name of the weight layer they follow (:mod:`diag.layer_names`).
    """

    def __init__(self, model: nn.Module) -> None:
        found = activation_layers(model)
        names = activation_names(model, list(found))
        self.layers = {names[path]: module for path, module in found.items()}
        self._handles: list = []
        self.fired: dict[
            str, torch.Tensor
        ] = {}  # per-unit "ever fired" over the window (bool, device)
        # the layers the latest sampled forward pass reached: each one's saturated fraction (a 0-d device
        # tensor) if its units are bounded, else None
        self._sample: dict[str, torch.Tensor | None] = {}
        # keep_values: the subsampled outputs of the next forward pass, for histograms (device tensors)
        self.keep_values = False
        self.values: dict[str, torch.Tensor] = {}

    def attach(self) -> None:
        """Hooks on the layers with a measure (dead or saturated units), on all of them when ``keep_values``."""
        if self._handles:
            return
        for name, module in self.layers.items():
            if self.keep_values or isinstance(module, MEASURED):
                self._handles.append(module.register_forward_hook(self._make_hook(name, module)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make_hook(self, name: str, module: nn.Module):
        bounds = next((b for t, b in BOUNDED.items() if isinstance(module, t)), None)
        relu_like = isinstance(module, RELU_LIKE)

        def hook(_mod, _inp, out):
            if not isinstance(out, torch.Tensor) or out.dim() < 2:
                return
            out = out.detach()
            if relu_like:
                # a unit fired if its largest output over the batch (and positions) is positive: far
                # cheaper than (out > 0).any() on a conv map (no boolean map) (a NaN channel counts as
                # silent, and findings after a blow-up are suppressed anyway). Over the positions first
                # (adjacent in memory), then the batch: one amax over (0, 2, 3) took 2.7-3.3x as long
                # (200 against 75 us on a 64x64x4x4 map, 2.7 against 0.8 ms on 128x64x28x28)
                per_example = out.amax(dim=tuple(range(2, out.dim()))) if out.dim() > 2 else out
                fired = per_example.amax(dim=0) > 0
                prev = self.fired.get(name)
                self.fired[name] = (
                    fired if prev is None or prev.shape != fired.shape else prev | fired
                )
            self._sample[name] = None
            if bounds is None and not self.keep_values:
                return
            # the saturated fraction is an estimate: a strided subsample of STAT_SAMPLE values is within
            # ~1% of the full figure and costs a fraction of it on large conv maps
            flat = out.reshape(-1)
            flat = flat[:: max(1, flat.numel() // STAT_SAMPLE)].float()
            if bounds is not None:
                lo, hi = bounds
                margin = SATURATION_MARGIN * (hi - lo)
                saturated = (flat <= lo + margin) | (flat >= hi - margin)
                self._sample[name] = saturated.float().mean()
            if self.keep_values:
                self.values[name] = flat

        return hook

    def measures(self) -> dict[str, list[str]]:
        """Which unit statistics apply to this model, and to which layers: ``dead_fraction`` for ReLU-like
        units, ``saturation`` for bounded ones (a ReLU model has no saturation to show)."""
        out: dict[str, list[str]] = {}
        for name, module in self.layers.items():
            if isinstance(module, RELU_LIKE):
                out.setdefault("dead_fraction", []).append(name)
            if isinstance(module, tuple(BOUNDED)):
                out.setdefault("saturation", []).append(name)
        return out

    def collect(self) -> dict[str, dict[str, float]]:
        """Host values for the sampled batch, per layer it reached: the dead fraction (over the window) of
        ReLU-like units, the saturated fraction (this batch) of bounded ones.

        Each forward pass is read once: a second call without a new pass returns nothing.
        """
        sample, self._sample = self._sample, {}
        if not sample:
            return {}
        # one host read: the saturated fractions, then each ReLU-like layer's share of units that fired
        fired = list(self.fired)
        tensors = [t for t in sample.values() if t is not None]
        tensors += [self.fired[n].float().mean() for n in fired]
        vals = torch.stack(tensors).tolist() if tensors else []
        dead = {n: 1.0 - f for n, f in zip(fired, vals[len(vals) - len(fired) :])}
        out: dict[str, dict[str, float]] = {}
        at = 0
        for n, saturation in sample.items():
            entry = {}
            if saturation is not None:
                entry["saturation"] = vals[at]
                at += 1
            if n in dead:
                entry["dead_fraction"] = dead[n]
            out[n] = entry
        return out

    def reset_window(self) -> None:
        """Start a new dead-unit window (units that fire later are no longer counted dead)."""
        self.fired.clear()
