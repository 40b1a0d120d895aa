"""bench/fault_families.py's sampler: the recipe bugs found on the benchmark's runs stay fixed.

Pure sampling (no run): each property is the mechanism the sampler's docstring gives for a fix.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def families(monkeypatch):
    from helpers import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import fault_families

    return fault_families


def _kv(overrides: list[str]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides)


def test_resnet_recipes_get_the_full_step_budget_and_adam_the_upper_half_of_its_range(families):
    cases = [c for seed in range(4) for c in families.generate(seed=seed)]
    resnets = [
        _kv(c.twin or c.overrides) for c in cases if "model=resnet18" in (c.twin or c.overrides)
    ]
    assert resnets
    for kv in resnets:
        # the epochs that give the others' ~250 steps (within 3-60), not the 120 it could not train in
        assert int(kv["trainer.max_epochs"]) == families.epochs_for(int(kv["data.batch_size"])), kv
    healthy_adam = [
        _kv(c.overrides)
        for c in cases
        if c.family == "healthy"
        and "model=resnet18" in c.overrides
        and "optimizer=adam" in c.overrides
    ]
    lo, hi = families.LR_RANGE["adam"]
    scale_floor = 1.0  # a ResNet's batch is 64 or more: the batch scaling is 1x or above
    for kv in healthy_adam:
        assert float(kv["optimizer.lr"]) >= 0.99 * scale_floor * (lo * hi) ** 0.5, kv


def test_sgd_on_a_batch_normalised_net_at_a_constant_lr_is_not_scaled_above_its_draw(families):
    import random

    rng = random.Random(0)
    for _ in range(300):
        opt = rng.choice(("sgd", "sgd_momentum", "sgd_nesterov"))
        sched = rng.choice(families.CONSTANT_LR)
        r = families.sample_recipe(rng, "cnn", opt, sched)
        assert r["lr"] <= families.LR_RANGE[opt][1] + 1e-12, r
    # with a schedule that anneals it the scaling up stays (a batch of 512 trains at up to 2x)
    scaled = [
        families.sample_recipe(random.Random(i), "cnn", "sgd_momentum", "cosine")
        for i in range(200)
    ]
    assert any(r["lr"] > families.LR_RANGE["sgd_momentum"][1] for r in scaled)
