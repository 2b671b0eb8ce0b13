import mlx.core as mx
import numpy as np
import pytest

from streamsep.sam_audio.ode import (
    DEFAULT_ODE_OPT,
    METHODS,
    CompiledSteps,
    make_step,
    num_evaluations,
    odeint,
    parse_ode_opt,
    step_size_for,
    step_times,
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


# ---------------------------------------------------------------- compiled, pipelined steps
def test_step_times_follow_the_grid_arithmetic():
    rows = step_times(0.3)
    grid = time_grid(0.3)
    np.testing.assert_array_equal(rows[:, 0], grid[:-1])
    np.testing.assert_array_equal(rows[:, 2], np.diff(grid))
    np.testing.assert_array_equal(rows[:, 3], np.float32(0.5) * np.diff(grid))
    np.testing.assert_array_equal(rows[:, 1], grid[:-1] + rows[:, 3])
    assert rows.dtype == np.float32


def test_on_step_reports_every_step_in_order_after_its_state_exists():
    seen = []
    odeint(lambda t, y: y, mx.ones(3), "midpoint", 0.25, on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]


def test_compiled_steps_trace_once_per_shape_and_read_current_inputs():
    traces = []
    scale = {"w": mx.array(2.0)}

    def field(t, y, bias):
        traces.append(y.shape)
        return scale["w"] * y + bias + t

    steps = CompiledSteps(field, inputs=scale)
    y0, bias = mx.ones((2, 3)), mx.full((2, 3), 0.5)
    for method in METHODS:
        want = odeint(field, y0, method, 0.25, args=(bias,))
        traces.clear()
        for _ in range(3):
            got = odeint(field, y0, method, 0.25, args=(bias,), step=steps(method))
            np.testing.assert_allclose(got, want, rtol=1e-6)
        assert len(traces) == (1 if method == "euler" else 2)  # midpoint: two evaluations
    odeint(field, mx.ones((4,)), "euler", 0.25, args=(mx.ones((4,)),), step=steps("euler"))
    assert traces[-1] == (4,)  # a new shape traces again
    scale["w"] = mx.array(0.0)  # e.g. reloaded weights: seen without a new trace
    got = odeint(field, y0, "euler", 0.5, args=(bias,), step=steps("euler"))
    np.testing.assert_allclose(got, 1 + 0.5 * (0.5 + 0.0) + 0.5 * (0.5 + 0.5), rtol=1e-6)


def test_a_bfloat16_field_keeps_a_float32_state():
    step = make_step(lambda t, y: (y * 0.1).astype(mx.bfloat16), "midpoint")
    y = step(mx.ones((4,)), mx.array(step_times(0.5)[0]))
    assert y.dtype == mx.float32


# ---------------------------------------------------------------- SAMAudio.solve
# The compiled, pipelined solve with the DiT's CPU forms against the path it replaced (per-step
# eager evaluation with the native kernels, t as a Python float), to ≤ 1e-5 in float32.
def _reference_solve(model, cond, noise, method, step_size):
    def field(t, y):
        return model.velocity(
            y, cond.mixture, cond.text_hidden, cond.text_mask, t,
            cond.anchor_ids, cond.anchor_alignment, cond.pad_mask,
        )  # fmt: skip

    grid = time_grid(step_size)
    y = noise
    for i in range(len(grid) - 1):
        t0 = grid[i]
        dt = np.float32(grid[i + 1] - t0)
        if method == "euler":
            y = y + float(dt) * field(float(t0), y)
        else:
            half = np.float32(np.float32(0.5) * dt)
            y_mid = y + field(float(t0), y) * float(half)
            y = y + float(dt) * field(float(np.float32(t0 + half)), y_mid)
        mx.eval(y)
    return y


def _fixture_model():
    import json

    from conftest import FIXTURES
    from safetensors.numpy import load_file

    from streamsep.sam_audio.checkpoint import load_torch_checkpoint
    from streamsep.sam_audio.config import SAMAudioConfig
    from streamsep.sam_audio.model import SAMAudio
    from streamsep.sam_audio.t5 import T5Config

    fixture = FIXTURES / "sam_tiny_a"
    config = SAMAudioConfig.from_dict(json.loads((fixture / "config.json").read_text()))
    t5 = T5Config.from_dict(json.loads((fixture / "t5" / "config.json").read_text()))
    model = SAMAudio(config, t5_config=t5)
    weights = load_torch_checkpoint(fixture / "checkpoint.pt")
    for k, v in load_file(str(fixture / "t5" / "model.safetensors")).items():
        weights["text_encoder." + k] = v
    model.load_checkpoint(weights, source=str(fixture))
    return model


def _random_model():
    from streamsep.sam_audio.config import SAMAudioConfig, preset_dict
    from streamsep.sam_audio.model import SAMAudio
    from streamsep.sam_audio.t5 import T5Config

    d = preset_dict("tiny")
    d["text_encoder"] = {**d["text_encoder"], "dim": 40}
    d["transformer"] = {
        "dim": 72, "n_heads": 6, "n_layers": 3, "context_dim": 72, "out_channels": 256,
        "frequency_embedding_dim": 24, "multiple_of": 8,
    }  # fmt: skip
    t5 = T5Config(d_model=40, d_kv=10, d_ff=64, num_layers=1, num_heads=4, vocab_size=50)
    mx.random.seed(5)
    model = SAMAudio(SAMAudioConfig.from_dict(d), t5_config=t5)
    # The tanh gates start at 0 (no anchor/video contribution); open them so every input counts.
    model.embed_anchors.gate = mx.array([0.7])
    model.align_masked_video.gate = mx.array([-0.4])
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="module", params=["fixture", "random"])
def sam(request):
    model = _fixture_model() if request.param == "fixture" else _random_model()
    rng = np.random.default_rng(6)
    B, T, C = 2, 29, model.config.codebook_dim
    half = rng.standard_normal((B, T, C)).astype(np.float32)
    mixture = mx.array(np.concatenate([half, half], axis=-1))
    L, text_dim = 5, model.config.text_encoder.dim
    hidden = mx.array(rng.standard_normal((B, L, text_dim)).astype(np.float32))
    text_mask = mx.array(np.arange(L)[None] < np.array([[5], [3]]))
    cond = model.conditioning(mixture, (hidden, text_mask), sizes=[29, 22])
    noise = mx.array(rng.standard_normal((B, T, 2 * C)).astype(np.float32))
    return model, cond, noise


@pytest.mark.parametrize("method,step_size", [("euler", 0.25), ("midpoint", 0.3)])
def test_compiled_solve_equals_the_eager_native_path(sam, monkeypatch, method, step_size):
    from streamsep.sam_audio import dit

    model, cond, noise = sam
    monkeypatch.setattr(dit, "COMPUTE_PATH", "native")
    want = np.array(_reference_solve(model, cond, noise, method, step_size))
    monkeypatch.setattr(dit, "COMPUTE_PATH", "auto")  # the CPU forms here
    eager = np.array(model.solve(cond, noise, method, step_size, compiled=False))
    compiled = np.array(model.solve(cond, noise, method, step_size))
    again = np.array(model.solve(cond, noise, method, step_size))  # the kept trace
    assert np.abs(want - noise).max() > 0.1  # the flow moved the state
    for got in (eager, compiled, again):
        assert np.abs(got - want).max() <= 1e-5
    np.testing.assert_array_equal(again, compiled)


def test_a_bfloat16_dit_runs_inside_a_float32_model(sam):
    # What GPUs get by default: the DiT in bfloat16, the rest (and the ODE state) float32.
    model, cond, noise = sam
    want = np.array(model.solve(cond, noise, "euler", 0.5))
    saved = model.transformer.parameters()
    model.transformer.set_dtype(mx.bfloat16)
    try:
        got = model.solve(cond, noise, "euler", 0.5)
    finally:
        model.transformer.update(saved)  # the float32 weights, not bfloat16 ones widened
    assert got.dtype == mx.float32
    err = np.abs(np.array(got) - want).max() / np.abs(want).max()
    assert 0 < err < 0.05
