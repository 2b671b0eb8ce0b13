"""Per channel or mid/side? SI-SDR of both ways of separating stereo with a mono model.

Builds stereo mixtures from the demo's separate sources (tests/fixtures/embedded_demo.npz: 8 s of
LibriVox speech, a planetblupi song and a 50 Hz hum, none trained on), placed in five ways, runs
``streamsep file``'s code path (``run_file`` with channels="keep" and "midside") with the embedded
model, and prints the SI-SDR of each channel's target against that channel's true source, for the
prompts "speech" and "music", with the mixture's own SI-SDR as the baseline. It also times a mono
and a stereo run of the same length (time per channel).

    .venv/bin/python tools/measure_channels.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamsep.engine.offline import run_file  # noqa: E402
from streamsep.engine.plan import (  # noqa: E402
    DEFAULT_CROSSFADE_S,
    DEFAULT_HOP_S,
    DEFAULT_LOOKAHEAD_S,
    DEFAULT_WINDOW_S,
    WindowPlan,
)
from streamsep.evaluation import si_sdr  # noqa: E402
from streamsep.separators.registry import load_separator  # noqa: E402

SR = 48000


def _delay(x: np.ndarray, k: int) -> np.ndarray:
    return np.concatenate([np.zeros(k, np.float32), x[:-k]])


def scenes() -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """name -> {"speech": (L, R), "music": (L, R)}: each source as it lands in each channel (the
    hum goes with the music: the "music" prompt's reference is everything but the speech)."""
    d = np.load(ROOT / "tests" / "fixtures" / "embedded_demo.npz")
    sp, mu, hum = (soxr.resample(d[k].astype(np.float32), 16000, SR).astype(np.float32)
                   for k in ("speech", "music", "noise"))
    wide = np.roll(mu, 62000)  # another stretch of the song: decorrelated from the left
    return {
        "A: whole mix panned (L .8, R .4)":
            {"speech": (0.8 * sp, 0.4 * sp), "music": (0.8 * (mu + hum), 0.4 * (mu + hum))},
        "B: speech centre, music panned (L .9, R .3)":
            {"speech": (0.7 * sp, 0.7 * sp), "music": (0.9 * mu + 0.7 * hum, 0.3 * mu + 0.7 * hum)},
        "C: speech left, music right":
            {"speech": (0.85 * sp, 0.45 * sp),
             "music": (0.45 * mu + 0.7 * hum, 0.85 * mu + 0.7 * hum)},
        "D: speech centre, wide music":
            {"speech": (0.7 * sp, 0.7 * sp),
             "music": (0.7 * mu + 0.7 * hum, 0.7 * wide + 0.7 * hum)},
        "E: spaced pair (speech 0.4 ms later on R), wide music":
            {"speech": (0.7 * sp, 0.7 * _delay(sp, 20)),
             "music": (0.7 * mu + 0.7 * hum, 0.7 * wide + 0.7 * _delay(hum, 20))},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    args = ap.parse_args()
    sep = load_separator(args.model)
    plan = WindowPlan.from_seconds(SR, sep.frame_hop, DEFAULT_WINDOW_S, DEFAULT_HOP_S,
                                   DEFAULT_LOOKAHEAD_S, DEFAULT_CROSSFADE_S)
    tmp = Path(tempfile.mkdtemp(prefix="streamsep-channels-"))
    means: dict[str, list[list[float]]] = {}
    for prompt in ("speech", "music"):
        sep.set_prompt(prompt)
        print(f"\nprompt {prompt!r}: SI-SDR (dB, mean of L and R)")
        print(f"{'scene':56s} {'mixture':>8s} {'per channel':>12s} {'mid/side':>9s}")
        for name, src in scenes().items():
            left = src["speech"][0] + src["music"][0]
            right = src["speech"][1] + src["music"][1]
            peak = max(np.abs(left).max(), np.abs(right).max()) / 0.9
            mix = np.stack([left, right], 1) / peak
            ref = [src[prompt][0] / peak, src[prompt][1] / peak]
            path = tmp / "mix.wav"
            sf.write(path, mix, SR, subtype="FLOAT")
            row = [np.mean([si_sdr(mix[:, c], ref[c]) for c in range(2)])]
            for mode in ("keep", "midside"):
                out = tmp / f"{mode}.wav"
                run_file(sep, plan, str(path), str(out), prompt=prompt, channels=mode)
                y = sf.read(out, dtype="float32")[0]
                row.append(np.mean([si_sdr(y[:, c], ref[c]) for c in range(2)]))
            means.setdefault(prompt, []).append(row)
            print(f"{name:56s} {row[0]:8.2f} {row[1]:12.2f} {row[2]:9.2f}")
        m = np.mean(means[prompt], axis=0)
        print(f"{'mean':56s} {m[0]:8.2f} {m[1]:12.2f} {m[2]:9.2f}")
    # time per channel: 64 s of audio, mono and stereo
    sep.set_prompt("speech")
    x = np.tile(np.stack([src["speech"][0] + src["music"][0],
                          src["speech"][1] + src["music"][1]], 1), (8, 1)) * 0.5
    times = {}
    for nch in (1, 2):
        p = tmp / f"t{nch}.wav"
        sf.write(p, x[:, 0] if nch == 1 else x, SR, subtype="PCM_16")
        t0 = time.perf_counter()
        run_file(sep, plan, str(p), str(tmp / f"o{nch}.wav"), prompt="speech")
        times[nch] = time.perf_counter() - t0
    secs = len(x) / SR
    print(f"\n{secs:.0f} s of audio: mono {times[1]:.2f} s, stereo {times[2]:.2f} s "
          f"({times[2] / 2:.2f} s per channel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
