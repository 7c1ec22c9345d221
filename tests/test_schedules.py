"""Masking schedules: closed-form derivatives and weights against autograd, end points."""
import math

import pytest
import torch

from dnadiff.diffusion import SCHEDULES, get_schedule

ALL = [("linear", {}), ("cosine", {}), ("polynomial", {"w": 2.5}), ("polynomial", {"w": 0.5}),
       ("geometric", {}), ("geometric", {"sigma_min": 1e-3, "sigma_max": 5.0}), ("loglinear", {"eps": 1e-3})]


@pytest.mark.parametrize("name,kw", ALL)
def test_derivative_and_weight_match_autograd(name, kw):
    s = get_schedule(name, **kw)
    t = torch.linspace(0.02, 0.98, 97, dtype=torch.float64, requires_grad=True)
    a = s.alpha(t)
    (grad,) = torch.autograd.grad(a.sum(), t)
    torch.testing.assert_close(s.dalpha(t.detach()), grad, rtol=1e-9, atol=1e-12)
    expected_w = -grad / (1 - a.detach())
    torch.testing.assert_close(s.weight(t.detach()), expected_w, rtol=1e-8, atol=1e-10)
    assert (s.weight(t.detach()) > 0).all()


@pytest.mark.parametrize("name,kw", ALL)
def test_end_points_and_monotone(name, kw):
    s = get_schedule(name, **kw)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    a = s.alpha(t)
    assert a[0].item() == pytest.approx(1.0, abs=1e-12)
    expected_a1 = kw.get("eps", 0.0) if name == "loglinear" else 0.0
    assert a[-1].item() == pytest.approx(expected_a1, abs=1e-12)
    assert (a[1:] <= a[:-1] + 1e-15).all()


def test_closed_forms():
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    torch.testing.assert_close(get_schedule("linear").weight(t), 1 / t)
    torch.testing.assert_close(get_schedule("polynomial", w=3.0).alpha(t), 1 - t**3)
    torch.testing.assert_close(get_schedule("cosine").alpha(torch.tensor([0.5], dtype=torch.float64)),
                               torch.tensor([1 - math.cos(math.pi / 4)], dtype=torch.float64))
    # MDLM's log-linear has the same 1/t weight as linear, but stops at alpha(1) = eps
    torch.testing.assert_close(get_schedule("loglinear", eps=0.1).weight(t), 1 / t)


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match="linear"):
        get_schedule("bogus")
    assert set(SCHEDULES) == {"linear", "cosine", "polynomial", "geometric", "loglinear"}
