import mlx.core as mx
import numpy as np
import pytest

from streamsep.sam_audio.ode import (
    DEFAULT_ODE_OPT,
    num_evaluations,
    odeint,
    parse_ode_opt,
    step_size_for,
    time_grid,
)


def test_grid_matches_torchdiffeq_for_whole_steps():
    np.testing.assert_array_equal(time_grid(0.25), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(time_grid(0.5), [0, 0.5, 1])
    grid = time_grid(2 / 32)
    assert len(grid) == 17 and grid.dtype == np.float32
    np.testing.assert_array_equal(np.diff(grid), np.float32(1 / 16))


def test_grid_shortens_the_last_step_when_one_over_step_is_not_whole():
    grid = time_grid(0.3)
    np.testing.assert_allclose(grid, [0, 0.3, 0.6, 0.9, 1.0], atol=1e-7)
    assert grid[-1] == 1.0
    np.testing.assert_allclose(np.diff(grid)[-1], 0.1, atol=1e-6)


@pytest.mark.parametrize("bad", [0, 1, 1.0, -0.1, 1.5, float("nan"), "fast"])
def test_step_size_outside_open_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match=r"step_size must be between 0 and 1 \(exclusive\)"):
        parse_ode_opt({"method": "euler", "step_size": bad})


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="ODE method must be one of euler, midpoint"):
        parse_ode_opt({"method": "rk4", "step_size": 0.25})


def test_option_forms():
    assert parse_ode_opt(None) == ("midpoint", DEFAULT_ODE_OPT["step_size"])
    assert parse_ode_opt({"method": "euler", "step_size": 0.25}) == ("euler", 0.25)
    assert parse_ode_opt({"method": "euler", "options": {"step_size": 0.5}}) == ("euler", 0.5)
    assert parse_ode_opt({"method": "euler", "steps": 8}) == ("euler", 0.125)
    assert step_size_for(16) == 1 / 16
    with pytest.raises(ValueError, match="steps must be an integer"):
        step_size_for(1)


def test_evaluation_counts():
    assert num_evaluations("euler", 0.25) == 4
    assert num_evaluations("midpoint", 0.5) == 4
    assert num_evaluations("midpoint", 2 / 32) == 32


def _solve(field, method, step, y0=1.0):
    return float(odeint(field, mx.array([y0], dtype=mx.float32), method, step)[0])


def test_euler_and_midpoint_take_the_textbook_steps():
    # dy/dt = y: euler multiplies by (1 + h), midpoint by (1 + h + h²/2) per step.
    grow = lambda t, y: y  # noqa: E731
    assert _solve(grow, "euler", 0.25) == pytest.approx(1.25**4, rel=1e-6)
    assert _solve(grow, "midpoint", 0.5) == pytest.approx((1 + 0.5 + 0.125) ** 2, rel=1e-6)
    # Uneven grid 0.3/0.3/0.3/0.1.
    expected = (1.3**3) * 1.1
    assert _solve(grow, "euler", 0.3) == pytest.approx(expected, rel=1e-5)


def test_time_is_passed_at_grid_points_and_midpoints():
    # dy/dt = t: euler sums t_k·h (left Riemann sum); midpoint is exact.
    ramp = lambda t, y: mx.full(y.shape, t)  # noqa: E731
    assert _solve(ramp, "euler", 0.25, y0=0.0) == pytest.approx(0.375, abs=1e-7)
    assert _solve(ramp, "midpoint", 0.3, y0=0.0) == pytest.approx(0.5, abs=1e-6)


def test_integration_starts_from_the_given_state():
    still = lambda t, y: mx.zeros_like(y)  # noqa: E731
    noise = mx.random.normal((2, 5, 3), key=mx.random.key(0))
    out = odeint(still, noise, "midpoint", 0.25)
    np.testing.assert_array_equal(np.array(out), np.array(noise))
