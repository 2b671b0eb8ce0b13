"""Fixed-grid ODE solvers for SAM-Audio's flow: t runs 0 → 1 starting from the noise itself.

The reference integrates with torchdiffeq's fixed-grid ``euler`` / ``midpoint`` and
``options={"step_size": s}``. torchdiffeq builds the grid in the dtype of ``t`` (float32 there):
``n = ceil((t1 - t0) / s + 1)`` points at ``t0 + k·s``, then forces the last point to ``t1``; so
when 1/s is not an integer the final step is shorter (s = 0.3 → steps 0.3, 0.3, 0.3, 0.1). Each
step's dt is the float32 difference of neighbouring grid points; midpoint evaluates at
``t0 + dt/2``. Reproducing that arithmetic in float32 keeps us on the reference's exact times.
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

VectorField = Callable[[float, mx.array], mx.array]


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


def odeint(
    field: VectorField,
    y0: mx.array,
    method: str = "midpoint",
    step_size: float = 2 / 32,
    on_step: Callable[[int, int], None] | None = None,
) -> mx.array:
    """Integrate dy/dt = field(t, y) from t = 0 to 1 on torchdiffeq's fixed grid; returns y(1).

    ``field`` gets t as a Python float holding a float32 value. ``on_step(i, n)`` is called after
    each step (progress bars, cache clearing); each step's state is evaluated before it.
    """
    validate_method(method)
    grid = time_grid(step_size)
    n = len(grid) - 1
    y = y0
    for i in range(n):
        t0 = grid[i]
        dt = np.float32(grid[i + 1] - t0)
        if method == "euler":
            y = y + float(dt) * field(float(t0), y)
        else:
            half = np.float32(np.float32(0.5) * dt)
            y_mid = y + field(float(t0), y) * float(half)
            y = y + float(dt) * field(float(np.float32(t0 + half)), y_mid)
        mx.eval(y)
        if on_step is not None:
            on_step(i, n)
    return y
