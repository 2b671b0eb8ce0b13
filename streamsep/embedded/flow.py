"""Few-step flow sampling for the mask-parametrised model (x1 prediction, Euler updates).

The state lives in band space: x_t = (1 − t)·noise + t·x1, where x1 is the target's band
features. Each step predicts the clean target x̂1 = σ(logits)·mix per bin, projects it to bands,
and moves the state toward it: x ← x + (x̂1 − x)·dt/(1 − t). The last step lands on x̂1, whose
per-bin form is the output. "midpoint" first moves half a step and predicts again there, at
twice the cost per step.

Inpainting (``known``, the engine's ``--continuity inpaint``): frames whose target is already
known, here the previous window's result on the frames two windows share, are pinned before every
network evaluation to the state that result implies at that flow time, x_t = (1 − t)·noise +
t·known, blended by ``known_weight`` (1 pins, 0 leaves the frame free, values between ramp). The
network then sees the shared frames on the path to the previous answer and conditions the free
frames on it. At t = 0 that state is the noise itself, so with one Euler step inpainting changes
nothing; from two steps on it does, at no extra network cost.
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
    known: mx.array | None = None,
    known_weight: mx.array | None = None,
) -> mx.array:
    """Predicted target features (B, T, n_bins) for mixture features (B, T, n_bins).

    noise: (B, T, state_channels), the initial state; bands: (state_channels, n_bins).
    known: (B, T, state_channels) band-space target to inpaint, with known_weight (T,) in [0, 1]
    saying how firmly each frame is pinned to it (see the module docstring).
    """
    if method not in METHODS:
        raise ValueError(f"unknown ODE method {method!r} for the embedded model; "
                         f"use one of {METHODS}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    b = mix.shape[0]
    if (known is None) != (known_weight is None):
        raise ValueError("known and known_weight go together")
    w = None if known_weight is None else known_weight[None, :, None]

    def pin(x: mx.array, t: float) -> mx.array:
        # At t = 0 the pinned state is the noise, which x already is.
        if w is None or t == 0.0:
            return x
        return x + w * ((1.0 - t) * noise + t * known - x)

    def predict(x: mx.array, t: float) -> mx.array:
        return mx.sigmoid(model(x, mix, mx.full((b,), t), text)) * mix

    x, dt = noise, 1.0 / steps
    for k in range(steps):
        t = k * dt
        x = pin(x, t)
        x1 = predict(x, t)
        if method == "midpoint":
            half = x + (x1 @ bands.T - x) * (0.5 * dt / (1.0 - t))
            x1 = predict(pin(half, t + 0.5 * dt), t + 0.5 * dt)
        if k == steps - 1:
            return x1
        x = x + (x1 @ bands.T - x) * (dt / (1.0 - t))
    raise AssertionError("unreachable")
