"""`streamsep eval`: SI-SDR and SI-SDR improvement per prompt class on held-out mixtures.

Scores the embedded model (or any separator the registry can load) offline — one pass over each
10 s mixture — and through the streaming engine at a given window/hop/lookahead/steps, with the
real-time factor of each. Trained and held-out prompt wordings are reported separately, and the
same table carries two baselines: the unprocessed mixture and a classical spectral-gating
denoiser for the "speech" prompt.

The mixtures: by default the held-out set that ships inside the package (``streamsep/data/eval``:
20 mixtures of 10 s, 16 kHz, 16-bit FLAC, voices and songs the embedded model never trained on;
its LICENSES.md names every source), so ``streamsep eval`` works from an installed wheel. A
corpus folder (``--corpus DIR``) is either that layout (``mixtures.json`` and one FLAC per
source; the mixture is the sum of its sources) or what tools/make_corpus.py writes
(``test_mixtures.json`` + ``test_mixtures.npz``, 60 mixtures). ``--make-corpus DIR`` writes the
mixtures of the corpus in use into DIR in the first layout, to read, to listen to, or to extend
with mixtures of your own.

    streamsep eval [--corpus DIR] [--engine] [--limit 20] [--json eval.json]
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from scipy.ndimage import uniform_filter
from scipy.signal import istft, stft

SR_EVAL = 16000  # the corpus rate; scores are computed here
#: The held-out set that ships with the package (see the module docstring).
BUNDLED_CORPUS = Path(__file__).resolve().parent / "data" / "eval"
#: The bundled layout's index (the other layout is make_corpus.py's test_mixtures.json + .npz).
INDEX = "mixtures.json"


class EvalError(ValueError):
    """Bad evaluation input; the message names the fix."""


# -- metrics and baselines -------------------------------------------------------------------------
def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR in dB (zero-mean, optimal scaling of the reference)."""
    ref = np.asarray(ref, np.float64) - np.mean(ref)
    est = np.asarray(est, np.float64) - np.mean(est)
    a = np.dot(est, ref) / (np.dot(ref, ref) + 1e-10)
    err = est - a * ref
    return float(10 * np.log10((np.sum((a * ref) ** 2) + 1e-10) / (np.sum(err**2) + 1e-10)))


def spectral_gate(x: np.ndarray, sr: int = SR_EVAL, n_fft: int = 512, hop: int = 128,
                  over: float = 1.5, floor: float = 0.1) -> np.ndarray:
    """Classical stationary spectral gating: a per-bin noise floor from the quietest frames,
    a smoothed soft gate above it, the mixture phase."""

    _, _, z = stft(x, sr, nperseg=n_fft, noverlap=n_fft - hop)
    mag = np.abs(z)
    frame_energy = np.mean(mag**2, axis=0)
    quiet = mag[:, frame_energy <= np.percentile(frame_energy, 20)]
    noise = np.mean(quiet, axis=1, keepdims=True) + 1e-8
    gain = np.clip(1.0 - over * noise / np.maximum(mag, 1e-8), floor, 1.0)
    gain = uniform_filter(gain, size=(3, 5))  # smooth across bins and frames: less musical noise
    _, y = istft(z * gain, sr, nperseg=n_fft, noverlap=n_fft - hop)
    y = y[: len(x)]
    return np.pad(y, (0, len(x) - len(y))).astype(np.float32)


# -- running a separator ---------------------------------------------------------------------------
def _to_rate(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    return x if sr_in == sr_out else soxr.resample(x, sr_in, sr_out).astype(np.float32)


def _pad_to(x: np.ndarray, mult: int) -> np.ndarray:
    return np.pad(x, (0, (-len(x)) % mult))


def separate_offline(sep: Any, mix16: np.ndarray, prompt: str, seed: int = 0) -> tuple[
        np.ndarray, float]:
    """Whole clip in one window. Returns (target at 16 kHz, compute seconds)."""
    x = _pad_to(_to_rate(mix16, SR_EVAL, sep.sample_rate), sep.frame_hop)
    frames = len(x) // sep.frame_hop
    nch = int(getattr(sep, "noise_channels", 0) or 0)
    noise = (np.random.default_rng(seed).standard_normal((frames, nch)).astype(np.float32)
             if nch else None)
    sep.set_prompt(prompt)
    t0 = time.perf_counter()
    target, _ = sep.separate(x, noise, None)
    dt = time.perf_counter() - t0
    return _to_rate(target, sep.sample_rate, SR_EVAL)[: len(mix16)], dt


def separate_streamed(sep: Any, plan: Any, mix16: np.ndarray, prompt: str, seed: int = 0) -> tuple[
        np.ndarray, list[float]]:
    """Through the engine's window planner, worker and crossfade (fast, latency-compensated).
    Returns (target at 16 kHz, per-window compute seconds)."""
    from streamsep.seams import engine_stream

    r = engine_stream(sep, plan, prompt, sample_rate=SR_EVAL, seed=seed)(mix16)
    return r.target, r.compute


# -- the benchmark ---------------------------------------------------------------------------------
def load_mixtures(corpus: Path, limit: int | None) -> list[dict]:
    """The mixtures of ``corpus`` (either layout), each {id, kind, sources, audio: {name:
    array}}, the first ``limit`` of them."""
    if (corpus / INDEX).exists():
        return _load_bundled(corpus, limit)
    meta_path = corpus / "test_mixtures.json"
    if not meta_path.exists():
        raise EvalError(f"no held-out mixtures in {corpus} ({INDEX} or test_mixtures.json "
                        "missing): omit --corpus for the set that ships with streamsep, or "
                        "render the full one with python tools/make_corpus.py --out DIR")
    meta = json.loads(meta_path.read_text())
    data = np.load(corpus / "test_mixtures.npz")
    items = meta[:limit] if limit else meta
    return [dict(m, audio={k.split("/", 1)[1]: data[k] for k in data.files
                           if k.startswith(m["id"] + "/")}) for m in items]


def _load_bundled(corpus: Path, limit: int | None) -> list[dict]:
    import soundfile as sf

    try:
        index = json.loads((corpus / INDEX).read_text())
        items = index["mixtures"]
    except (ValueError, KeyError, TypeError) as e:
        raise EvalError(f"{corpus / INDEX} is not a corpus index ({e}): see the layout in "
                        "streamsep eval --help") from None
    out = []
    for m in items[:limit] if limit else items:
        audio = {}
        for name in m["sources"]:
            path = corpus / m["files"][name]
            try:
                x, sr = sf.read(path, dtype="float32")
            except (OSError, RuntimeError) as e:
                raise EvalError(f"cannot read {path} ({e}): re-export the corpus with "
                                "--make-corpus") from None
            if sr != SR_EVAL or x.ndim != 1:
                raise EvalError(f"{path} is {sr} Hz with shape {x.shape}: corpus sources are "
                                f"mono at {SR_EVAL} Hz")
            audio[name] = x
        lengths = {len(x) for x in audio.values()}
        if len(lengths) != 1:
            raise EvalError(f"the sources of {m['id']} in {corpus} differ in length: each "
                            "mixture's sources must be equally long")
        # The mixture is the sum of its sources, in a fixed order: stored once, exact.
        audio["mixture"] = np.sum([audio[n] for n in sorted(m["sources"])], axis=0,
                                  dtype=np.float32)
        out.append({"id": m["id"], "kind": m["kind"], "sources": sorted(m["sources"]),
                    "audio": audio})
    return out


def make_corpus(source: Path, out: Path, limit: int | None = None) -> list[str]:
    """Write the mixtures of ``source`` (either layout) into ``out`` in the bundled layout:
    one 16-bit FLAC per source (``ID_NAME.flac``) and ``mixtures.json``; the files written."""
    import soundfile as sf

    mixtures = load_mixtures(source, limit)
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "sample_rate": SR_EVAL,
        "format": "one 16-bit FLAC per source; the mixture is the sum of its sources",
        "mixtures": []}
    written = []
    for m in mixtures:
        files = {}
        for name in m["sources"]:
            x = np.asarray(m["audio"][name], np.float32)
            if np.max(np.abs(x)) >= 1.0:
                raise EvalError(f"source {name} of {m['id']} reaches full scale: scale the "
                                "mixture down before exporting it")
            files[name] = f"{m['id']}_{name}.flac"
            sf.write(out / files[name], x, SR_EVAL, subtype="PCM_16")
            written.append(files[name])
        index["mixtures"].append({"id": m["id"], "kind": m["kind"],
                                  "sources": sorted(m["sources"]), "files": files})
    tmp = out / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, out / INDEX)
    return [*written, INDEX]


def _summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["kind"], r["target"], r["wording"])].append(r)
    out = []
    for (method, kind, target, wording), rs in sorted(groups.items()):
        out.append({"method": method, "kind": kind, "target": target, "wording": wording,
                    "n": len(rs),
                    "sisdr_mixture": round(float(np.mean([r["sisdr_mix"] for r in rs])), 2),
                    "sisdr": round(float(np.mean([r["sisdr"] for r in rs])), 2),
                    "sisdri": round(float(np.mean([r["sisdri"] for r in rs])), 2)})
    return out


def _targets(mixtures: list[dict], classes: tuple[str, ...]
             ) -> Iterator[tuple[int, dict, str, float]]:
    """(index, mixture, prompt class, the mixture's SI-SDR against that class) for every class
    present in each mixture."""
    for i, m in enumerate(mixtures):
        for c in classes:
            if c in m["sources"]:
                yield i, m, c, si_sdr(m["audio"]["mixture"], m["audio"][c])


def _row(method: str, m: dict, target: str, wording: str, prompt: str, base: float,
         est: np.ndarray | None, **extra: Any) -> dict:
    """One scored result; est None scores the unprocessed mixture."""
    s = base if est is None else si_sdr(est, m["audio"][target])
    return {"method": method, "id": m["id"], "kind": m["kind"], "target": target,
            "wording": wording, "prompt": prompt, "sisdr_mix": base, "sisdr": s,
            "sisdri": s - base, **extra}


def _progress(what: str, i: int, n: int, end: bool = False) -> None:
    """A counter redrawn in place on a terminal (nothing in a log or with -q)."""
    from streamsep import console

    if console.bars_wanted():
        print(f"\r {what} {i + 1}/{n}", end="\n" if end else "", file=sys.stderr, flush=True)


def run(corpus: Path, *, model: str | None, steps: int | None, limit: int | None,
        engine: bool, engine_limit: int, window: float, hop: float, lookahead: float,
        crossfade: float, classes: tuple[str, ...] = ("speech", "music"),
        seams: bool = False) -> dict[str, Any]:
    from streamsep.embedded.prompts import HELDOUT_WORDINGS
    from streamsep.separators.registry import load_separator

    sep = load_separator(model, steps=steps)
    mixtures = load_mixtures(corpus, limit)
    rows: list[dict] = []
    compute, audio_s = 0.0, 0.0
    for i, m, c, base in _targets(mixtures, classes):
        mix = m["audio"]["mixture"]
        held = HELDOUT_WORDINGS[c][i % len(HELDOUT_WORDINGS[c])]
        for wording, prompt in (("trained", c), ("heldout", held)):
            est, dt = separate_offline(sep, mix, prompt, seed=i)
            compute += dt
            audio_s += len(mix) / SR_EVAL
            rows.append(_row("model", m, c, wording, prompt, base, est))
        # the wrong prompt: asks for another class present in the mixture
        wrong = next((o for o in classes if o != c and o in m["sources"]), None)
        if wrong is not None:
            est, _ = separate_offline(sep, mix, wrong, seed=i)
            rows.append(_row("model_wrong_prompt", m, c, f"prompt={wrong}", wrong, base, est))
        rows.append(_row("mixture", m, c, "-", "", base, None))
        if c == "speech":
            rows.append(_row("spectral_gating", m, c, "-", "", base, spectral_gate(mix)))
        _progress("offline", i, len(mixtures))
    _progress("offline", len(mixtures) - 1, len(mixtures), end=True)
    result: dict[str, Any] = {
        "model": model or "embedded",
        "steps": getattr(sep, "steps", steps),
        "corpus": str(corpus),
        "offline": {"rtf": compute / max(audio_s, 1e-9), "table": _summarise(rows)},
        "rows": rows,
    }
    if engine:
        from streamsep.engine.plan import WindowPlan

        plan = WindowPlan.from_seconds(sep.sample_rate, sep.frame_hop, window, hop, lookahead,
                                       crossfade)
        erows, comp = [], []
        offline = {(r["id"], r["target"]): r["sisdr"] for r in rows
                   if r["method"] == "model" and r["wording"] == "trained"}
        streamed = mixtures[:engine_limit]
        for i, m, c, base in _targets(streamed, classes):
            est, cs = separate_streamed(sep, plan, m["audio"]["mixture"], c, seed=i)
            comp += cs
            erows.append(_row("engine", m, c, "trained", c, base, est,
                              offline_sisdr=offline[(m["id"], c)]))
            _progress("engine", i, len(streamed))
        _progress("engine", len(streamed) - 1, len(streamed), end=True)
        hop_s = plan.seconds(plan.hop)
        result["engine"] = {
            "window_s": window, "hop_s": hop, "lookahead_s": lookahead, "crossfade_s": crossfade,
            "algorithmic_latency_s": plan.seconds(plan.algorithmic_latency),
            "rtf": float(np.mean(comp)) / hop_s if comp else None,
            "compute_p95_s": float(np.percentile(comp, 95)) if comp else None,
            "table": _summarise(erows),
            "streamed_minus_offline_db": round(float(np.mean(
                [r["sisdr"] - r["offline_sisdr"] for r in erows])), 2) if erows else None,
        }
        result["rows"] += erows
        if seams:
            result["seams"] = _seams(sep, plan, streamed, classes)
    return result


def _seams(sep: Any, plan: Any, mixtures: list[dict], classes: tuple[str, ...]) -> dict[str, Any]:
    """``streamsep.seams.seam_report`` per prompt class, on the engine pass's mixtures."""
    from streamsep.seams import engine_stream, seam_report

    out: dict[str, Any] = {}
    for c in classes:
        pairs = [(m["audio"]["mixture"], m["audio"][c]) for m in mixtures if c in m["sources"]]
        if pairs:
            out[c] = seam_report(pairs, engine_stream(sep, plan, c, sample_rate=SR_EVAL),
                                 plan=plan, sample_rate=SR_EVAL)
            _progress(f"seams ({c})", 0, 1, end=True)
    return out


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'method':<20} {'mixtures':<20} {'target':<7} {'wording':<13} {'n':>3} "
             f"{'mix':>6} {'out':>6} {'SI-SDRi':>7}"]
    tables = [result["offline"]["table"]] + ([result["engine"]["table"]]
                                             if "engine" in result else [])
    for table in tables:
        for r in table:
            lines.append(f"{r['method']:<20} {r['kind']:<20} {r['target']:<7} {r['wording']:<13} "
                         f"{r['n']:>3} {r['sisdr_mixture']:>6.2f} {r['sisdr']:>6.2f} "
                         f"{r['sisdri']:>7.2f}")
    lines.append(f"offline RTF {result['offline']['rtf']:.3f}")
    if "engine" in result:
        e = result["engine"]
        lines.append(f"engine W={e['window_s']} H={e['hop_s']} R={e['lookahead_s']} "
                     f"X={e['crossfade_s']}: RTF {e['rtf']:.3f}, streamed − offline "
                     f"{e['streamed_minus_offline_db']} dB")
    for c, r in result.get("seams", {}).items():
        d, ref, n = r["discontinuity"], r["reference_discontinuity"], r["mixtures"]
        lines.append(
            f"seams, {c} ({n} mixture{'s' * (n != 1)}): SI-SDR within ±{r['zone_s']} s of a seam "
            f"{_db(r['near_minus_elsewhere'])} against elsewhere; discontinuity ratio "
            f"{_num(d['ratio'])} (1 = seams add no jump; level {_num(d['level_ratio'])}, "
            f"spectrum {_num(d['spectral_ratio'])}; against the reference "
            f"{_num(ref['ratio'])}); window disagreement {_db(r['disagreement_db'])}")
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _db(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f} dB"


def main(argv: list[str] | None = None) -> int:
    """``streamsep eval ARGS``, returning its exit code (tools/eval_quality.py, tests)."""
    from streamsep.cli import main as cli_main

    try:
        cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0
