"""Window geometry: what the model sees, what is emitted, and the latency that follows.

Every length is a whole number of latent frames (``frame_hop`` samples) so that latent frames line
up across windows and position-seeded noise covers the same frames in every window.

Window k ends at input position ``end_k = first_end + k * hop`` ("now" when it runs) and covers
``[end_k - window, end_k)``. It emits ``[end_k - lookahead - crossfade - hop, end_k - lookahead -
crossfade)``; the ``crossfade`` samples after that are its tail, blended into the next window's
head. The lookahead samples are right context: seen by the model, not yet emitted. The oldest
sample of an emitted block has waited ``hop + lookahead + crossfade`` when its window runs, so the
engine plays every sample exactly that algorithmic latency (plus the compute budget and the
device) after it arrived. The first window ends at ``hop + lookahead + crossfade`` and is padded
on the left with silence, so output starts after the algorithmic latency, not after a window.

Two more choices travel with the plan because the worker applies them at every window boundary:
``continuity``, how consecutive windows are kept consistent on the frames they share
(``CONTINUITY_SCHEMES``, see ``streamsep.engine.worker``), and ``crossfade_shape``
(``streamsep.engine.crossfade``). Neither changes the latency.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Defaults, in seconds. W = 10 s is what SAM-Audio was trained on. H = 2 s leaves a 10 s window
#: 2 s of compute per window (RTF <= 1 at 5x the per-second cost of a single pass); R = 1 s keeps
#: the emitted audio away from the window's right edge, where separation is worst; X = 0.4 s hides
#: the seam between windows (ten 40 ms frames).
DEFAULT_WINDOW_S = 10.0
DEFAULT_HOP_S = 2.0
DEFAULT_LOOKAHEAD_S = 1.0
DEFAULT_CROSSFADE_S = 0.4
MAX_WINDOW_S = 120.0
#: "independent": fresh noise per window (mlx-audio's scheme); "position": noise keyed by latent
#: frame, so overlapping windows start from the same noise; "inpaint": "position" plus, for a
#: separator that supports it, the shared frames of the flow state pinned to the previous
#: window's result at every ODE step (falls back to "position" for one that does not).
CONTINUITY_SCHEMES = ("independent", "position", "inpaint")
DEFAULT_CONTINUITY = "position"
CROSSFADE_SHAPES = ("amplitude", "power")
DEFAULT_CROSSFADE_SHAPE = "amplitude"


class PlanError(ValueError):
    """An impossible window geometry; the message names the knob and the fix."""


@dataclass(frozen=True)
class WindowPlan:
    sample_rate: int
    frame_hop: int
    window_frames: int
    hop_frames: int
    lookahead_frames: int
    crossfade_frames: int
    continuity: str = DEFAULT_CONTINUITY
    crossfade_shape: str = DEFAULT_CROSSFADE_SHAPE

    @classmethod
    def from_seconds(
        cls,
        sample_rate: int,
        frame_hop: int,
        window: float = DEFAULT_WINDOW_S,
        hop: float = DEFAULT_HOP_S,
        lookahead: float = DEFAULT_LOOKAHEAD_S,
        crossfade: float = DEFAULT_CROSSFADE_S,
        *,
        continuity: str = DEFAULT_CONTINUITY,
        crossfade_shape: str = DEFAULT_CROSSFADE_SHAPE,
    ) -> WindowPlan:
        """Round each length to the nearest whole latent frame and validate the result."""
        if sample_rate <= 0 or frame_hop <= 0:
            raise PlanError("the separator reports a non-positive sample rate or frame hop")
        frame_s = frame_hop / sample_rate
        values = {"--window": window, "--hop": hop, "--lookahead": lookahead,
                  "--crossfade": crossfade}
        for name, v in values.items():
            if v is None or v != v or v in (float("inf"), float("-inf")):
                raise PlanError(f"{name} must be a finite number of seconds")
            if v < 0:
                raise PlanError(f"{name} must not be negative (got {v} s)")
        if window > MAX_WINDOW_S:
            raise PlanError(f"--window {window} s is too long: use at most {MAX_WINDOW_S:g} s")
        frames = {k: int(round(v / frame_s)) for k, v in values.items()}
        plan = cls(sample_rate, frame_hop, frames["--window"], frames["--hop"],
                   frames["--lookahead"], frames["--crossfade"], continuity, crossfade_shape)
        plan.validate()
        return plan

    def validate(self) -> None:
        f = self.frame_hop / self.sample_rate
        if self.continuity not in CONTINUITY_SCHEMES:
            raise PlanError(f"--continuity must be one of {', '.join(CONTINUITY_SCHEMES)} "
                            f"(got {self.continuity!r})")
        if self.crossfade_shape not in CROSSFADE_SHAPES:
            raise PlanError(f"--crossfade-shape must be one of {', '.join(CROSSFADE_SHAPES)} "
                            f"(got {self.crossfade_shape!r})")
        if self.hop_frames < 1:
            raise PlanError(f"--hop must be at least one latent frame ({f * 1000:g} ms)")
        if self.window_frames < 1:
            raise PlanError(f"--window must be at least one latent frame ({f * 1000:g} ms)")
        if self.lookahead_frames < 0 or self.crossfade_frames < 0:
            raise PlanError("--lookahead and --crossfade must not be negative")
        if self.crossfade_frames > self.hop_frames:
            raise PlanError(
                f"--crossfade ({self.crossfade_frames * f:g} s) must not exceed --hop "
                f"({self.hop_frames * f:g} s): shorten the crossfade or lengthen the hop")
        need = self.hop_frames + self.lookahead_frames + self.crossfade_frames
        if need > self.window_frames:
            raise PlanError(
                f"--hop + --lookahead + --crossfade ({need * f:g} s) must not exceed --window "
                f"({self.window_frames * f:g} s): lower them or raise --window")

    # Lengths in samples.
    @property
    def window(self) -> int:
        return self.window_frames * self.frame_hop

    @property
    def hop(self) -> int:
        return self.hop_frames * self.frame_hop

    @property
    def lookahead(self) -> int:
        return self.lookahead_frames * self.frame_hop

    @property
    def crossfade(self) -> int:
        return self.crossfade_frames * self.frame_hop

    @property
    def algorithmic_latency(self) -> int:
        """Samples between a sample's arrival and the run of the window that finalises it."""
        return self.hop + self.lookahead + self.crossfade

    @property
    def first_end(self) -> int:
        return self.algorithmic_latency

    @property
    def emit_offset(self) -> int:
        """Index within a window of the first emitted sample (head of the crossfade)."""
        return self.window - self.algorithmic_latency

    def emit_start(self, end: int) -> int:
        """Absolute position of the first sample emitted by the window ending at ``end``."""
        return end - self.algorithmic_latency

    def seconds(self, samples: int) -> float:
        return samples / self.sample_rate

    def describe(self) -> str:
        s = self.seconds
        return (f"window {s(self.window):.2f} s, hop {s(self.hop):.2f} s, lookahead "
                f"{s(self.lookahead):.2f} s, crossfade {s(self.crossfade):.2f} s (whole "
                f"{1000 * self.frame_hop / self.sample_rate:g} ms frames); algorithmic latency "
                f"{s(self.algorithmic_latency):.2f} s")
