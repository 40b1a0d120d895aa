"""The LR range test: documented API, torch mode with state restored, divergence stop, the runner's lr_find and lr=auto."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
import torch
from helpers import compose_cfg, run_cli
from tbparse import SummaryReader

from diag.lr_finder import (
    LearningRateFinder,
    interpolate,
    learned,
    pick_trial,
    smooth_losses,
    valley_index,
)

SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1"
}  # tiny models: extra threads only contend on a shared 2-core box


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The in-process range tests run single-threaded too (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- documented API ---------------------------------------------------------------
def quadratic_train_fn(curvatures: np.ndarray):
    """One gradient step on 0.5 * sum(h * w^2) per call: stable below lr = 2 / max(h), explosive above."""
    state = {"w": np.full_like(curvatures, 3.0)}

    def train_fn(lr: float) -> float:
        w = state["w"]
        loss = float(0.5 * np.sum(curvatures * w * w))
        state["w"] = w - lr * curvatures * w
        return loss

    return train_fn


def test_seed_api_range_test_on_a_quadratic_stops_at_divergence_and_suggests_a_stable_lr():
    h = np.linspace(0.1, 2.0, 20)  # stable for lr < 1
    finder = LearningRateFinder(min_lr=1e-4, max_lr=100.0, num_steps=100)
    result = finder.range_test(quadratic_train_fn(h))
    assert set(result) >= {"suggested_lr", "lrs", "losses", "method"}
    assert result["method"] == "min10"
    n = len(result["lrs"])
    assert 10 < n < 100 and "diverged" in result["stop_reason"]
    assert result["lrs"][-1] > 1.0  # it went past the stability limit before stopping
    assert result["lrs"] == sorted(result["lrs"]) and result["lrs"][0] == pytest.approx(1e-4)
    for method, lr in result["suggestions"].items():
        # every rule stays below the divergence point but minimum/2 and the minimum itself: the
        # smoothed minimum lags the raw one, so auto reads them only off a curve that hardly fell (and
        # the minimum itself only for an adaptive optimizer, under HARD_TASK_CAP)
        if method not in ("min2", "min1"):
            assert 1e-4 <= lr < 1.0, method
    assert finder.lrs == result["lrs"] and finder.losses == result["losses"]


def test_seed_api_rules_on_a_known_curve():
    # loss flat, then a sigmoid drop centred at lr=1e-2, then a rise: steepest at 1e-2, minimum near 1e-1
    lrs = np.exp(np.linspace(np.log(1e-6), np.log(10.0), 200))
    x = np.log10(lrs)
    curve = 2.0 - 1.5 / (1 + np.exp(-4 * (x + 2))) + 0.6 * np.clip(x + 1, 0, None) ** 2
    results = {m: None for m in ("steepest", "min10", "valley")}
    for method in results:
        values = iter(curve)
        finder = LearningRateFinder(
            min_lr=1e-6, max_lr=10.0, num_steps=200, method=method, smooth=0.0, diverge_factor=100
        )
        results[method] = finder.range_test(lambda lr, it=values: float(next(it)))
        assert results[method]["method"] == method
    lr_min = lrs[np.argmin(curve)]
    assert results["min10"]["suggested_lr"] == pytest.approx(lr_min / 10, rel=0.05)
    # steepest descent is at 1e-2; the steepest rule's margin moves it left by a tenth of the curve (~0.8 decades)
    assert 1e-3 < results["steepest"]["suggested_lr"] < 1e-2
    # the curve falls all the way from the first kept point (skip_start = 20) to its minimum, so
    # valley lands halfway along that descent in log-LR
    midpoint = math.sqrt(lrs[20] * lr_min)
    assert midpoint / 2 < results["valley"]["suggested_lr"] < midpoint * 2
    assert results["steepest"]["suggestions"] == results["min10"]["suggestions"]


def test_seed_api_fallback_with_fewer_than_ten_points_and_method_aliases():
    finder = LearningRateFinder(min_lr=1e-5, max_lr=1.0, num_steps=5, method="minimum/10")
    result = finder.range_test(lambda lr: 1.0)
    assert result["suggested_lr"] == pytest.approx(1e-4) and result["method"].startswith("fallback")
    assert finder.method == "min10"
    with pytest.raises(ValueError, match="unknown LR finder method"):
        LearningRateFinder(method="fastest")
    with pytest.raises(ValueError, match="min_lr"):
        LearningRateFinder(min_lr=1.0, max_lr=0.1)


def test_smoothing_is_bias_corrected_and_valley_finds_the_longest_descent():
    # no pull towards zero
    assert smooth_losses([5.0, 5.0, 5.0], 0.98) == pytest.approx([5.0, 5.0, 5.0])
    losses = np.array([3, 2.9, 2.5, 2.0, 1.5, 1.0, 0.8, 0.7, 2.0, 0.5])
    # longest strictly decreasing run is 3 → 0.5 (length 9, skipping the 2.0 spike); valley sits a third in
    assert valley_index(losses) == 4


# -- torch mode -------------------------------------------------------------------
def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 16, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + (x[:, 4] > 0.5).long()
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(32, 3),
    )
    return model, batches


def _state_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_torch_range_test_restores_model_optimizer_grads_and_rng():
    model, batches = _problem()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    # one real step first, so the optimizer has moments and the parameters have gradients to protect
    loss = torch.nn.functional.cross_entropy(model(batches[0][0]), batches[0][1])
    loss.backward()
    opt.step()
    model.eval()
    before_model = copy.deepcopy(model.state_dict())
    before_opt = copy.deepcopy(opt.state_dict())
    before_grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()

    finder = LearningRateFinder(min_lr=1e-6, max_lr=10.0, num_steps=80)
    result = finder.range_test(
        model=model, optimizer=opt, batches=batches, loss_fn=torch.nn.functional.cross_entropy
    )

    assert result["num_steps_run"] > 10
    assert 1e-6 <= result["suggested_lr"] <= 10.0
    assert all(1e-6 <= lr <= 10.0 for lr in result["suggestions"].values())
    assert result["losses"][0] > min(result["losses"])  # it learned something along the way
    assert _state_equal(model.state_dict(), before_model)
    assert _state_equal(opt.state_dict(), before_opt)
    assert opt.param_groups[0]["lr"] == 1e-3
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before_grads))
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)


def test_torch_range_test_restores_a_grad_scaler_and_a_loader_generator():
    model, batches = _problem(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before_scaler = copy.deepcopy(scaler.state_dict())

    class Loader:  # a re-iterable loader with its own data-order generator, like runner.data.loader.TensorLoader
        def __init__(self):
            self.generator = torch.Generator().manual_seed(7)

        def __iter__(self):
            for i in torch.randperm(len(batches), generator=self.generator).tolist():
                yield batches[i]

    loader = Loader()
    gen_state = loader.generator.get_state()
    finder = LearningRateFinder(min_lr=1e-5, max_lr=1.0, num_steps=30)
    result = finder.range_test_torch(
        model,
        opt,
        loader,
        torch.nn.functional.cross_entropy,
        scaler=scaler,
        autocast_dtype=torch.bfloat16,
    )
    assert result["num_steps_run"] == 30  # 30 steps from an 8-batch loader: it was re-iterated
    assert scaler.state_dict() == before_scaler
    assert torch.equal(loader.generator.get_state(), gen_state)


def test_divergence_stop_triggers_with_an_absurd_learning_rate():
    model, batches = _problem(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    finder = LearningRateFinder(min_lr=1.0, max_lr=1e8, num_steps=100, smooth=0.9)
    result = finder.range_test_torch(model, opt, batches, torch.nn.functional.cross_entropy)
    assert result["num_steps_run"] < 60
    assert "diverged" in result["stop_reason"] or "non-finite" in result["stop_reason"]
    assert all(math.isfinite(v) for v in result["losses"])


def test_plot_writes_a_readable_png(tmp_path):
    model, batches = _problem(3)
    opt = torch.optim.Adam(model.parameters())
    finder = LearningRateFinder(num_steps=60)
    result = finder.range_test_torch(model, opt, batches, torch.nn.functional.cross_entropy)
    path = finder.plot(tmp_path / "sub" / "lr.png", result)
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # not a blank canvas
    # the legend names every rule as the config spells it (minimum/10, not the internal min10)
    legend = [t.get_text() for t in finder.figure(result).axes[0].get_legend().get_texts()]
    assert any(t.startswith("minimum/10: ") for t in legend) or "minimum/10" in legend[-1], legend
    assert not [t for t in legend if t.startswith(("min10", "min2"))], legend


# -- the runner --------------------------------------------------------------------
def test_mode_lr_find_end_to_end(tmp_path):
    run_dir = tmp_path / "lrf"
    proc = run_cli(
        ["mode=lr_find", "model=cnn", "optimizer=sgd", "lr_find.num_steps=40", "diag=off"],
        tmp_path,
        run_dir=run_dir,
        env=SINGLE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((run_dir / "lr_find.json").read_text())
    # lr_find.method=auto reads SGD's rule: where the loss falls fastest
    assert data["rule"] == "auto" and data["optimizer_family"] == "sgd"
    assert data["method"] == "descent" and len(data["lrs"]) == data["num_steps_run"] <= 40
    assert 1e-7 <= data["suggested_lr"] <= 10
    assert (run_dir / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    # a test that ran to lr=10 without diverging before it found no edge: at most SGD's 0.1 at the
    # digits' batch of 64 (the runner hands the finder its loader's batch size)
    assert data["batch_size"] == 64
    assert data["capped_at"] == (0.1 if data["lrs"][-1] >= 9 else None)
    m = re.search(
        r"suggested lr +(\S+) \(auto for sgd: descent"
        r"(, capped at 0.1 \(no divergence below 9, batch 64\))?; checked by 5 short trials"
        r"; the other rules: valley",
        proc.stdout,
    )
    assert m and float(m.group(1)) == pytest.approx(data["suggested_lr"], rel=1e-2)
    command = re.search(r"train with it +(python -m runner .*)", proc.stdout).group(1)
    assert "model=cnn" in command and "lr_find." not in command and "mode=" not in command
    assert command.endswith(f"optimizer.lr={data['suggested_lr']:.3g}")
    scalars = SummaryReader(str(run_dir)).scalars
    for tag in ("lr_find/loss", "lr_find/smoothed_loss", "lr_find/lr"):
        assert len(scalars[scalars.tag == tag]) == data["num_steps_run"]
    lrs = scalars[scalars.tag == "lr_find/lr"].sort_values("step")["value"].to_numpy()
    assert np.allclose(lrs, data["lrs"], rtol=1e-5)


def test_optimizer_lr_auto_trains_with_the_suggestion(tmp_path):
    run_dir = tmp_path / "auto"
    proc = run_cli(
        [
            "optimizer.lr=auto",
            "lr_find.num_steps=30",
            "trainer.max_epochs=1",
            "diag=off",
            "trainer.log_every_n_steps=1",
        ],
        tmp_path,
        run_dir=run_dir,
        env=SINGLE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((run_dir / "report.json").read_text())
    finder = report["lr_finder"]
    # the default optimizer is Adam: auto reads a fifth of the minimum's LR
    assert finder["rule"] == "auto" and finder["optimizer_family"] == "adaptive"
    assert finder["method"] == "min5" and finder["num_steps_run"] <= 30
    assert (run_dir / "lr_find.png").exists() and (run_dir / "lr_find.json").exists()
    # the finder's event file and the run's, side by side: TensorBoard shows them as one run
    scalars = SummaryReader(str(run_dir)).scalars
    train_lr = scalars[scalars.tag == "train/lr"]["value"].to_numpy()
    assert len(train_lr) and np.allclose(train_lr, finder["suggested_lr"], rtol=1e-6)
    hp = SummaryReader(str(run_dir)).hparams
    assert float(hp[hp.tag == "optimizer.lr"]["value"].iloc[0]) == pytest.approx(
        finder["suggested_lr"]
    )


def test_the_check_trains_each_candidate_and_records_the_pick(tmp_path):
    """lr_find.candidates LRs 3x apart around the curve rule's pick, each a short trial; the lowest
    validation loss is the suggestion, in lr_find.json, the printout and the plot."""
    run_dir = tmp_path / "check"
    proc = run_cli(
        [
            "mode=lr_find",
            "optimizer=sgd",
            "lr_find.num_steps=40",
            "lr_find.candidates=3",
            "lr_find.verify_steps=12",
            "diag=off",
        ],
        tmp_path,
        run_dir=run_dir,
        env=SINGLE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((run_dir / "lr_find.json").read_text())
    verify = data["verify"]
    trials = verify["trials"]
    lrs = [t["lr"] for t in trials]
    # 3 candidates, and up to 3 more when the best sat at an end; all 3x apart, ascending
    assert 3 <= len(trials) <= 6 and verify["steps"] == 12 and verify["metric"] == "val_loss"
    assert np.allclose(np.diff(np.log(lrs)), np.log(3.0))
    assert any(lr == pytest.approx(verify["curve_lr"]) for lr in lrs)  # the rule's pick is one
    assert data["curve_lr"] == verify["curve_lr"]
    # the run is 20 epochs of 20 steps: the 12-step trials are shorter than it
    assert verify["run_steps"] == 400 and verify["truncated"] is True
    alive = [t for t in trials if learned(t, verify["start_score"])]
    assert alive, trials
    for t in alive:  # trained to the end, scored on the validation split
        assert t["steps_run"] == 12 and len(t["losses"]) == 12
        assert t["score"] == t["val_loss"] and 0 <= t["val_acc"] <= 1
        assert t["val_loss"] < verify["start_score"]
    best = pick_trial(trials, verify["start_score"], truncated=True)
    assert best in alive and verify["picked_lr"] == best["lr"]
    # the suggestion: the winner, moved between its neighbours when they bracket it
    suggested = interpolate(trials, best, verify["start_score"])
    assert verify["suggested_lr"] == suggested == data["suggested_lr"]
    assert best["lr"] / 3**0.5 <= suggested <= best["lr"] * 3**0.5
    assert verify["seconds"] > 0 and data["seconds"]["check"] == verify["seconds"]
    assert "checked        val_loss after 12 steps: " in proc.stdout
    m = re.search(r"suggested lr +(\S+) ", proc.stdout)
    assert m and float(m.group(1)) == pytest.approx(suggested, rel=1e-2)
    assert f"suggested {suggested:.3g}" in proc.stdout
    assert (run_dir / "lr_find.png").read_bytes()[:4] == b"\x89PNG"


def test_verify_steps_zero_turns_the_check_off(tmp_path):
    run_dir = tmp_path / "off"
    proc = run_cli(
        ["mode=lr_find", "lr_find.num_steps=30", "lr_find.verify_steps=0", "diag=off"],
        tmp_path,
        run_dir=run_dir,
        env=SINGLE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((run_dir / "lr_find.json").read_text())
    assert "verify" not in data and data["method"] == "min5" and "checked" not in proc.stdout


def _first_steps(r, n: int = 3) -> list[torch.Tensor]:
    """The run's first ``n`` training steps, as the fit takes them: the parameters after."""
    from diag.hooks import FitState
    from diag.lr_finder import cycle_batches

    r.trainer.attach(r.state.model)
    probe = FitState(model=r.state.model, optimizer=r.state.optimizer)
    batches = cycle_batches(r.train_loader)
    for _ in range(n):
        x, y = next(batches)
        r.trainer.training_step(probe, x, y)
    return [p.detach().clone() for p in r.state.model.parameters()]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_check_leaves_model_optimizer_and_data_order_bit_identical(tmp_path, optimizer):
    """After the range test and every trial of the check, the run starts exactly as one that never ran
    them: same weights, optimizer state, RNGs, data order, and so the same first steps."""
    from diag.training_state import capture
    from runner import lr_find
    from runner.train import build

    overrides = [
        "diag=off",
        "model=cnn",  # BatchNorm: its running statistics must come back too
        f"optimizer={optimizer}",
        "optimizer.lr=0.01",
        "lr_find.num_steps=20",
        "lr_find.candidates=3",
        "lr_find.verify_steps=6",
    ]
    checked = build(compose_cfg(overrides, tmp_path), tmp_path / "checked")
    before = capture(checked.model, checked.optimizer, rng=True, generator=checked.state.generator)
    result = lr_find.find(checked)
    assert len(result["verify"]["trials"]) >= 3  # the check ran (more when the best was at an end)
    after = capture(checked.model, checked.optimizer, rng=True, generator=checked.state.generator)
    assert _state_equal(after.model, before.model) and _state_equal(
        after.optimizer, before.optimizer
    )
    assert all(torch.equal(after.rng[k], before.rng[k]) for k in ("torch", "data"))
    assert all(p.grad is None for p in checked.model.parameters()) and checked.model.training
    plain = build(compose_cfg(overrides, tmp_path), tmp_path / "plain")  # same seed, no finder
    for a, b in zip(_first_steps(checked), _first_steps(plain)):
        assert torch.equal(a, b)


def _run_lrs(cfg, lr: float, steps_per_epoch: int, epochs: int) -> list[float]:
    """The LR at each optimizer step of a run of ``cfg``'s schedule from ``lr``, stepped as the loop steps
    it (once a step, or once an epoch): a reference built apart from the check."""
    from omegaconf import OmegaConf

    from runner.schedulers import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    node = OmegaConf.merge(cfg, {"optimizer": {"lr": lr}}).scheduler
    sched = build_scheduler(node, opt, steps_per_epoch, epochs)
    out = []
    for step in range(steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None and (node.interval == "step" or (step + 1) % steps_per_epoch == 0):
            sched.step()
    return out


@pytest.mark.parametrize(
    "schedule", ["cosine", "onecycle", "warmup_cosine", "step", "none", "plateau"]
)
def test_each_trial_is_the_run_in_miniature_on_its_own_schedule(tmp_path, schedule):
    """A trial's LR follows the run's configured schedule compressed into the trial: its step k takes
    the LR the run takes at step k x run steps / trial steps (an epoch schedule proportionally stepped);
    no schedule, or one that moves on a metric (plateau), trials a constant LR. The run after the check
    starts its own schedule from the LR found, as if no trial had run."""
    from runner import lr_find
    from runner.train import build

    overrides = [
        "diag=off",
        "optimizer=sgd",
        "optimizer.lr=auto",
        f"scheduler={schedule}",
        "trainer.max_epochs=4",
        "lr_find.num_steps=20",
        "lr_find.candidates=2",
        "lr_find.verify_steps=8",
    ]
    cfg = compose_cfg(overrides, tmp_path)
    r = build(cfg, tmp_path / schedule)
    verify = json.loads((r.run_dir / "lr_find.json").read_text())["verify"]
    steps_per_epoch = len(r.train_loader)
    assert verify["run_steps"] == 4 * steps_per_epoch and verify["steps"] == 8
    constant = schedule in ("none", "plateau")
    for trial in verify["trials"]:
        assert (trial["schedule"] == "constant") == constant
        if constant:
            expected = [trial["lr"]] * 8
        else:
            run = _run_lrs(cfg, trial["lr"], steps_per_epoch, 4)
            expected = [run[k * len(run) // 8] for k in range(8)]
        assert trial["lrs"][: trial["steps_run"]] == pytest.approx(expected[: trial["steps_run"]])
    found = r.lr_finder["suggested_lr"]
    first = found if constant else _run_lrs(cfg, found, steps_per_epoch, 4)[0]
    assert r.optimizer.param_groups[0]["lr"] == pytest.approx(first)
    if schedule in ("cosine", "warmup_cosine", "step"):  # no trial's initial_lr left behind
        assert r.state.scheduler.base_lrs == pytest.approx([found])
    assert lr_find.schedule_calls("epoch", steps_per_epoch, 2 * steps_per_epoch - 1) == 1
    assert lr_find.schedule_calls("step", steps_per_epoch, 7) == 7


@pytest.mark.parametrize(
    "override, key",
    [
        ("lr_find.method=fastest", "lr_find.method"),
        ("lr_find.min_lr=50", "lr_find.min_lr"),
        ("lr_find.num_steps=3", "lr_find.num_steps"),
        ("lr_find.candidates=0", "lr_find.candidates"),
        ("lr_find.candidates=2.5", "lr_find.candidates"),
        ("lr_find.verify_steps=-1", "lr_find.verify_steps"),
        ("lr_find.verify_steps=many", "lr_find.verify_steps"),
    ],
)
def test_bad_lr_find_config_is_one_line_and_exit_2(tmp_path, override, key):
    proc = run_cli(["mode=lr_find", override], tmp_path, env=SINGLE_THREAD)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0]
    assert "Traceback" not in proc.stderr
