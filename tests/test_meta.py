"""MAML / FOMAML / Reptile with torch.func: hand-computed inner loops and meta-gradients."""

import pytest
import torch
from torch import nn

from memagent.meta import (
    MAML,
    functional_model,
    inner_adapt,
    maml_loss,
    meta_gradient,
    reptile_direction,
    safeguarded_step,
    sgd_adapt,
)


def _linear(w: float, b: float) -> nn.Linear:
    lin = nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(w)
        lin.bias.fill_(b)
    return lin


def test_inner_loop_equals_manual_sgd_hand_computed():
    # y = w x + b, w=1, b=0, support x=[1,2], y=[3,5], MSE, alpha=0.1.
    # step 1: residual [-2,-3]; dL/dw = mean(2 r x) = -8, dL/db = mean(2 r) = -5 -> w=1.8, b=0.5
    # step 2: residual [-0.7,-0.9]; dL/dw = -2.5, dL/db = -1.6 -> w=2.05, b=0.66
    forward, params = functional_model(_linear(1.0, 0.0))
    x = torch.tensor([[1.0], [2.0]])
    y = torch.tensor([[3.0], [5.0]])
    one = inner_adapt(forward, params, x, y, steps=1, inner_lr=0.1)
    assert one["weight"].item() == pytest.approx(1.8)
    assert one["bias"].item() == pytest.approx(0.5)
    two = inner_adapt(forward, params, x, y, steps=2, inner_lr=0.1)
    # Reusing the first gradient (the tutorial's defect) would give w=2.6, b=1.0.
    assert two["weight"].item() == pytest.approx(2.05)
    assert two["bias"].item() == pytest.approx(0.66)
    # The module itself is untouched.
    assert params["weight"].item() == pytest.approx(1.0)
    assert inner_adapt(forward, params, x, y, steps=0, inner_lr=0.1)["weight"] is params["weight"]


def test_backtracking_halves_a_step_that_would_increase_the_support_loss():
    # Same model and data, alpha=1 (support loss 6.5 at w=1, b=0; gradient (-8, -5)):
    # step alpha   -> w=9,  b=5:    loss 178.5 (up)
    # step alpha/2 -> w=5,  b=2.5:  loss 38.25 (up)
    # step alpha/4 -> w=3,  b=1.25: loss 3.3125 (down) -> taken with >= 2 halvings
    forward, params = functional_model(_linear(1.0, 0.0))
    x = torch.tensor([[1.0], [2.0]])
    y = torch.tensor([[3.0], [5.0]])
    plain = inner_adapt(forward, params, x, y, steps=1, inner_lr=1.0)
    assert (plain["weight"].item(), plain["bias"].item()) == pytest.approx((9.0, 5.0))
    safe = inner_adapt(forward, params, x, y, steps=1, inner_lr=1.0, backtracking=2)
    assert (safe["weight"].item(), safe["bias"].item()) == pytest.approx((3.0, 1.25))
    # one halving is not enough: no step is taken rather than a step uphill
    none = inner_adapt(forward, params, x, y, steps=1, inner_lr=1.0, backtracking=1)
    assert (none["weight"].item(), none["bias"].item()) == pytest.approx((1.0, 0.0))
    # where the full step already decreases the loss, backtracking changes nothing (alpha=0.1 case above)
    two = inner_adapt(forward, params, x, y, steps=2, inner_lr=0.1, backtracking=3)
    assert (two["weight"].item(), two["bias"].item()) == pytest.approx((2.05, 0.66))
    # the support loss never increases over many steps, where plain SGD diverges
    loss = torch.nn.functional.mse_loss
    for steps in range(1, 8):
        adapted = inner_adapt(forward, params, x, y, steps=steps, inner_lr=1.0, backtracking=4)
        assert loss(forward(adapted, x), y) <= 6.5
    assert not loss(forward(inner_adapt(forward, params, x, y, steps=7, inner_lr=1.0), x), y) < 1e6


def test_backtracking_under_vmap_decides_per_task():
    forward, params = functional_model(_linear(1.0, 0.0))
    # alpha = 0.5: stable where the support loss's Hessian has lambda_max < 2 / alpha = 4. Task 0's
    # Hessian [[5, 3], [3, 2]] has lambda_max 6.85 (unstable), task 1's [[0.05, 0.3], [0.3, 2]] 2.05 (stable).
    xs = torch.tensor([[[1.0], [2.0]], [[0.1], [0.2]]])
    ys = torch.tensor([[[3.0], [5.0]], [[3.0], [5.0]]])

    def adapt(x, y):
        return inner_adapt(forward, params, x, y, steps=3, inner_lr=0.5, backtracking=3)

    batched = torch.func.vmap(adapt)(xs, ys)
    for i in range(2):
        single = adapt(xs[i], ys[i])
        for k in params:
            assert torch.allclose(batched[k][i], single[k])
    for i, halved in ((0, True), (1, False)):
        plain = inner_adapt(forward, params, xs[i], ys[i], steps=1, inner_lr=0.5)
        safe = inner_adapt(forward, params, xs[i], ys[i], steps=1, inner_lr=0.5, backtracking=3)
        assert torch.equal(safe["weight"], plain["weight"]) is not halved


def test_safeguarded_step_gradient_flows_through_the_chosen_step():
    forward, params = functional_model(_linear(1.0, 0.0))
    x = torch.tensor([[1.0], [2.0]])
    y = torch.tensor([[3.0], [5.0]])

    def loss_fn(p):
        return torch.nn.functional.mse_loss(forward(p, x), y)

    def after_step(p):
        g, value = torch.func.grad_and_value(loss_fn)(p)
        return safeguarded_step(loss_fn, p, g, value, inner_lr=1.0, halvings=2)["weight"]

    # chosen step alpha/4: w' = w - 0.25 dL/dw with dL/dw = mean(2 (w x + b - y) x),
    # so dw'/dw = 1 - 0.25 * mean(2 x^2) = 1 - 0.25 * 5 = -0.25
    jac = torch.func.jacrev(after_step)({k: v.detach() for k, v in params.items()})
    assert jac["weight"].item() == pytest.approx(-0.25)


def test_sgd_adapt_backtracks_like_inner_adapt():
    forward, params = functional_model(_linear(1.0, 0.0))
    x = torch.tensor([[1.0], [2.0]])
    y = torch.tensor([[3.0], [5.0]])
    for halvings, expected in ((2, (3.0, 1.25)), (1, (1.0, 0.0))):  # the hand-computed cases above
        safe = sgd_adapt(forward, params, x, y, steps=1, inner_lr=1.0, backtracking=halvings)
        assert (safe["weight"].item(), safe["bias"].item()) == pytest.approx(expected)
    a = sgd_adapt(forward, params, x, y, steps=4, inner_lr=1.0, backtracking=3)
    b = inner_adapt(forward, params, x, y, steps=4, inner_lr=1.0, first_order=True, backtracking=3)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_sgd_adapt_equals_first_order_inner_adapt():
    forward, params = functional_model(_linear(1.0, 0.0))
    x = torch.tensor([[1.0], [2.0]])
    y = torch.tensor([[3.0], [5.0]])
    two = sgd_adapt(forward, params, x, y, steps=2, inner_lr=0.1)
    assert two["weight"].item() == pytest.approx(2.05)
    assert two["bias"].item() == pytest.approx(0.66)


def test_adapted_params_change_predictions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1))
    forward, params = functional_model(model)
    x = torch.linspace(-1, 1, 10).unsqueeze(1)
    y = 3.0 * x + 1.0
    before = forward(params, x)
    adapted = inner_adapt(forward, params, x, y, steps=5, inner_lr=0.05)
    after = forward(adapted, x)
    assert not torch.allclose(before, after)
    assert torch.mean((after - y) ** 2) < torch.mean((before - y) ** 2)


def _hand_meta_grads(w, alpha, xs, ys, xq, yq):
    """y = w x (no bias), one inner step; returns (second-order, first-order) dLq/dw."""
    n_s, n_q = len(xs), len(xq)
    g_s = sum(2 * (w * a - b) * a for a, b in zip(xs, ys)) / n_s
    w1 = w - alpha * g_s
    g_q = sum(2 * (w1 * a - b) * a for a, b in zip(xq, yq)) / n_q
    h_s = sum(2 * a * a for a in xs) / n_s
    return (1 - alpha * h_s) * g_q, g_q


def test_second_vs_first_order_meta_gradient_hand_computed():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    forward, params = functional_model(model)
    xs, ys, xq, yq = [1.0, 2.0], [2.0, 3.0], [3.0], [1.0]
    alpha = 0.1
    t = lambda v: torch.tensor(v).reshape(1, -1, 1)  # noqa: E731  (M=1 task, K points, 1 feature)
    so, fo = _hand_meta_grads(0.5, alpha, xs, ys, xq, yq)
    g2, loss2 = meta_gradient(forward, params, t(xs), t(ys), t(xq), t(yq), steps=1, inner_lr=alpha)
    g1, loss1 = meta_gradient(
        forward, params, t(xs), t(ys), t(xq), t(yq), steps=1, inner_lr=alpha, first_order=True
    )
    assert g2["weight"].item() == pytest.approx(so, rel=1e-5)
    assert g1["weight"].item() == pytest.approx(fo, rel=1e-5)
    assert abs(so - fo) > 0.1  # they differ by the Hessian term alpha * H_s * g_q
    assert loss1.item() == pytest.approx(loss2.item())
    # meta_loss + autograd backward gives the same second-order gradient
    loss = maml_loss(forward, params, t(xs), t(ys), t(xq), t(yq), steps=1, inner_lr=alpha)
    (g_auto,) = torch.autograd.grad(loss, [params["weight"]])
    assert g_auto.item() == pytest.approx(so, rel=1e-5)


def test_vmap_over_tasks_equals_loop():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    forward, params = functional_model(model)
    xs, ys = torch.randn(3, 5, 2), torch.randn(3, 5, 1)
    xq, yq = torch.randn(3, 4, 2), torch.randn(3, 4, 1)
    batched, _ = meta_gradient(forward, params, xs, ys, xq, yq, steps=2, inner_lr=0.1)
    looped = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(3):
        g, _ = meta_gradient(
            forward, params, xs[i : i + 1], ys[i : i + 1], xq[i : i + 1], yq[i : i + 1], steps=2, inner_lr=0.1
        )
        for k in looped:
            looped[k] += g[k] / 3
    for k in params:
        torch.testing.assert_close(batched[k], looped[k], rtol=1e-4, atol=1e-6)


def test_reptile_direction_one_step_is_minus_lr_grad():
    forward, params = functional_model(_linear(1.0, 0.0))
    x = torch.tensor([[[1.0], [2.0]]])
    y = torch.tensor([[[3.0], [5.0]]])
    d = reptile_direction(forward, params, x, y, steps=1, inner_lr=0.1)
    assert d["weight"].item() == pytest.approx(0.8)  # -0.1 * (-8)
    assert d["bias"].item() == pytest.approx(0.5)


@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile"])
def test_meta_training_improves_post_adaptation_loss(method):
    """Tasks y = a x with a ~ U[-2, 2]: meta-training lowers the query loss after one inner step."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    # Reptile with one inner step is joint training; it needs several steps to meta-learn.
    steps = 5 if method == "reptile" else 1
    learner = MAML(
        model, torch.optim.Adam(model.parameters(), lr=1e-2), inner_lr=0.1, inner_steps=steps, method=method
    )

    def batch(m):
        a = torch.rand(m, 1, 1, generator=gen) * 4 - 2
        x = torch.rand(m, 10, 1, generator=gen) * 2 - 1
        return x[:, :5], a * x[:, :5], x[:, 5:], a * x[:, 5:]

    eval_batch = batch(50)

    def post_adapt_loss():
        xs, ys, xq, yq = eval_batch
        losses = [
            torch.mean((learner.predict(learner.adapt(xs[i], ys[i], steps=steps), xq[i]) - yq[i]) ** 2).item()
            for i in range(xs.shape[0])
        ]
        return sum(losses) / len(losses)

    before = post_adapt_loss()
    for _ in range(150):
        learner.meta_step(*batch(8))
    after = post_adapt_loss()
    assert after < 0.5 * before


def test_bad_arguments():
    forward, params = functional_model(_linear(1.0, 0.0))
    x = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="steps"):
        inner_adapt(forward, params, x, x, steps=-1, inner_lr=0.1)
    with pytest.raises(ValueError, match="inner_lr"):
        inner_adapt(forward, params, x, x, steps=1, inner_lr=0.0)
    with pytest.raises(ValueError, match="backtracking"):
        inner_adapt(forward, params, x, x, steps=1, inner_lr=0.1, backtracking=-1)
    with pytest.raises(ValueError, match="method"):
        MAML(nn.Linear(1, 1), None, method="sgd")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        functional_model("net")  # type: ignore[arg-type]
