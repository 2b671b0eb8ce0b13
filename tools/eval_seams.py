"""Seam benchmark: continuity schemes and crossfade shapes of the engine on the embedded model.

Renders held-out 10 s mixtures (issue #17 item 2) from what ``tools/make_corpus.py`` holds out
of training: espeak-ng test voices (ESPEAK_TEST_VOICES x ESPEAK_TEST_VARIANTS) and flite slt
reading held-out sentences, over planetblupi songs (decoded from their .ogg) or synthesized noise
of the test seed, then separates them with prompt "speech" through the engine's offline path (what
``streamsep file`` runs) for every combination of knobs, ODE steps, ``--continuity`` and
``--crossfade-shape``, and prints and writes ``streamsep.seams.seam_report`` for each.

    python tools/eval_seams.py --json out/seams.json [--mixtures 12] [--cache out/seam_mix.npz]

The mixtures are cached (``--cache``) because rendering speech takes a minute. With one Euler
step "inpaint" is identical to "position" (the pinned state at t = 0 is the noise itself), so
that combination is run only with ``--all``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SR = 16000
KNOBS = {"default": (10.0, 2.0, 1.0, 0.4), "low-latency": (4.0, 0.5, 0.25, 0.1)}
MIX_SEED = 4242  # not make_corpus's seeds: other crops, other noise


def render_mixtures(count: int, seconds: float = 10.0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(mixtures, speech targets) float32 (count, seconds * SR), and each one's kind."""
    import make_corpus as mc

    rng = np.random.default_rng(MIX_SEED)
    sents = mc.sentences()
    order = np.random.default_rng(mc.SEED).permutation(len(sents))  # make_corpus's split
    test_sents = [sents[i] for i in order[: len(sents) // 10]]
    plan = [("espeak", f"{v}+{var}") for v in mc.ESPEAK_TEST_VOICES
            for var in mc.ESPEAK_TEST_VARIANTS] + [("flite", v) for v in mc.FLITE_TEST_VOICES] * 4
    plan = [plan[i] for i in rng.permutation(len(plan))]
    n = int(seconds * SR)
    with tempfile.TemporaryDirectory() as td:
        speech, _ = mc.render_speech(plan, test_sents, count * seconds * 1.5 / 60, rng, Path(td))
    songs = sorted(mc.BLUPI.glob("*.ogg"))
    music = np.concatenate([mc.normalise(mc.trim(mc.load_resampled(p)))
                            for p in songs[: max(2, min(len(songs), count // 2))]])
    noise = mc.make_noise(count * seconds * 1.5 / 60, np.random.default_rng(MIX_SEED + 1))
    mixes, refs, kinds = [], [], []
    for i in range(count):
        sp = mc.active_crop(speech, n, rng)
        if i % 2 == 0:
            other, kind = mc.scale_to_snr(sp, mc.active_crop(music, n, rng),
                                          -rng.uniform(-5, 5)), "speech+music"
        else:
            other, kind = mc.scale_to_snr(sp, mc.active_crop(noise, n, rng),
                                          rng.uniform(-5, 10)), "speech+noise"
        mix = sp + other
        peak = max(1.0, float(np.max(np.abs(mix))) / 0.9)
        mixes.append(mix / peak)
        refs.append(sp / peak)
        kinds.append(kind)
    return np.stack(mixes).astype(np.float32), np.stack(refs).astype(np.float32), kinds


def load_mixtures(cache: Path, count: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if cache.exists():
        d = np.load(cache)
        if len(d["mixtures"]) >= count:
            return d["mixtures"][:count], d["targets"][:count], list(d["kinds"][:count])
    mixes, refs, kinds = render_mixtures(count)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, mixtures=mixes, targets=refs, kinds=np.array(kinds))
    return mixes, refs, kinds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mixtures", type=int, default=12)
    ap.add_argument("--cache", type=Path, default=Path("out/seam_mixtures.npz"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--model", default=None, help="embedded model folder (default: model/)")
    ap.add_argument("--knobs", nargs="+", default=list(KNOBS), choices=list(KNOBS))
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--continuity", nargs="+", default=["independent", "position", "inpaint"])
    ap.add_argument("--shapes", nargs="+", default=["amplitude", "power"])
    ap.add_argument("--ramp", type=int, default=0, help="inpaint_ramp of the separator (frames)")
    ap.add_argument("--all", action="store_true", help="also inpaint with 1 step")
    args = ap.parse_args(argv)

    from streamsep.engine.plan import WindowPlan
    from streamsep.seams import engine_stream, seam_report
    from streamsep.separators.embedded import load

    mixes, refs, kinds = load_mixtures(args.cache, args.mixtures)
    pairs = list(zip(mixes, refs, strict=True))
    sep = load(args.model)
    sep.inpaint_ramp = args.ramp
    sep.set_prompt("speech")
    rows = []
    head = (f"{'knobs':<12} {'steps':>5} {'continuity':<12} {'shape':<9} {'SI-SDRi':>7} "
            f"{'near-else':>9} {'seam ratio':>10} {'level':>6} {'spec':>6} {'ref':>6} "
            f"{'disagree':>8} {'s/mix':>6}")
    print(f"{len(pairs)} mixtures ({', '.join(sorted(set(kinds)))}), prompt speech", flush=True)
    print(head, flush=True)
    for knob in args.knobs:
        for steps in args.steps:
            sep.steps = steps
            for cont in args.continuity:
                if cont == "inpaint" and steps == 1 and not args.all:
                    continue
                for shape in args.shapes:
                    plan = WindowPlan.from_seconds(sep.sample_rate, sep.frame_hop, *KNOBS[knob],
                                                   continuity=cont, crossfade_shape=shape)
                    t0 = time.perf_counter()
                    r = seam_report(pairs, engine_stream(sep, plan, "speech", sample_rate=SR),
                                    plan=plan, sample_rate=SR)
                    dt = (time.perf_counter() - t0) / len(pairs)
                    r.update(knobs=knob, plan=list(KNOBS[knob]), steps=steps, continuity=cont,
                             crossfade_shape=shape, ramp=args.ramp, seconds_per_mixture=dt)
                    rows.append(r)
                    d = r["discontinuity"]
                    print(f"{knob:<12} {steps:>5} {cont:<12} {shape:<9} {r['sisdri']:>+7.2f} "
                          f"{r['near_minus_elsewhere']:>+9.2f} {d['ratio']:>10.3f} "
                          f"{d['level_ratio']:>6.3f} {d['spectral_ratio']:>6.3f} "
                          f"{r['reference_discontinuity']['ratio']:>6.3f} "
                          f"{r['disagreement_db']:>+8.2f} "
                          f"{dt:>6.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"mixtures": len(pairs), "kinds": kinds, "rows": rows},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
