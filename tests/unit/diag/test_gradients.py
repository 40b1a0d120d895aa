"""The global gradient norm: on the host through NumPy for CPU gradients, on the device otherwise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diag.gradients import global_grad_norm, grads_of, host_grad_norm
from diag.hooks import FitState
from runner.trainer import Trainer


def _grads(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(64, 128, generator=g, dtype=dtype),
        torch.randn(128, generator=g, dtype=dtype) * 1e-3,
        torch.randn(10, 128, generator=g, dtype=dtype).t(),  # not contiguous
        torch.tensor(3.0, dtype=dtype),  # 0-d
        torch.zeros(0, dtype=dtype),  # empty
    ]


def _params(grads: list[torch.Tensor]) -> list[nn.Parameter]:
    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    return params


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_host_norm_is_torchs_norm(dtype):
    grads = _grads(dtype)
    want = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    assert host_grad_norm(grads) == pytest.approx(want, rel=1e-6)
    assert float(global_grad_norm(_params(grads))) == pytest.approx(want, rel=1e-6)


def test_nan_and_inf_come_through_and_a_finite_torch_norm_stays_finite():
    grads = _grads()
    grads[1][5] = math.nan
    assert math.isnan(host_grad_norm(grads))
    grads = _grads()
    grads[0][3, 3] = -math.inf
    assert host_grad_norm(grads) == math.inf
    # where float32 overflows, the host norm is what torch's two levels (per tensor, then over those)
    # give: the guard skips exactly the steps it skipped
    for case in (
        [torch.tensor([2e19])],  # torch: a one-element norm is the absolute value
        [torch.tensor([2e19]), torch.ones(4)],  # the norm of the norms overflows
        [torch.tensor([1.5e19]), torch.ones(4)],
        [torch.full((4,), 1e19)],
        [torch.full((3,), 1e19), torch.ones(2)],
    ):
        want = float(global_grad_norm(_params(case)))
        assert host_grad_norm(case) == pytest.approx(want, rel=1e-6), case
    assert math.isfinite(host_grad_norm([torch.tensor([2e19])]))
    assert host_grad_norm([torch.tensor([2e19]), torch.ones(4)]) == math.inf


@pytest.mark.parametrize(
    "case",
    [
        [torch.tensor([2e19], dtype=torch.float64), torch.ones(4, dtype=torch.float64)],
        [torch.tensor([2e19]), torch.ones(4, dtype=torch.float64)],  # torch promotes the stack
        [torch.full((3,), 3e19, dtype=torch.float64), torch.full((2,), 1e19, dtype=torch.float64)],
    ],
    ids=["float64", "mixed", "float64-no-single-overflow"],
)
def test_a_total_over_float32s_range_is_finite_where_torch_sums_in_float64(case):
    want = float(global_grad_norm(_params(case)))
    assert math.isfinite(want)
    assert host_grad_norm(case) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(
    "grad",
    [
        torch.ones(3, dtype=torch.bfloat16),
        torch.ones(3, dtype=torch.float16),
        torch.ones(3).to_sparse(),
        torch.ones(3, requires_grad=True),  # create_graph=True leaves gradients that require grad
    ],
    ids=["bfloat16", "float16", "sparse", "requires_grad"],
)
def test_gradients_numpy_cannot_read_as_torch_would_are_left_to_torch(grad):
    assert host_grad_norm([torch.ones(3), grad]) is None


def test_the_guard_skips_a_nan_step_on_either_path():
    """float32 gradients take the host path, bfloat16 ones torch's; both skip the NaN step and report
    the norm the hooks read as a 0-d tensor."""
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = nn.Linear(4, 2).to(dtype)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = Trainer(max_epochs=1, progress=False)
        trainer.attach(model)
        state = FitState(model=model, optimizer=opt)
        x, y = torch.randn(8, 4, dtype=dtype), torch.randint(0, 2, (8,))
        before = model.weight.detach().clone()
        trainer.training_step(state, x, y)
        assert (host_grad_norm(grads_of(model.parameters())) is None) == (dtype == torch.bfloat16)
        good = float(state.grad_norm)
        assert not state.step_skipped and not torch.equal(before, model.weight)
        want = float(
            torch.linalg.vector_norm(
                torch.stack([p.grad.float().norm() for p in model.parameters()])
            )
        )
        assert good == pytest.approx(want, rel=1e-2 if dtype == torch.bfloat16 else 1e-6)
        assert isinstance(state.grad_norm, torch.Tensor) and state.grad_norm.ndim == 0
        x[0, 0] = math.nan
        before = model.weight.detach().clone()
        trainer.training_step(state, x, y)
        assert state.step_skipped and torch.equal(before, model.weight), dtype
        assert math.isnan(float(state.grad_norm))
