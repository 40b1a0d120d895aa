"""clip_gradients on a module or its parameters clips their .grad in place (as clip_grad_norm_ does).

Before: clip_gradients(model, max_norm=1.0) returned clipped copies and left the model's gradients at
their full norm (282.84 on the repro), so a loop that followed the refusal message's advice ("or the
model itself") trained unclipped.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from diag import clip_gradients


def _grad_norm(model: nn.Module) -> float:
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))


def _model_with_big_grads() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    (model(torch.ones(1, 3)) * 100).sum().backward()
    return model


@pytest.mark.parametrize(
    "source",
    [
        lambda m: m,
        lambda m: m.parameters(),  # a generator, as clip_grad_norm_ is usually called
        lambda m: list(m.parameters()),
        lambda m: dict(m.named_parameters()),
    ],
    ids=["module", "parameters-generator", "parameters-list", "named-parameters-dict"],
)
def test_a_module_or_its_parameters_are_clipped_in_place(source):
    model = _model_with_big_grads()
    before = _grad_norm(model)
    assert before == pytest.approx(282.84, abs=0.01)  # the repro's norm

    clipped, norm = clip_gradients(source(model), max_norm=1.0)

    assert _grad_norm(model) <= 1.0 + 1e-6
    # the documented return: (clipped, original_norm); clipped are the model's own (now clipped) grads
    assert norm == pytest.approx(before, rel=1e-9)
    assert [c is p.grad for c, p in zip(clipped, model.parameters())] == [True, True]


def test_in_place_clipping_matches_torch_and_leaves_small_gradients_alone():
    model, reference = _model_with_big_grads(), _model_with_big_grads()
    clip_gradients(model, max_norm=2.5)
    nn.utils.clip_grad_norm_(reference.parameters(), 2.5)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad)

    small = _model_with_big_grads()
    for p in small.parameters():
        p.grad.mul_(1e-4)
    grads = [p.grad.clone() for p in small.parameters()]
    _, norm = clip_gradients(small, max_norm=1.0)
    assert norm < 1.0
    assert all(torch.equal(p.grad, g) for p, g in zip(small.parameters(), grads))


def test_a_non_finite_norm_leaves_the_model_gradients_unchanged_and_is_returned():
    model = _model_with_big_grads()
    model.weight.grad[0, 0] = math.inf
    grads = [p.grad.clone() for p in model.parameters()]
    _, norm = clip_gradients(model, max_norm=1.0)
    assert math.isinf(norm)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_parameters_without_grad_are_skipped_and_a_mix_is_refused():
    model = _model_with_big_grads()
    model.bias.grad = None
    clipped, norm = clip_gradients(model.parameters(), max_norm=1.0)
    assert len(clipped) == 1 and clipped[0] is model.weight.grad
    assert float(model.weight.grad.norm()) <= 1.0 + 1e-6

    with pytest.raises(TypeError, match="parameters mixed with other values"):
        clip_gradients([model.weight, torch.ones(2)], max_norm=1.0)


def test_gradient_arrays_are_still_returned_as_copies():
    grads = [np.array([3.0, 0.0]), np.array([4.0])]
    clipped, norm = clip_gradients(grads, max_norm=1.0)
    assert norm == pytest.approx(5.0)
    assert np.concatenate(clipped) == pytest.approx([0.6, 0.0, 0.8], rel=1e-5)
    assert grads[0].tolist() == [3.0, 0.0]
