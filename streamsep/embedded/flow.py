"""Few-step flow sampling for the mask-parametrised model (x1 prediction, Euler updates).

The state lives in band space: x_t = (1 − t)·noise + t·x1, where x1 is the target's band
features. Each step predicts the clean target x̂1 = σ(logits)·mix per bin, projects it to bands,
and moves the state toward it: x ← x + (x̂1 − x)·dt/(1 − t). The last step lands on x̂1, whose
per-bin form is the output. "midpoint" first moves half a step and predicts again there, at
twice the cost per step.
"""

from __future__ import annotations

import mlx.core as mx

from streamsep.embedded.model import MaskFlowDiT

METHODS = ("euler", "midpoint")


def sample(
    model: MaskFlowDiT,
    mix: mx.array,
    text: mx.array,
    noise: mx.array,
    bands: mx.array,
    steps: int,
    method: str = "euler",
) -> mx.array:
    """Predicted target features (B, T, n_bins) for mixture features (B, T, n_bins).

    noise: (B, T, state_channels), the initial state; bands: (state_channels, n_bins).
    """
    if method not in METHODS:
        raise ValueError(f"unknown ODE method {method!r} for the embedded model; "
                         f"use one of {METHODS}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    b = mix.shape[0]

    def predict(x: mx.array, t: float) -> mx.array:
        return mx.sigmoid(model(x, mix, mx.full((b,), t), text)) * mix

    x, dt = noise, 1.0 / steps
    for k in range(steps):
        t = k * dt
        x1 = predict(x, t)
        if method == "midpoint":
            x1 = predict(x + (x1 @ bands.T - x) * (0.5 * dt / (1.0 - t)), t + 0.5 * dt)
        if k == steps - 1:
            return x1
        x = x + (x1 @ bands.T - x) * (dt / (1.0 - t))
    raise AssertionError("unreachable")
