"""Seam metrics: how much the streamed result suffers where one window's output meets the next.

The engine emits window k's output over input positions [k·H, (k + 1)·H) (H the hop). The first
X samples of that block (X the crossfade) blend window k − 1's tail into window k's head: that
stretch, [k·H, k·H + X) for k ≥ 1, is **seam k**. Everything else in the block is one window's
output alone. Two windows that disagree on the audio they share make the result change across a
seam in a way the signal does not; these metrics measure that on mixtures with a known target.

**SI-SDR near seams vs elsewhere.** The samples within ``zone`` of a seam's centre
(k·H + X/2) form the "near" set, the others within half a hop of a seam's centre the
"elsewhere" set (so the start-up block, whose window is mostly padding, and the end count in
neither); SI-SDR (the scale fitted on
each set) is computed on each, per mixture. ``zone`` is 0.5 s, shortened to H/4 when the hop is
below 2 s so that "elsewhere" keeps about half of every block (at H = 0.5 s a 0.5 s zone would
cover everything).

**Boundary discontinuity score.** Short-time frames of ``frame_s`` (32 ms, Hann window) are
pooled into 24 log-spaced bands from 100 Hz to min(8 kHz, Nyquist). For two signals s and q the
per-band difference in dB is E_b = 10·log10((P_s,b + ε) / (P_q,b + ε)), with ε 30 dB below the
reference target's mean band power: differences in bands quieter than that are inaudible next to
the rest, and their log ratios would otherwise dominate the means. A point p is scored by
comparing the frame that ends at p ("before") with the frame that starts at p + X ("after"), the
two frames either side of a crossfade placed at p:

  * level jump      J_level(p) = |ℓ_after − ℓ_before|, ℓ = 10·log10((Σ_b P_s,b + 24 ε) /
                    (Σ_b P_q,b + 24 ε)): the change of the level difference, in dB;
  * spectral jump   J_spec(p) = RMS over bands of (ΔE_b − mean_b ΔE), ΔE = E_after − E_before:
                    the change of the difference's spectral shape, level removed, in dB;
  * J(p) = J_level(p) + J_spec(p).

s is the streamed result and q, for the score, a second streaming of the same mixture shifted by
half a hop (the mixture is delayed by that much of silence and the output advanced again), whose
seams therefore fall in the middle of the first one's blocks. The signal's own changes (a word
starting) and the model's context-dependent errors are common to both runs and cancel in E; what
is left jumps where either run crosses a seam. Seam points are the block boundaries p = k·H of
either run (k ≥ 1; the frames then lie just outside the seam); non-seam points are every
``grid_s`` (10 ms) position whose span [p − frame, p + X + frame) touches no seam of either run (a
deterministic grid rather than random draws: the same expectation, less variance). Pooled over all
mixtures, **ratio = mean J(seam points) / mean J(non-seam points)**: 1 means streaming changes
nothing at a seam that it does not change anywhere else (seams inaudible), above 1 that seams add
a jump (audible seams). ``reference_discontinuity`` is the same ratio with q the known target and
the first run's seams only: the jump of the error itself, which the signal's own changes dilute
towards 1.

**Window disagreement.** What the crossfade has to hide: at every seam, the previous window's
target tail and the next window's target head over the same X samples, before they are blended.
disagreement_db = 10·log10(Σ ‖tail − head‖² / Σ ½(‖tail‖² + ‖head‖²)), pooled over all seams of
all mixtures: −∞ for windows that agree exactly, 0 dB for unrelated ones. It needs the engine's
view (``engine_stream`` records it through ``Worker.on_seam``); for a plain ``separate_stream``
it is None. This is the quantity a continuity scheme acts on; the discontinuity score says how
much of it survives the crossfade as a jump a listener could notice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

from streamsep.engine.plan import WindowPlan

ZONE_S = 0.5
FRAME_S = 0.032
GRID_S = 0.01
N_BANDS = 24
#: ε of the log differences, relative to the reference's mean band power (-30 dB).
FLOOR = 1e-3


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR in dB (the scale of ``ref`` fitted to ``est``)."""
    est = np.asarray(est, np.float64)
    ref = np.asarray(ref, np.float64)
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    proj = alpha * ref
    return float(10 * np.log10((np.sum(proj**2) + 1e-12) / (np.sum((est - proj) ** 2) + 1e-12)))


def seam_spans(n: int, plan: WindowPlan, sample_rate: int) -> list[tuple[int, int]]:
    """[start, stop) of every seam (crossfade stretch) inside a signal of n samples at
    ``sample_rate``; a plan without crossfade gives empty spans at the block boundaries."""
    hop = plan.seconds(plan.hop) * sample_rate
    x = int(round(plan.seconds(plan.crossfade) * sample_rate))
    spans = []
    k = 1
    while int(round(k * hop)) < n:
        a = int(round(k * hop))
        spans.append((a, min(n, a + x)))
        k += 1
    return spans


def zone_seconds(plan: WindowPlan, zone_s: float = ZONE_S) -> float:
    """Half-width of the "near a seam" zone: ``zone_s``, at most a quarter of the hop."""
    return min(zone_s, plan.seconds(plan.hop) / 4)


def _band_powers(x: np.ndarray, sample_rate: int, frame: int, starts: np.ndarray) -> np.ndarray:
    """(len(starts), N_BANDS) band powers of the Hann-windowed frames x[s : s + frame]."""
    win = np.hanning(frame + 2)[1:-1]
    frames = np.stack([x[s : s + frame] for s in starts]) * win
    p = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    f = np.fft.rfftfreq(frame, 1 / sample_rate)
    edges = np.geomspace(100.0, min(8000.0, sample_rate / 2), N_BANDS + 1)
    idx = np.clip(np.searchsorted(edges, f, side="right") - 1, -1, N_BANDS)
    out = np.zeros((len(starts), N_BANDS))
    for b in range(N_BANDS):
        sel = idx == b
        if sel.any():
            out[:, b] = p[:, sel].sum(axis=1)
    return out


def _jumps(est: np.ndarray, other: np.ndarray, points: np.ndarray, gap: int, frame: int,
           sample_rate: int, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(J_level, J_spec) in dB of est against ``other`` at each point (module docstring)."""
    if not len(points):
        return np.zeros(0), np.zeros(0)

    def diff(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ps = _band_powers(est, sample_rate, frame, starts)
        pq = _band_powers(other, sample_rate, frame, starts)
        e = 10 * np.log10((ps + floor) / (pq + floor))
        lev = 10 * np.log10((ps.sum(axis=1) + N_BANDS * floor) / (pq.sum(axis=1)
                                                                  + N_BANDS * floor))
        return e, lev

    e0, l0 = diff(points - frame)
    e1, l1 = diff(points + gap)
    d = e1 - e0
    spec = np.sqrt(np.mean((d - d.mean(axis=1, keepdims=True)) ** 2, axis=1))
    return np.abs(l1 - l0), spec


def _points(n: int, spans: list[tuple[int, int]], gap: int, frame: int, grid: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(seam points, non-seam points) whose frames fit inside [0, n)."""
    seam = np.array([a for a, _ in spans if a - frame >= 0 and a + gap + frame <= n], np.int64)
    grid_p = np.arange(frame, n - gap - frame + 1, grid, dtype=np.int64)
    ok = np.ones(len(grid_p), bool)
    for a, b in spans:
        # the scored span [p - frame, p + gap + frame) must not touch the seam [a, max(b, a + 1))
        ok &= (grid_p + gap + frame <= a) | (grid_p - frame >= max(b, a + 1))
    return seam, grid_p[ok]


def _ratio(seam: list[np.ndarray], other: list[np.ndarray]) -> float | None:
    """mean(seam) / mean(other), pooled over mixtures; None without points on either side."""
    s, o = np.concatenate(seam), np.concatenate(other)
    if not len(s) or not len(o):
        return None
    if o.mean() <= 0:
        return 1.0 if s.mean() <= 0 else float("inf")  # no change anywhere: no seam either
    return float(s.mean() / o.mean())


def seam_report(
    mixtures: Sequence[tuple[np.ndarray, np.ndarray]],
    separate_stream: Callable[[np.ndarray], Any],
    *,
    plan: WindowPlan,
    sample_rate: int,
    zone_s: float = ZONE_S,
    frame_s: float = FRAME_S,
    grid_s: float = GRID_S,
    discontinuity: bool = True,
) -> dict[str, Any]:
    """Seam metrics of ``separate_stream`` on (mixture, target) pairs (module docstring).

    mixtures: (mixture, target) float arrays of equal length at ``sample_rate``.
    separate_stream: mixture -> streamed target at ``sample_rate``, same length (an array, or
    a ``StreamResult`` that also carries the seams' tails and heads); it must run the engine
    with ``plan`` (``engine_stream`` builds one), which places the seams. It is called twice per
    mixture (the second time on the mixture delayed by half a hop), once with
    ``discontinuity=False``, which leaves the score out (None) at half the cost.

    Returns JSON-ready figures: ``sisdr``/``sisdri`` (whole mixtures), ``sisdr_near_seams``,
    ``sisdr_elsewhere`` and their per-mixture difference ``near_minus_elsewhere`` (dB, means
    over mixtures); ``discontinuity`` (the score: first run against the shifted one) and
    ``reference_discontinuity`` (first run against the target), each with ``ratio``,
    ``level_ratio``, ``spectral_ratio``, the mean jumps in dB and the point counts;
    ``disagreement_db`` (None without a ``StreamResult``). A ratio is
    None when no seam or no non-seam point fits (a crossfade nearly as long as half the hop)."""
    if not mixtures:
        raise ValueError("seam_report needs at least one (mixture, target) pair")
    frame = int(round(frame_s * sample_rate))
    gap = int(round(plan.seconds(plan.crossfade) * sample_rate))
    grid = max(1, int(round(grid_s * sample_rate)))
    zone = zone_seconds(plan, zone_s)
    z = int(round(zone * sample_rate))
    shift = int(round(plan.seconds(plan.hop_frames // 2 * plan.frame_hop) * sample_rate))
    rows = []
    dis = [0.0, 0.0]  # window disagreement: difference energy, mean energy
    have_seams = True
    # kind -> (level, spectral) -> (seam points, non-seam points) -> one array per mixture
    jumps: dict[str, list[list[list[np.ndarray]]]] = {
        k: [[[], []], [[], []]] for k in ("shifted", "reference")}
    for mix, ref in mixtures:
        mix = np.asarray(mix, np.float32)
        ref = np.asarray(ref, np.float64)
        if mix.shape != ref.shape or mix.ndim != 1:
            raise ValueError(f"mixture and target must be mono arrays of one length "
                             f"(got {mix.shape} and {ref.shape})")
        n = len(mix)
        est, seams = _stream(separate_stream, mix)
        if seams is None:
            have_seams = False
        for tail, head in seams or ():
            dis[0] += float(np.sum((tail.astype(np.float64) - head) ** 2))
            dis[1] += 0.5 * float(np.sum(tail.astype(np.float64) ** 2) + np.sum(
                head.astype(np.float64) ** 2))
        spans = seam_spans(n, plan, sample_rate)
        near = np.zeros(n, bool)
        inside = np.zeros(n, bool)  # from half a hop before the first seam to after the last
        half = int(round(plan.seconds(plan.hop) * sample_rate / 2))
        for a, b in spans:
            c = (a + b) // 2
            near[max(0, c - z) : c + z] = True
            inside[max(0, c - half) : c + half] = True
        row = {"sisdr": si_sdr(est, ref), "sisdr_mixture": si_sdr(mix, ref)}
        far = inside & ~near
        if near.any() and far.any():
            row["near"] = si_sdr(est[near], ref[near])
            row["elsewhere"] = si_sdr(est[far], ref[far])
        rows.append(row)
        floor = FLOOR * float(np.mean(_band_powers(ref, sample_rate, frame,
                                                   np.arange(0, n - frame + 1, frame))))
        floor = max(floor, 1e-20)
        cases = [("reference", ref, spans)]
        if shift and discontinuity:
            delayed = np.concatenate([np.zeros(shift, np.float32), mix])
            other = _stream(separate_stream, delayed)[0][shift:]
            both = spans + [(a - shift, b - shift) for a, b in seam_spans(n + shift, plan,
                                                                          sample_rate)]
            cases.append(("shifted", other, sorted((a, b) for a, b in both if b > 0)))
        for kind, q, sp in cases:
            for i, pts in enumerate(_points(n, sp, gap, frame, grid)):
                lev, spec = _jumps(est, q, pts, gap, frame, sample_rate, floor)
                jumps[kind][0][i].append(lev)
                jumps[kind][1][i].append(spec)

    def block(kind: str) -> dict[str, Any]:
        lev, spec = jumps[kind]
        if not lev[0]:
            return {"ratio": None}
        tot = [[a + b for a, b in zip(lev[i], spec[i], strict=True)] for i in range(2)]

        def mean(xs: list[np.ndarray]) -> float | None:
            c = np.concatenate(xs)
            return round(float(c.mean()), 4) if len(c) else None

        return {"ratio": _ratio(*tot), "level_ratio": _ratio(*lev),
                "spectral_ratio": _ratio(*spec), "seam_jump_db": mean(tot[0]),
                "non_seam_jump_db": mean(tot[1]),
                "seam_points": int(sum(len(x) for x in tot[0])),
                "non_seam_points": int(sum(len(x) for x in tot[1]))}

    def avg(key: str) -> float | None:
        vals = [r[key] for r in rows if key in r]
        return round(float(np.mean(vals)), 3) if vals else None

    diffs = [r["near"] - r["elsewhere"] for r in rows if "near" in r]
    return {
        "mixtures": len(rows), "zone_s": zone, "frame_s": frame / sample_rate,
        "shift_s": shift / sample_rate,
        "sisdr": avg("sisdr"),
        "sisdri": round(float(np.mean([r["sisdr"] - r["sisdr_mixture"] for r in rows])), 3),
        "sisdr_near_seams": avg("near"), "sisdr_elsewhere": avg("elsewhere"),
        "near_minus_elsewhere": round(float(np.mean(diffs)), 3) if diffs else None,
        "discontinuity": block("shifted"), "reference_discontinuity": block("reference"),
        "disagreement_db": (round(10 * float(np.log10(max(dis[0], 1e-30) / dis[1])), 3)
                            if have_seams and dis[1] > 0 else None),
    }


@dataclass
class StreamResult:
    """What ``engine_stream`` returns: the target, and each seam's (tail, head) before the blend
    (at the separator's rate; see "Window disagreement")."""

    target: np.ndarray
    seams: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    #: each window's compute, seconds
    compute: list[float] = field(default_factory=list)


def _stream(separate_stream: Callable[[np.ndarray], Any], mix: np.ndarray
            ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]] | None]:
    out = separate_stream(mix)
    seams = out.seams if isinstance(out, StreamResult) else None
    est = np.asarray(out.target if isinstance(out, StreamResult) else out, np.float64)
    if est.shape != mix.shape:
        raise ValueError(f"separate_stream returned {est.shape} for a mixture of {mix.shape}")
    return est, seams


class _ArraySink:
    def __init__(self, n: int):
        self.out = np.zeros(n, np.float32)

    def write(self, pos: int, target: np.ndarray, residual: np.ndarray) -> None:
        a, b = max(pos, 0), min(pos + len(target), len(self.out))
        if b > a:
            self.out[a:b] = target[a - pos : b - pos]


def engine_stream(separator: Any, plan: WindowPlan, prompt: str, *, sample_rate: int,
                  seed: int = 0) -> Callable[[np.ndarray], StreamResult]:
    """A ``separate_stream`` for ``seam_report``: the engine's offline path (the one
    ``streamsep file`` runs: ``Engine`` + ``run_fast``, every window separated, no skipping),
    resampling from and to ``sample_rate`` like the file reader and writer do, with the seams'
    tails and heads recorded."""
    from streamsep.engine.engine import Engine
    from streamsep.engine.offline import run_fast

    sr = separator.sample_rate

    def run(mix: np.ndarray) -> StreamResult:
        x = mix.astype(np.float32)
        if sample_rate != sr:
            x = soxr.resample(x, sample_rate, sr).astype(np.float32)
        eng = Engine(separator, plan, seed=seed, budget=0, skip_ahead=False)
        sink = _ArraySink(len(x))
        eng.add_sink(sink)
        seams: list[tuple[np.ndarray, np.ndarray]] = []
        eng.worker.on_seam = lambda pos, tail, head: seams.append((tail.copy(), head.copy()))
        run_fast(eng, (x[i : i + plan.hop] for i in range(0, len(x), plan.hop)), prompt)
        out = sink.out
        if sample_rate != sr:
            out = soxr.resample(out, sr, sample_rate).astype(np.float32)
        out = out[: len(mix)]
        return StreamResult(np.pad(out, (0, len(mix) - len(out))), seams,
                            list(eng.worker.compute_history))

    return run
