"""Fixed-grid ODE solvers for SAM-Audio's flow: t runs 0 → 1 starting from the noise itself.

The reference integrates with torchdiffeq's fixed-grid ``euler`` / ``midpoint`` and
``options={"step_size": s}``. torchdiffeq builds the grid in the dtype of ``t`` (float32 there):
``n = ceil((t1 - t0) / s + 1)`` points at ``t0 + k·s``, then forces the last point to ``t1``; so
when 1/s is not an integer the final step is shorter (s = 0.3 → steps 0.3, 0.3, 0.3, 0.1). Each
step's dt is the float32 difference of neighbouring grid points; midpoint evaluates at
``t0 + dt/2``. Reproducing that arithmetic in float32 keeps us on the reference's exact times.

A step is a pure function of arrays (``make_step``): the times come in as a float32 array and
whatever the field needs besides t and y as extra arguments, so ``mx.compile`` traces it once per
shape and every later step, and every later solve of the same shape, replays that trace
(``CompiledSteps``). ``odeint`` keeps one step in flight: step k+1 is queued with
``mx.async_eval`` before waiting for step k, so building the next graph overlaps the compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import mlx.core as mx
import numpy as np

METHODS = ("euler", "midpoint")

#: The reference's default: 16 midpoint steps (32 model evaluations).
DEFAULT_ODE_OPT: dict[str, Any] = {"method": "midpoint", "step_size": 2 / 32}

#: field(t, y, *args) → dy/dt; t is a float32 scalar array.
VectorField = Callable[..., mx.array]
#: step(y, times, *args) → y after one step; times = float32 [t0, t_mid, dt, dt / 2].
StepFn = Callable[..., mx.array]


def validate_step_size(step_size: float) -> float:
    """Return ``step_size`` as a float, or raise ValueError when it is outside (0, 1)."""
    try:
        value = float(step_size)
    except (TypeError, ValueError):
        value = math.nan
    if not (0.0 < value < 1.0):
        raise ValueError(
            f"step_size must be between 0 and 1 (exclusive), e.g. 2/32 for 16 steps; "
            f"got {step_size!r}"
        )
    return value


def validate_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"ODE method must be one of {', '.join(METHODS)}; got {method!r}")
    return method


def step_size_for(steps: int) -> float:
    """The step size that gives ``steps`` solver steps on [0, 1] (16 → 1/16)."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 2:
        raise ValueError(f"steps must be an integer ≥ 2 (step_size = 1/steps < 1); got {steps!r}")
    return 1.0 / int(steps)


def parse_ode_opt(ode_opt: Mapping[str, Any] | None) -> tuple[str, float]:
    """(method, step_size) from mlx-audio's flat ``{"method", "step_size"}`` or the reference's
    ``{"method", "options": {"step_size"}}`` form; None gives the reference default."""
    if ode_opt is None:
        ode_opt = DEFAULT_ODE_OPT
    if not isinstance(ode_opt, Mapping):
        raise ValueError(
            f"ode_opt must be a dict like {{'method': 'midpoint', 'step_size': 2/32}}; "
            f"got {type(ode_opt).__name__}"
        )
    method = ode_opt.get("method", DEFAULT_ODE_OPT["method"])
    options = ode_opt.get("options") or {}
    step_size = ode_opt.get("step_size", options.get("step_size"))
    if step_size is None:
        if "steps" in ode_opt:
            step_size = step_size_for(ode_opt["steps"])
        else:
            step_size = DEFAULT_ODE_OPT["step_size"]
    return validate_method(method), validate_step_size(step_size)


def time_grid(step_size: float, t0: float = 0.0, t1: float = 1.0) -> np.ndarray:
    """torchdiffeq's fixed grid for ``step_size`` on [t0, t1], float32."""
    step_size = validate_step_size(step_size)
    start, end = np.float32(t0), np.float32(t1)
    span = np.float32(end - start)
    n = int(np.ceil(np.float32(span / np.float32(step_size)) + np.float32(1)))
    grid = np.arange(n, dtype=np.float32) * np.float32(step_size) + start
    grid[-1] = end
    return grid


def num_evaluations(method: str, step_size: float) -> int:
    """How many vector-field evaluations one solve costs."""
    steps = len(time_grid(step_size)) - 1
    return steps * (2 if validate_method(method) == "midpoint" else 1)


def step_times(step_size: float) -> np.ndarray:
    """(steps, 4) float32 rows [t0, t_mid, dt, dt / 2] of torchdiffeq's grid, in its arithmetic:
    dt = t1 - t0 and t_mid = t0 + float32(dt / 2), each rounded to float32."""
    grid = time_grid(step_size)
    t0, dt = grid[:-1], (grid[1:] - grid[:-1]).astype(np.float32)
    half = (np.float32(0.5) * dt).astype(np.float32)
    return np.stack([t0, (t0 + half).astype(np.float32), dt, half], axis=1).astype(np.float32)


def make_step(field: VectorField, method: str) -> StepFn:
    """One ``method`` step of dy/dt = field(t, y, *args) as a pure function of arrays.

    The update runs in float32 at least (``times`` is float32) and is rounded back to the
    state's dtype, so a float32 state keeps its precision when the field runs in bfloat16."""
    validate_method(method)

    if method == "euler":

        def euler(y: mx.array, times: mx.array, *args: Any) -> mx.array:
            return (y + times[2] * field(times[0], y, *args)).astype(y.dtype)

        return euler

    def midpoint(y: mx.array, times: mx.array, *args: Any) -> mx.array:
        y_mid = (y + field(times[0], y, *args) * times[3]).astype(y.dtype)
        return (y + times[2] * field(times[1], y_mid, *args)).astype(y.dtype)

    return midpoint


class CompiledSteps:
    """``mx.compile``'d steps of one vector field, per method and any extra ``key`` (a device, a
    compute path: whatever the trace bakes in), kept so that later solves replay the trace.

    ``inputs`` are arrays the field reads besides its arguments (a model's parameters, as
    ``model.state``): the trace reads their current values, so loading new weights is seen. A
    trace is per input shape (exp in the DiT's CPU forms bit-casts, which a shapeless trace
    cannot), so each new window length traces once."""

    def __init__(self, field: VectorField, inputs: Any = None):
        self.field = field
        self.inputs = inputs
        self._steps: dict[Any, StepFn] = {}

    def __call__(self, method: str, key: Any = None) -> StepFn:
        step = self._steps.get((method, key))
        if step is None:
            step = mx.compile(make_step(self.field, method), inputs=self.inputs)
            self._steps[(method, key)] = step
        return step


def odeint(
    field: VectorField,
    y0: mx.array,
    method: str = "midpoint",
    step_size: float = 2 / 32,
    on_step: Callable[[int, int], None] | None = None,
    *,
    args: tuple[Any, ...] = (),
    step: StepFn | None = None,
) -> mx.array:
    """Integrate dy/dt = field(t, y, *args) from t = 0 to 1 on torchdiffeq's fixed grid; returns
    y(1).

    ``field`` gets t as a float32 scalar array. ``step`` is ``make_step(field, method)`` or a
    compiled one (``CompiledSteps``); by default the uncompiled step. ``on_step(i, n)`` is called
    after each step (progress bars, cache clearing) once that step's state is evaluated; by
    then step i + 1 is already queued.
    """
    validate_method(method)
    times = step_times(step_size)
    n = len(times)
    step = step or make_step(field, method)
    y = y0
    for i in range(n):
        previous = y
        y = step(y, mx.array(times[i]), *args)
        mx.async_eval(y)
        if i > 0:
            mx.eval(previous)
            if on_step is not None:
                on_step(i - 1, n)
    mx.eval(y)
    if on_step is not None:
        on_step(n - 1, n)
    return y
