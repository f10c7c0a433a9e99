"""dlbook.optim: every optimizer's trajectory against torch.optim's in float64,
the schedules against torch's schedulers, golden numbers, and bad input."""

import math

import pytest
import torch
from torch import nn

import dlbook
from dlbook import optim

O = torch.optim
STEPS = 200
TOL = 1e-10  # float64: the chapter's target is 1e-6


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# parity with torch.optim ----------------------------------------------------------------

PAIRS = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), lambda p, **kw: O.SGD(p, lr=0.1, **kw)),
    "sgd, L2": (lambda p: optim.SGD(p, lr=0.1, weight_decay=0.01),
                lambda p, **kw: O.SGD(p, lr=0.1, weight_decay=0.01, **kw)),
    "momentum": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
                 lambda p, **kw: O.SGD(p, lr=0.05, momentum=0.9, **kw)),
    "nesterov": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                 lambda p, **kw: O.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, **kw)),
    "adagrad": (lambda p: optim.Adagrad(p, lr=0.1), lambda p, **kw: O.Adagrad(p, lr=0.1, **kw)),
    "adagrad, L2": (lambda p: optim.Adagrad(p, lr=0.1, weight_decay=0.01, eps=1e-6),
                    lambda p, **kw: O.Adagrad(p, lr=0.1, weight_decay=0.01, eps=1e-6, **kw)),
    "rmsprop": (lambda p: optim.RMSProp(p, lr=0.01), lambda p, **kw: O.RMSprop(p, lr=0.01, **kw)),
    "rmsprop, alpha": (lambda p: optim.RMSProp(p, lr=0.003, alpha=0.9, weight_decay=0.01),
                       lambda p, **kw: O.RMSprop(p, lr=0.003, alpha=0.9, weight_decay=0.01, **kw)),
    "adam": (lambda p: optim.Adam(p, lr=0.01), lambda p, **kw: O.Adam(p, lr=0.01, **kw)),
    "adam, L2": (lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01),
                 lambda p, **kw: O.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01, **kw)),
    "adamw": (lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1),
              lambda p, **kw: O.AdamW(p, lr=0.01, weight_decay=0.1, **kw)),
    "adamw, default decay": (lambda p: optim.AdamW(p, lr=0.01), lambda p, **kw: O.AdamW(p, lr=0.01, **kw)),
    "amsgrad": (lambda p: optim.AMSGrad(p, lr=0.01), lambda p, **kw: O.Adam(p, lr=0.01, amsgrad=True, **kw)),
    "radam": (lambda p: optim.RAdam(p, lr=0.01), lambda p, **kw: O.RAdam(p, lr=0.01, **kw)),
    "radam, L2": (lambda p: optim.RAdam(p, lr=0.01, betas=(0.9, 0.99), weight_decay=0.01),
                  lambda p, **kw: O.RAdam(p, lr=0.01, betas=(0.9, 0.99), weight_decay=0.01, **kw)),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("foreach", [False, True], ids=["single-tensor", "foreach"])
def test_trajectory_equals_torch_in_float64(name, foreach):
    ours, theirs = PAIRS[name]
    a = optim.parameter_trajectory(ours, steps=STEPS)
    b = optim.parameter_trajectory(lambda p: theirs(p, foreach=foreach), steps=STEPS)
    assert a.shape == b.shape == (STEPS + 1, 131)
    assert a.dtype == torch.float64
    assert (a[-1] - a[0]).abs().max() > 0.1, "the parameters hardly moved: the check would prove little"
    assert (a - b).abs().max().item() < TOL


def test_trajectories_of_different_optimizers_differ():
    """The parity check can fail: a different update gives a different path."""
    a = optim.parameter_trajectory(lambda p: optim.Adam(p, lr=0.01))
    b = optim.parameter_trajectory(lambda p: O.Adam(p, lr=0.01, amsgrad=True))
    c = optim.parameter_trajectory(lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True))
    d = optim.parameter_trajectory(lambda p: optim.SGD(p, lr=0.05, momentum=0.9))
    # both differences are far above the tolerance of the parity check (1e-6)
    assert (a - b).abs().max() > 1e-5 and (c - d).abs().max() > 1e-3


def test_every_named_optimizer_builds_and_steps():
    for name, make in optim.OPTIMIZERS.items():
        path = optim.parameter_trajectory(lambda p: make(p, lr=0.01), steps=5)
        assert torch.isfinite(path).all() and (path[-1] != path[0]).any(), name


def test_float32_matches_torch_closely():
    a = optim.parameter_trajectory(lambda p: optim.Adam(p, lr=0.01), dtype=torch.float32)
    b = optim.parameter_trajectory(lambda p: O.Adam(p, lr=0.01), dtype=torch.float32)
    assert a.dtype == torch.float32 and (a - b).abs().max() < 1e-4


# golden numbers --------------------------------------------------------------------------

def _one_param_steps(make, grads):
    """Apply the given gradients one after another to a single parameter at 1.0."""
    p = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = make([p])
    out = []
    for g in grads:
        p.grad = torch.tensor([float(g)], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def test_golden_sgd_momentum_nesterov():
    assert _one_param_steps(lambda p: optim.SGD(p, lr=0.1), [1, 1]) == pytest.approx([0.9, 0.8])
    # b = 1, then 0.5 * 1 + 1 = 1.5
    assert _one_param_steps(lambda p: optim.SGD(p, lr=0.1, momentum=0.5), [1, 1]) == pytest.approx([0.9, 0.75])
    # nesterov: g + mu b = 1 + 0.5 = 1.5, then 1 + 0.5 * 1.5 = 1.75
    assert _one_param_steps(lambda p: optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True), [1, 1]) == pytest.approx(
        [0.85, 0.675])


def test_golden_adaptive_first_steps():
    # Adagrad: G = 4, step = 0.1 * 2 / 2; then G = 4 + 16, step = 0.1 * 4 / sqrt(20)
    got = _one_param_steps(lambda p: optim.Adagrad(p, lr=0.1, eps=0.0), [2, 4])
    assert got == pytest.approx([0.9, 0.9 - 0.4 / math.sqrt(20)])
    # RMSProp's first step is lr / sqrt(1 - alpha) for any gradient
    got = _one_param_steps(lambda p: optim.RMSProp(p, lr=0.01, alpha=0.99, eps=0.0), [3.0])
    assert got == pytest.approx([1 - 0.01 / math.sqrt(0.01)])
    # Adam's bias-corrected first step is lr * sign(g)
    for g in (1e-3, 5.0, -2.0):
        got = _one_param_steps(lambda p: optim.Adam(p, lr=0.01, eps=0.0), [g])
        assert got == pytest.approx([1 - 0.01 * math.copysign(1, g)])
    # AdamW: decay first, (1 - 0.1 * 0.5) * 1, then the Adam step
    got = _one_param_steps(lambda p: optim.AdamW(p, lr=0.1, weight_decay=0.5, eps=0.0), [1.0])
    assert got == pytest.approx([0.95 - 0.1])
    # RAdam's first steps (rho_t <= 5) are bias-corrected momentum: lr * g
    got = _one_param_steps(lambda p: optim.RAdam(p, lr=0.1), [2.0])
    assert got == pytest.approx([0.8])


def test_amsgrad_never_lets_v_shrink():
    p = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = optim.AMSGrad([p], lr=0.01)
    for g in (10.0, 0.1, 0.1, 0.1):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
    state = opt.state[p]
    assert state["v_max"].item() == pytest.approx(0.001 * 100) and state["v"].item() < state["v_max"].item()


# Lookahead ---------------------------------------------------------------------------------

def _lookahead_reference(params, grad_fn, steps, k, alpha, lr):
    """Lookahead written out with torch.optim.Adam: the paper's Algorithm 1."""
    inner = O.Adam(params, lr=lr)
    slow = [p.detach().clone() for p in params]
    for t in range(1, steps + 1):
        inner.zero_grad()
        grad_fn().backward()
        inner.step()
        if t % k == 0:
            with torch.no_grad():
                for p, s in zip(params, slow):
                    s += alpha * (p - s)
                    p.copy_(s)


def test_lookahead_equals_the_algorithm_written_out():
    a = optim.parameter_trajectory(lambda p: optim.Lookahead(optim.Adam(p, lr=0.01), k=5, alpha=0.5))
    b = optim.parameter_trajectory(lambda p: optim.Lookahead(O.Adam(p, lr=0.01), k=5, alpha=0.5))
    assert (a - b).abs().max() < TOL
    torch.manual_seed(1)
    target = torch.randn(7, dtype=torch.float64)
    x1 = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    x2 = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    opt = optim.Lookahead(optim.Adam([x1], lr=0.05), k=3, alpha=0.3)
    for _ in range(20):
        opt.zero_grad()
        ((x1 - target) ** 4).sum().backward()
        opt.step()
    _lookahead_reference([x2], lambda: ((x2 - target) ** 4).sum(), 20, 3, 0.3, 0.05)
    assert torch.allclose(x1, x2, atol=TOL, rtol=0)


def test_lookahead_with_k1_alpha1_is_the_inner_optimizer():
    a = optim.parameter_trajectory(lambda p: optim.Lookahead(optim.Adam(p, lr=0.01), k=1, alpha=1.0))
    b = optim.parameter_trajectory(lambda p: optim.Adam(p, lr=0.01))
    assert (a - b).abs().max() < TOL


def test_lookahead_steps_back_every_k_steps():
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = optim.Lookahead(optim.SGD([p], lr=1.0), k=2, alpha=0.5)
    path = []
    for _ in range(4):
        p.grad = torch.tensor([-1.0], dtype=torch.float64)  # each fast step moves +1
        opt.step()
        path.append(p.item())
    assert path == [1.0, 1.0, 2.0, 2.0]  # 0 -> 1 -> 2, back to 0 + 0.5 * 2 = 1; 1 -> 2 -> 3, back to 2


def test_lookahead_shares_groups_and_schedules():
    p = torch.zeros(3, requires_grad=True)
    inner = optim.Adam([p], lr=0.1)
    opt = optim.Lookahead(inner)
    assert opt.param_groups is inner.param_groups
    sched = optim.StepDecay(opt, step_size=1, gamma=0.5)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.05)


def test_lookahead_state_dict_resumes_exactly():
    def run(steps, opt=None, p=None):
        torch.manual_seed(0)
        target = torch.randn(5, dtype=torch.float64)
        if p is None:
            p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
            opt = optim.Lookahead(optim.Adam([p], lr=0.05), k=4, alpha=0.5)
        for _ in range(steps):
            opt.zero_grad()
            ((p - target) ** 2).sum().backward()
            opt.step()
        return p, opt

    straight, _ = run(13)
    p, opt = run(7)
    saved = opt.state_dict()
    q = p.detach().clone().requires_grad_(True)
    fresh = optim.Lookahead(optim.Adam([q], lr=0.05), k=4, alpha=0.5)
    fresh.load_state_dict(saved)
    assert fresh.param_groups is fresh.optimizer.param_groups
    resumed, _ = run(6, fresh, q)
    assert torch.allclose(resumed, straight, atol=1e-12, rtol=0)


def test_lookahead_fingerprint_names_the_inner_optimizer():
    from dlbook.fingerprint import describe

    p = torch.zeros(2, requires_grad=True)
    a = describe(optim.Lookahead(optim.Adam([p], lr=0.1)))
    b = describe(optim.Lookahead(optim.SGD([p], lr=0.1)))
    assert a != b and "Adam" in a


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=0), ValueError, "k"), (dict(k=2.0), ValueError, "k"), (dict(alpha=0.0), ValueError, "alpha"),
    (dict(alpha=1.5), ValueError, "alpha"),
])
def test_lookahead_bad_input(kwargs, error, match):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(error, match=match):
        optim.Lookahead(optim.Adam([p]), **kwargs)


def test_lookahead_needs_an_optimizer():
    with pytest.raises(TypeError, match="optimizer"):
        optim.Lookahead([torch.zeros(2, requires_grad=True)])
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="once"):
        optim.Lookahead(optim.Lookahead(optim.Adam([p])))


# our optimizers inside dlbook.fit ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["momentum", "adamw", "lookahead"])
def test_fit_trains_and_resumes_with_our_optimizers(name, native_bf16, tmp_path, capsys):
    def run(epochs):
        torch.manual_seed(0)
        x = torch.randn(64, 5)
        y = (x[:, 0] > 0).long()
        model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
        opt = optim.OPTIMIZERS[name](model.parameters(), lr=0.05 if name == "momentum" else 0.01)
        sched = optim.WarmupCosine(opt, warmup_steps=4, total_steps=40)
        loader = dlbook.data.BatchLoader(x, y, batch_size=16, shuffle=True)
        history = dlbook.fit(model, loader, optimizer=opt, scheduler=sched, epochs=epochs, progress=False,
                             device="cpu", checkpoint=tmp_path / "run.pt", evals={"val": loader})
        return model, history

    model, history = run(10)
    assert history.last["train_loss"] < history[0]["train_loss"]
    again, resumed = run(10)  # the same run: its checkpoint is recognised, nothing is trained
    assert "nothing to train" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


# schedules -----------------------------------------------------------------------------------

def _lrs(make_scheduler, n, lr=0.1):
    p = torch.zeros(1, requires_grad=True)
    opt = O.SGD([p], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("W, T, s, m", [(50, 400, 0.01, 0.01), (1, 10, 0.5, 0.0), (0, 30, 0.1, 0.2), (7, 8, 1.0, 0.0)])
def test_warmup_cosine_equals_torch_sequential(W, T, s, m):
    ours = _lrs(lambda o: optim.WarmupCosine(o, W, T, start_factor=s, min_factor=m), T + 1)
    if W == 0:
        theirs = _lrs(lambda o: O.lr_scheduler.CosineAnnealingLR(o, T_max=T, eta_min=m * 0.1), T + 1)
    else:
        theirs = _lrs(lambda o: O.lr_scheduler.SequentialLR(
            o, [O.lr_scheduler.LinearLR(o, start_factor=s, total_iters=W),
                O.lr_scheduler.CosineAnnealingLR(o, T_max=T - W, eta_min=m * 0.1)], milestones=[W]), T + 1)
    pure = torch.tensor([optim.warmup_cosine(t, 0.1, W, T, s, m * 0.1) for t in range(T + 1)], dtype=torch.float64)
    assert (ours - theirs).abs().max() < 1e-12
    assert torch.equal(ours, pure)


def test_step_decay_equals_torch_steplr():
    ours = _lrs(lambda o: optim.StepDecay(o, step_size=30, gamma=0.5), 200)
    theirs = _lrs(lambda o: O.lr_scheduler.StepLR(o, step_size=30, gamma=0.5), 200)
    assert (ours - theirs).abs().max() < 1e-15


def test_schedule_golden_numbers():
    assert optim.step_decay(0, 0.1, 10) == pytest.approx(0.1)
    assert optim.step_decay(9, 0.1, 10) == pytest.approx(0.1)
    assert optim.step_decay(10, 0.1, 10) == pytest.approx(0.01)
    assert optim.step_decay(25, 1.0, 10, gamma=0.5) == pytest.approx(0.25)
    assert optim.warmup_cosine(0, 1.0, 10, 110, start_factor=0.1) == pytest.approx(0.1)
    assert optim.warmup_cosine(5, 1.0, 10, 110, start_factor=0.1) == pytest.approx(0.55)
    assert optim.warmup_cosine(10, 1.0, 10, 110) == pytest.approx(1.0)
    assert optim.warmup_cosine(60, 1.0, 10, 110, min_lr=0.2) == pytest.approx(0.6)  # halfway: the mean
    assert optim.warmup_cosine(110, 1.0, 10, 110, min_lr=0.2) == pytest.approx(0.2)
    assert optim.warmup_cosine(500, 1.0, 10, 110, min_lr=0.2) == pytest.approx(0.2)  # stays at the end


def test_scheduler_state_dict_round_trip():
    p = torch.zeros(1, requires_grad=True)
    opt = O.SGD([p], lr=1.0)
    sched = optim.WarmupCosine(opt, 5, 50)
    for _ in range(12):
        opt.step()
        sched.step()
    opt2 = O.SGD([p], lr=1.0)
    sched2 = optim.WarmupCosine(opt2, 5, 50)
    sched2.load_state_dict(sched.state_dict())
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())


@pytest.mark.parametrize("fn, args, match", [
    (optim.step_decay, (-1, 0.1, 10), "step"), (optim.step_decay, (1, -0.1, 10), "lr"),
    (optim.step_decay, (1, 0.1, 0), "step_size"), (optim.step_decay, (1.5, 0.1, 10), "step"),
    (optim.warmup_cosine, (0, 0.1, 10, 10), "warmup_steps"), (optim.warmup_cosine, (0, 0.1, 1, 10, 0.0), "start_factor"),
    (optim.warmup_cosine, (0, 0.1, 1, 10, 0.1, 0.5), "min_lr"), (optim.warmup_cosine, (0, 0.1, -1, 10), "warmup_steps"),
    (optim.warmup_cosine, (0, float("nan"), 1, 10), "lr"),
])
def test_schedule_bad_input(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_scheduler_bad_input():
    opt = O.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.WarmupCosine(opt, 10, 5)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepDecay(opt, 0)


# bad input to the optimizers ------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda p: optim.SGD(p, lr=-0.1), "lr"), (lambda p: optim.SGD(p, lr="0.1"), "lr"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=1.0), "momentum"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "nesterov"),
    (lambda p: optim.Adagrad(p, eps=-1.0), "eps"), (lambda p: optim.RMSProp(p, alpha=1.0), "alpha"),
    (lambda p: optim.Adam(p, betas=(0.9,)), "betas"), (lambda p: optim.Adam(p, betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda p: optim.AdamW(p, weight_decay=-1.0), "weight_decay"),
    (lambda p: optim.RAdam(p, lr=float("inf")), "lr"),
])
def test_optimizer_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make([torch.zeros(2, requires_grad=True)])


def test_nesterov_must_be_a_bool():
    with pytest.raises(TypeError, match="nesterov"):
        optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9, nesterov="yes")


def test_sparse_gradients_are_refused():
    emb = nn.Embedding(5, 2, sparse=True)
    opt = optim.Adam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_parameters_without_gradients_are_left_alone():
    a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    assert torch.equal(b, torch.ones(2)) and (a < 1).all()


def test_closure_is_called_and_its_loss_returned():
    p = torch.ones(2, requires_grad=True)
    opt = optim.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(2.0)
    assert torch.allclose(p, torch.full((2,), 0.8))


# surfaces and trajectories -----------------------------------------------------------------------

def test_trajectory_of_gradient_descent_on_a_quadratic():
    path = optim.trajectory(lambda x, y: x**2 + 3 * y**2, lambda p: optim.SGD(p, lr=0.1), 5, start=(1.0, 1.0))
    assert path.shape == (6, 2) and path.dtype == torch.float64
    t = torch.arange(6, dtype=torch.float64)
    assert torch.allclose(path[:, 0], 0.8**t) and torch.allclose(path[:, 1], 0.4**t)


@pytest.mark.parametrize("name", sorted(optim.SURFACES))
def test_surfaces(name):
    s = optim.SURFACES[name]
    X, Y, Z = optim._grid(s, 50)
    assert Z.shape == (50, 50) and torch.isfinite(Z).all()
    for mx, my in s.minima:  # the gradient vanishes at the minima
        p = torch.tensor([mx, my], dtype=torch.float64, requires_grad=True)
        s(p[0], p[1]).backward()
        assert p.grad.abs().max() < 1e-9
        assert s(torch.tensor(mx), torch.tensor(my)) <= Z.min() + 1e-6
    path = optim.trajectory(s, lambda p: optim.Adam(p, lr=0.01), 3)
    assert path.shape == (4, 2) and torch.equal(path[0], torch.tensor(s.start, dtype=torch.float64))


def test_saddle_surface_has_a_saddle_at_the_origin():
    s = optim.SURFACES["saddle"]
    H = optim.hessian(lambda t: s(t[0], t[1]), torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(torch.linalg.eigvalsh(H), torch.tensor([-1.0, 2.0], dtype=torch.float64))


def test_trajectory_bad_input():
    s = optim.SURFACES["saddle"]
    with pytest.raises(ValueError, match="steps"):
        optim.trajectory(s, lambda p: optim.SGD(p, lr=0.1), -1)
    with pytest.raises(ValueError, match="start"):
        optim.trajectory(lambda x, y: x * y, lambda p: optim.SGD(p, lr=0.1), 3)
    with pytest.raises(ValueError, match="start"):
        optim.trajectory(s, lambda p: optim.SGD(p, lr=0.1), 3, start=(1.0, 2.0, 3.0))
    with pytest.raises(TypeError, match="make_optimizer"):
        optim.trajectory(s, "adam", 3)


def test_draw_and_animate():
    import matplotlib.pyplot as plt

    s = optim.SURFACES["rosenbrock"]
    ax = optim.draw_surface(s)
    assert ax.get_title() == s.name and ax.get_xlabel() == "x"
    marks = {line.get_marker(): line for line in ax.lines}
    assert tuple(marks["s"].get_xydata()[0]) == s.start  # the start, as a square
    assert tuple(marks["*"].get_xydata()[0]) == s.minima[0]
    contours = [c for c in ax.collections if c.get_zorder() == 0]
    assert contours and all(marks[m].get_zorder() > 1 for m in "s*")  # marks drawn over paths
    rgba = contours[0].get_edgecolor()
    assert len(rgba) and all(abs(v - 0.8) < 1e-9 for v in rgba[0][:3])  # one light grey
    plt.close(ax.figure)
    paths = {"sgd": optim.trajectory(s, lambda p: optim.SGD(p, lr=1e-3), 20),
             "adam": optim.trajectory(s, lambda p: optim.Adam(p, lr=0.05), 10)}
    saddle = optim.SURFACES["saddle"]
    anim = optim.animate([(s, paths), (saddle, {"sgd": optim.trajectory(saddle, lambda p: optim.SGD(p, lr=0.1), 5)})],
                         frames=5)
    assert len(list(anim.new_frame_seq())) == 5
    lines = anim._func(4)  # the last frame draws every path whole
    assert [len(line.get_xdata()) for line in lines] == [21, 11, 6]
    assert [len(line.get_xdata()) for line in anim._func(0)] == [1, 1, 1]
    one = optim.animate((s, paths), frames=3)  # a single panel needs no list
    assert len(one._func(2)) == 2
    with pytest.raises(ValueError, match="shape"):
        optim.animate([(s, {"bad": torch.zeros(5, 3)})])
    with pytest.raises(ValueError, match="non-empty"):
        optim.animate([(s, {})])
    with pytest.raises(ValueError, match="non-empty"):
        optim.animate([])
    with pytest.raises(TypeError, match="Surface"):
        optim.animate([("rosenbrock", paths)])
    with pytest.raises(TypeError, match="Surface"):
        optim.draw_surface(lambda x, y: x)


# critical points --------------------------------------------------------------------------------

def test_hessian_of_a_quadratic_is_its_matrix():
    A = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, -1.0], [0.0, -1.0, 4.0]], dtype=torch.float64)
    H = optim.hessian(lambda t: 0.5 * t @ A @ t, torch.randn(3, dtype=torch.float64))
    assert torch.allclose(H, A)


def test_the_notes_saddle_one_times_two_weights():
    """L(w1, w2) = (1 - w1 w2)^2 at the origin: eigenvalues -2 and 2, along (1, 1) and (1, -1)."""
    H = optim.hessian(lambda w: (1 - w[0] * w[1]) ** 2, torch.zeros(2, dtype=torch.float64))
    lam, U = torch.linalg.eigh(H)
    assert torch.allclose(lam, torch.tensor([-2.0, 2.0], dtype=torch.float64))
    assert torch.allclose(U[:, 0].abs(), torch.full((2,), 0.5**0.5, dtype=torch.float64))
    assert optim.classify_critical_point(lam) == "saddle point"
    assert optim.minimum_ratio(lam) == 0.5


@pytest.mark.parametrize("lam, kind", [
    ([1.0, 2.0], "local minimum"), ([-1.0, -3.0], "local maximum"), ([-1.0, 2.0], "saddle point"),
    ([0.0, 2.0], "undetermined"), ([0.0, 0.0], "undetermined"), ([1e-12, 5.0], "undetermined"),
    ([-1e-12, 5.0], "undetermined"), ([-1e-3, 0.0, 5.0], "saddle point"),
])
def test_classify_critical_point(lam, kind):
    assert optim.classify_critical_point(torch.tensor(lam, dtype=torch.float64)) == kind


def test_minimum_ratio():
    lam = torch.tensor([-1.0, 0.0, 1e-12, 2.0, 3.0], dtype=torch.float64)
    assert optim.minimum_ratio(lam) == pytest.approx(3 / 5)
    assert optim.minimum_ratio(lam, tol=1e-8) == pytest.approx(2 / 5)


def test_eigenvalue_functions_bad_input():
    with pytest.raises(ValueError, match="vector"):
        optim.classify_critical_point(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="vector"):
        optim.minimum_ratio(torch.zeros(0))
    with pytest.raises(TypeError, match="Tensor"):
        optim.minimum_ratio([1.0, 2.0])
    with pytest.raises(ValueError, match="tol"):
        optim.classify_critical_point(torch.ones(2), tol=-1.0)


def test_mlp_loss_matches_nn_sequential():
    sizes = (3, 5, 4, 2)
    P = optim.mlp_num_params(sizes)
    assert P == 3 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2
    theta = torch.randn(P, dtype=torch.float64)
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    i = 0
    with torch.no_grad():
        for lin in (net[0], net[2], net[4]):
            a, b = lin.in_features, lin.out_features
            lin.weight.copy_(theta[i:i + a * b].view(a, b).T)
            lin.bias.copy_(theta[i + a * b:i + a * b + b])
            i += a * b + b
        expected = torch.nn.functional.mse_loss(net(x), y)
    assert torch.allclose(optim.mlp_loss(theta, x, y, sizes), expected)


def test_mlp_loss_bad_input():
    x, y = torch.randn(4, 2), torch.randn(4, 1)
    with pytest.raises(ValueError, match="theta"):
        optim.mlp_loss(torch.zeros(5), x, y, (2, 3, 1))
    with pytest.raises(ValueError, match=r"x must be"):
        optim.mlp_loss(torch.zeros(13), torch.randn(4, 3), y, (2, 3, 1))
    with pytest.raises(ValueError, match="sizes"):
        optim.mlp_num_params([3])
    with pytest.raises(ValueError, match="size"):
        optim.mlp_num_params([3, 0])


def test_find_critical_point_finds_the_saddle_and_a_minimum():
    saddle = optim.find_critical_point(lambda t: t[0] ** 2 - t[1] ** 2 + t[0] * t[1] / 4,
                                       torch.tensor([0.3, -0.2], dtype=torch.float64))
    assert saddle.abs().max() < 1e-6  # the only critical point: found although it is no minimum
    f = lambda t: (t[0] ** 2 - 1) ** 2 + t[1] ** 2  # noqa: E731 - minima at (+-1, 0), saddle at (0, 0)
    found = optim.find_critical_point(f, torch.tensor([0.8, 0.3], dtype=torch.float64))
    assert torch.allclose(found, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-6)


def test_critical_point_search_records_the_norm_as_it_goes():
    f = lambda t: (t[0] ** 2 - 1) ** 2 + t[1] ** 2 + t[0] * t[1] / 10  # noqa: E731
    start = torch.tensor([0.5, 0.7], dtype=torch.float64)
    r = optim.critical_point_search(f, start, max_iter=40, record_every=10)
    assert r.at_iteration[0] == 0 and r.at_iteration[1:-1] == (10, 20, 30)[:len(r.at_iteration) - 2]
    assert r.iterations <= 40 and r.evaluations >= r.iterations
    p = start.clone().requires_grad_()
    (g0,) = torch.autograd.grad(f(p), p)
    assert r.grad_norms[0] == pytest.approx(g0.norm().item())
    p = r.theta.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(p), p)
    assert r.grad_norm == pytest.approx(g.norm().item(), rel=1e-9, abs=1e-14)  # the last record is at theta
    assert r.grad_norm < 1e-8 and r.stop in ("max_iter", "zero", "no progress")
    assert torch.equal(optim.find_critical_point(f, start, max_iter=40), r.theta)


def test_critical_point_search_at_a_critical_point_stops_at_once():
    r = optim.critical_point_search(lambda t: (t**2).sum(), torch.zeros(3, dtype=torch.float64))
    assert r.stop == "zero" and r.grad_norms == (0.0,) and r.iterations == 0


def test_critical_point_search_ends_at_a_gradient_flat_point():
    # L = a + b^2: the gradient (1, 2b) never vanishes; |g|^2 = 1 + 4 b^2 is least at b = 0,
    # where g = (1, 0) lies along the Hessian's zero-curvature direction
    f = lambda t: t[0] + t[1] ** 2  # noqa: E731
    r = optim.critical_point_search(f, torch.tensor([0.3, 0.8], dtype=torch.float64), max_iter=200,
                                    record_every=10, patience=20)
    assert r.stop in ("no progress", "stalled") and r.iterations < 200
    assert r.grad_norm == pytest.approx(1.0, abs=1e-6)  # no critical point: the search stalls at |g| = 1
    flat = optim.gradient_flatness(f, r.theta)
    assert flat.grad_norm == pytest.approx(1.0, abs=1e-6)
    assert flat.flat_share == pytest.approx(1.0, abs=1e-9) and flat.relative_curvature < 1e-5


def test_gradient_flatness_golden_numbers():
    # L = t0^2 + t1 + t2^2 / 2 at (1, 0, 0): g = (2, 1, 0), H = diag(2, 0, 1), Hg = (4, 0, 0)
    f = lambda t: t[0] ** 2 + t[1] + t[2] ** 2 / 2  # noqa: E731
    flat = optim.gradient_flatness(f, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert flat.grad_norm == pytest.approx(5**0.5)
    assert flat.relative_curvature == pytest.approx(4 / (2 * 5**0.5))
    assert flat.flat_share == pytest.approx(1 / 5)  # the part of |g|^2 along the zero eigenvalue
    # at (1, 0, 1): g = (2, 1, 1); with tol = 0.5 the eigenvalue 1 (= 0.5 * 2) counts as flat too
    wide = optim.gradient_flatness(f, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), tol=0.5)
    narrow = optim.gradient_flatness(f, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    assert wide.flat_share == pytest.approx(2 / 6) and narrow.flat_share == pytest.approx(1 / 6)
    assert wide.relative_curvature == pytest.approx(17**0.5 / (2 * 6**0.5))


def test_critical_point_search_and_flatness_bad_input():
    f = lambda t: (t**2).sum()  # noqa: E731
    with pytest.raises(ValueError, match="multiple of record_every"):
        optim.critical_point_search(f, torch.ones(2, dtype=torch.float64), patience=15, record_every=10)
    with pytest.raises(ValueError, match="record_every"):
        optim.critical_point_search(f, torch.ones(2, dtype=torch.float64), record_every=0)
    with pytest.raises(ValueError, match="min_decrease"):
        optim.critical_point_search(f, torch.ones(2, dtype=torch.float64), min_decrease=2.0)
    with pytest.raises(ValueError, match="flat"):
        optim.gradient_flatness(f, torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="exactly zero"):
        optim.gradient_flatness(f, torch.zeros(2, dtype=torch.float64))


def test_hessian_bad_input():
    with pytest.raises(ValueError, match="flat"):
        optim.hessian(lambda t: (t**2).sum(), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="loss_fn"):
        optim.hessian(3, torch.zeros(2))
    with pytest.raises(ValueError, match="floating"):
        optim.hessian(lambda t: t.sum(), torch.zeros(2, dtype=torch.long))


def test_parameter_trajectory_bad_input():
    with pytest.raises(ValueError, match="steps"):
        optim.parameter_trajectory(lambda p: optim.SGD(p, lr=0.1), steps=0)
    with pytest.raises(ValueError, match="dtype"):
        optim.parameter_trajectory(lambda p: optim.SGD(p, lr=0.1), dtype=torch.long)


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with optim.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with optim.one_thread():
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_stall_points_finds_a_plateau_and_counts_it_once():
    # run 0 sits on the saddle at x = 0 for good; run 1 reaches the valley
    # x = 1 fast and then crawls along the shallow y direction
    loss_fn = lambda t: (t[0] ** 2 - 1) ** 2 / 4 + 1e-5 * t[1] ** 2  # noqa: E731
    thetas = torch.tensor([[0.0, 1.0], [3.0, 1.0]], dtype=torch.float64)  # (R, P)
    stalls = optim.stall_points(loss_fn, thetas, steps=3000, lr=0.1, every=50, window=500)
    assert all(s["theta"].shape == (2,) for s in stalls)
    on_saddle = [s for s in stalls if s["run"] == 0]
    assert len(on_saddle) == 1  # counted once, although it never leaves
    assert on_saddle[0]["step"] == 0 and on_saddle[0]["loss"] == pytest.approx(0.25 + 1e-5, rel=1e-9)
    in_valley = [s for s in stalls if s["run"] == 1]
    assert len(in_valley) == 1 and in_valley[0]["loss"] < 1.1e-5
    assert abs(in_valley[0]["theta"][0] - 1) < 1e-3


def test_stall_points_bad_input():
    f = lambda t: (t**2).sum()  # noqa: E731
    with pytest.raises(ValueError, match=r"\(R, P\)"):
        optim.stall_points(f, torch.zeros(3), 10, 0.1)
    with pytest.raises(ValueError, match="multiple"):
        optim.stall_points(f, torch.zeros(2, 3), 10, 0.1, every=30, window=100)
    with pytest.raises(ValueError, match="lr"):
        optim.stall_points(f, torch.zeros(2, 3), 10, -0.1)


def test_top_hessian_eigenvalue_of_a_linear_classifier():
    """For a linear model the Hessian of the cross-entropy is known in closed form."""
    torch.manual_seed(0)
    x = torch.randn(50, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (50,))
    model = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        model.weight.mul_(0.1)
    w = model.weight.detach().clone()

    def loss(flat):
        return torch.nn.functional.cross_entropy(x @ flat.view(2, 3).T, y)

    H = optim.hessian(loss, w.flatten())
    exact = torch.linalg.eigvalsh(H).max().item()
    found = optim.top_hessian_eigenvalue(model, x, y, max_iters=500, tol=1e-6)
    assert found.converged and found.residual <= 1e-6 and found.iterations <= 500
    assert found.eigenvalue == pytest.approx(exact, rel=1e-6) and float(found) == found.eigenvalue
    assert len(found.history) == found.iterations and found.history[-1] == found.eigenvalue
    assert model.training  # the mode is restored
    rough = optim.top_hessian_eigenvalue(model, x, y, max_iters=2, tol=0.0)
    assert not rough.converged and rough.iterations == 2


def test_power_iteration_finds_the_eigenvalue_largest_in_magnitude():
    A = torch.diag(torch.tensor([-3.0, 2.0, 1.0, 0.5], dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    A = Q @ A @ Q.T  # the same eigenvalues, no longer on the axes
    found = optim.power_iteration(lambda v: A @ v, torch.ones(4, dtype=torch.float64), max_iters=1000, tol=1e-9)
    assert found.converged and found.eigenvalue == pytest.approx(-3.0, rel=1e-9)  # negative: largest |lambda|
    # the residual bounds the distance to the nearest eigenvalue
    for tol in (1e-1, 1e-2):
        rough = optim.power_iteration(lambda v: A @ v, torch.ones(4, dtype=torch.float64), tol=tol)
        assert rough.converged and rough.residual <= tol
        assert abs(rough.eigenvalue + 3.0) <= rough.residual * abs(rough.eigenvalue) + 1e-12
    # a start in the null space: A v = 0 gives the eigenvalue 0 at once
    null = optim.power_iteration(lambda v: torch.zeros_like(v), torch.ones(3))
    assert null.converged and null.eigenvalue == 0.0 and null.iterations == 1


def test_power_iteration_bad_input():
    with pytest.raises(ValueError, match="non-zero vector"):
        optim.power_iteration(lambda v: v, torch.zeros(3))
    with pytest.raises(ValueError, match="non-zero vector"):
        optim.power_iteration(lambda v: v, torch.ones(2, 2))
    with pytest.raises(ValueError, match="same shape"):
        optim.power_iteration(lambda v: v[:2], torch.ones(3))
    with pytest.raises(TypeError, match="matvec"):
        optim.power_iteration("A", torch.ones(3))
    with pytest.raises(ValueError, match="max_iters"):
        optim.power_iteration(lambda v: v, torch.ones(3), max_iters=0)


def test_top_hessian_eigenvalue_bad_input():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="y must be"):
        optim.top_hessian_eigenvalue(model, torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="model"):
        optim.top_hessian_eigenvalue("model", torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


# what a step costs ---------------------------------------------------------------------------------

def _eight_params(n=800):
    params = [torch.zeros(n // 8, requires_grad=True) for _ in range(8)]
    for p in params:
        p.grad = torch.randn(n // 8)
    return params


def test_step_op_calls_counts_the_top_level_operators(capfd):
    ours = optim.Adam(_eight_params(), lr=1e-3)
    theirs = O.Adam(_eight_params(), lr=1e-3, foreach=True)
    ours.step()
    theirs.step()
    a, b = optim.step_op_calls(ours), optim.step_op_calls(theirs)
    assert all(name.startswith("aten::") for name in a) and sum(a.values()) % 8 == 0
    assert sum(a.values()) > sum(b.values())
    assert any(name.startswith("aten::_foreach") for name in b)
    assert "USDT" not in capfd.readouterr().err  # the profiler stays quiet


def test_step_op_calls_inside_shows_the_cpu_loop_behind_foreach():
    """On a CPU a _foreach_ operator calls the per-tensor operator once per tensor."""
    theirs = O.Adam(_eight_params(), lr=1e-3, foreach=True)
    theirs.step()
    top, inner = optim.step_op_calls(theirs), optim.step_op_calls(theirs, inside=True)
    assert top["aten::_foreach_addcdiv_"] == 1
    assert inner["aten::addcdiv_"] == 8
    assert not any(name.startswith("aten::_foreach") for name in inner)
    default = O.Adam(_eight_params(), lr=1e-3)  # on a CPU: the single-tensor loop
    single = O.Adam(_eight_params(), lr=1e-3, foreach=False)
    default.step()
    single.step()
    assert optim.step_op_calls(default) == optim.step_op_calls(single)


def test_step_op_calls_rejects_what_is_not_an_optimizer():
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        optim.step_op_calls(lambda: None)
    with pytest.raises(TypeError, match="inside"):
        optim.step_op_calls(O.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), inside="yes")


# bad input that used to reach PyTorch's internals (found in review) ------------------------

def test_functions_that_take_a_factory_check_what_it_returns():
    s = optim.SURFACES["saddle"]
    with pytest.raises(TypeError, match="make_optimizer"):
        optim.trajectory(s, lambda p: None, 3)
    with pytest.raises(TypeError, match="make_optimizer"):
        optim.parameter_trajectory(lambda p: "adam", steps=2)


def test_losses_must_be_scalars():
    with pytest.raises(ValueError, match="scalar"):
        optim.trajectory(lambda x, y: torch.stack([x, y]), lambda p: optim.SGD(p, lr=0.1), 3, start=(1.0, 2.0))
    with pytest.raises(ValueError, match="scalar"):
        optim.hessian(lambda t: 2 * t, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="scalar"):
        optim.stall_points(lambda t: 2 * t, torch.zeros(2, 3, dtype=torch.float64), 10, 0.1)
    with pytest.raises(ValueError, match="twice differentiable"):
        optim.find_critical_point(lambda t: t.sum(), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="flat"):
        optim.find_critical_point(lambda t: (t**2).sum(), torch.zeros(2, 2, dtype=torch.float64))


def test_eigenvalues_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        optim.minimum_ratio(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="finite"):
        optim.classify_critical_point(torch.tensor([float("inf"), -1.0]))


def test_top_hessian_eigenvalue_needs_integer_labels():
    with pytest.raises(TypeError, match="integer class indices"):
        optim.top_hessian_eigenvalue(nn.Linear(2, 3), torch.zeros(4, 2), torch.zeros(4))


def test_animate_needs_pairs():
    with pytest.raises(ValueError, match="pair"):
        optim.animate([optim.SURFACES["saddle"]])
