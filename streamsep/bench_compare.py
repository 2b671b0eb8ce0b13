"""streamsep's SAM-Audio against mlx-audio's, with the same random weights, input and ODE steps.

    streamsep bench --compare mlx-audio [--preset reduced] [--steps 4] [--json out.json]
    python tools/bench_vs_mlx_audio.py [--preset small] [--seconds 30] [--json out.json]

No checkpoint is needed: ours is built from a preset with random weights, mlx-audio's SAMAudio
gets the very same tensors (names and layouts mapped here), and one codec encode, one codec
decode (unwatermarked: mlx-audio's decode has no watermark) and one DiT forward are compared on
the same input before anything is timed; a wrong mapping would make the figures meaningless.

Timed, on one input (30 s by default, whole latent frames, 48 kHz mono) at the same steps:
  - per stage on one 10 s window: codec encode, one DiT forward (an euler step), decode of
    target and residual (ours: one batch of 2 with the watermark; mlx-audio: two calls);
  - mlx-audio ``separate_long(chunk 10, overlap 3)`` and ``separate_streaming`` (time to the
    first chunk and in total);
  - ours: the live engine at its plan defaults (``engine.offline.bench``, as ``streamsep bench``),
    ``separate_long`` and ``separate_streaming`` with the same chunking.
Compute per second of audio: for the engine, its mean window compute over the hop (the RTF:
what live costs, from the second window on); for the chunked calls, wall time over the input's
length. Our side runs twice, with our CPU codec (and DiT) kernels and with MLX's native kernels
(``COMPUTE_PATH = "native"``: the ones mlx-audio uses, and the ones Metal uses), so the gain
of the algorithm (less work per second of audio) shows apart from the gain of the kernels.
Then a latency sweep of our engine over hop x steps. Both sides are measured in one process,
back to back, and the 1-minute load average is recorded with every figure: on a shared machine
only ratios from one run mean something.

mlx-audio without torch. mlx-audio 0.6.2 declares transformers, pydantic, typer, miniaudio,
jinja2, sounddevice ... as dependencies; importing its SAM-Audio package (``mlx_audio.sts``
imports all its speech-to-speech models) needs only mlx, numpy, scipy, tokenizers, tqdm and
huggingface_hub (streamsep's own dependencies) and sentencepiece, and running it, with the text
encoder replaced by ours, nothing more. So::

    pip install --no-deps mlx-audio==0.6.2 sentencepiece

into streamsep's environment, or ``pip install --target DIR --no-deps mlx-audio==0.6.2
sentencepiece`` anywhere and pass ``--mlx-audio-path DIR`` (or put DIR on PYTHONPATH).
``pip install 'streamsep[compare]'`` installs mlx-audio with its declared dependencies instead;
that resolves without torch too (transformers 5 does not require it) but brings about fifteen
packages the bench never imports.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from streamsep import runtime

runtime.preload_blas()  # before mlx.core, else MLX keeps its slow reference BLAS

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from streamsep.sam_audio.config import PRESETS, SAMAudioConfig, preset_dict  # noqa: E402
from streamsep.sam_audio.model import SAMAudio  # noqa: E402
from streamsep.sam_audio.t5 import T5Config  # noqa: E402

MLX_AUDIO_VERSION = "0.6.2"
INSTALL = f"pip install --no-deps mlx-audio=={MLX_AUDIO_VERSION} sentencepiece"
MISSING = (f"mlx-audio is not installed; install it without torch: {INSTALL} "
           "(or pass --mlx-audio-path DIR where it is installed)")
#: ``--preset`` names: ours, plus "reduced" (the small preset's DiT on a narrower codec) and
#: "micro" (the tiny preset on an even narrower codec: seconds per run, for tests).
BENCH_PRESETS = (*PRESETS, "reduced", "micro")
TOLERANCE = 1e-3  # max |ours - theirs| / max |theirs|, per compared output
CHUNK_S, OVERLAP_S = 10.0, 3.0  # mlx-audio's separate_long / separate_streaming defaults
PROMPT = "speech"
SIDES = ("ours_cpu", "ours_native", "mlx_audio")


class MlxAudioMissing(RuntimeError):
    """mlx-audio cannot be imported; the message is the one line to print."""


class Mismatch(RuntimeError):
    """The two models disagree beyond the tolerance: the timings would compare different
    models."""


# ---------------------------------------------------------------------------------- building
def config_dict(name: str) -> dict[str, Any]:
    """The config.json dict of a bench preset."""
    if name == "reduced":
        # The quick preset: the codec at encoder 16 / decoder 384 channels (a quarter
        # of the reference's widths, so mlx-audio's decode finishes in minutes on a CPU) with
        # the small preset's 12-layer 1024-wide DiT, whose cost is the real one.
        d = preset_dict("small")
        d["audio_codec"] = {**d["audio_codec"], "encoder_dim": 16, "decoder_dim": 384}
        return d
    if name == "micro":
        d = preset_dict("tiny")
        d["audio_codec"] = {**d["audio_codec"], "encoder_dim": 4, "latent_dim": 16,
                            "decoder_dim": 96}
        return d
    return preset_dict(name)


class StubTokenizer:
    """Eight fixed token ids per text: the bench needs T5's shapes, not its vocabulary (t5-base's
    tokenizer is on the hub, which the bench must not need)."""

    def __init__(self, vocab_size: int, length: int = 8):
        self.vocab_size = vocab_size
        self.length = length

    def __call__(self, texts: list[str], max_length: int | None = 512,
                 padding: str = "longest") -> tuple[np.ndarray, np.ndarray]:
        rows = []
        for text in texts:
            raw = (text.encode() * self.length)[: self.length - 1]
            rows.append([2 + b % (self.vocab_size - 2) for b in raw] + [1])  # 1 = EOS
        ids = np.array(rows, dtype=np.int32)
        return ids, np.ones(ids.shape, dtype=np.bool_)


def build_ours(name: str, seed: int = 0) -> SAMAudio:
    """Our SAMAudio for a bench preset with random weights.

    T5 is a 2-layer stand-in of the config's width: prompts are encoded once and cached on
    both sides, so its size does not enter any timed figure. The anchor gate is made non-zero
    so that the equality check covers the anchor embedding's weights; the video-alignment gate
    stays zero because mlx-audio has no such branch (the same as mlx-audio's conversions)."""
    config = SAMAudioConfig.from_dict(config_dict(name))
    width = config.text_encoder.dim
    heads = max(1, width // 64)
    t5 = T5Config(d_model=width, d_kv=width // heads, d_ff=2 * width, num_layers=2,
                  num_heads=heads, vocab_size=256)
    mx.random.seed(seed)
    model = SAMAudio(config, t5_config=t5, tokenizer=StubTokenizer(t5.vocab_size))
    randomize(model, seed)
    model.embed_anchors.gate = mx.array([0.5])
    model.align_masked_video.gate = mx.zeros((1,))
    mx.eval(model.parameters())
    return model


def randomize(model: SAMAudio, seed: int = 0) -> None:
    """Random values for the parameters a fresh model leaves constant.

    The codec's convolutions start at zero (they are meant to be loaded) and its Snake alphas
    at one; so do the DiT's modulation tables. Constant tensors would let a wrong mapping
    (two layers swapped, a transpose missed) pass the equality check, and an all-zero codec
    computes nothing worth comparing. Fan-in scaled uniform values keep activations in range."""
    rng = np.random.default_rng(seed)
    new = []
    for key, p in tree_flatten(model.parameters()):
        a = np.asarray(p)
        if key.startswith("align_masked_video.") or a.size == 0 or a.min() != a.max():
            continue
        if key.endswith(".alpha"):
            v = rng.uniform(0.5, 1.5, a.shape)
        elif a.ndim >= 2:
            bound = 1.0 / math.sqrt(max(1, int(np.prod(a.shape[1:]))))
            v = rng.uniform(-bound, bound, a.shape)
        elif a.max() == 0:  # biases and zero-initialised vectors
            v = rng.uniform(-0.05, 0.05, a.shape)
        else:  # norm scales (ones): jitter around their value
            v = a + rng.uniform(-0.1, 0.1, a.shape)
        new.append((key, mx.array(v.astype(np.float32))))
    model.load_weights(new, strict=False)


def import_mlx_audio(path: str | None = None) -> ModuleType:
    """mlx-audio's SAM-Audio package; ``path`` (a ``pip install --target`` folder) is searched
    first. Raises MlxAudioMissing with the install line when it cannot be imported."""
    if path:
        if not os.path.isdir(path):
            raise MlxAudioMissing(f"--mlx-audio-path {path}: no such folder. {MISSING}")
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        return importlib.import_module("mlx_audio.sts.models.sam_audio")
    except ImportError as e:
        name = getattr(e, "name", None) or ""
        if name and not name.startswith("mlx_audio"):
            raise MlxAudioMissing(
                f"mlx-audio is installed but its SAM-Audio model needs the package '{name}': "
                f"pip install {name} (the install without torch: {INSTALL})") from None
        raise MlxAudioMissing(MISSING) from None


def mlx_audio_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("mlx-audio")
    except Exception:  # a --target folder without metadata on the path, or none at all
        return None


class FixedText:
    """Stands in for mlx-audio's T5 (which downloads t5-base through transformers): returns
    our T5's features of the prompt, so both sides condition on the same tensors."""

    def __init__(self, features: tuple[mx.array, mx.array]):
        self.features = features

    def __call__(self, texts: list[str]) -> tuple[mx.array, mx.array]:
        hidden, mask = self.features
        n = len(texts)
        return mx.broadcast_to(hidden, (n, *hidden.shape[1:])), mx.broadcast_to(
            mask, (n, *mask.shape[1:]))


def _official_name(key: str, n_enc: int) -> str:
    from streamsep.sam_audio.loading import _mlx_audio_name

    return _mlx_audio_name(key, n_enc)


def _norm_except(w: mx.array, dim: int) -> mx.array:
    axes = tuple(i for i in range(w.ndim) if i != dim)
    return mx.sqrt(mx.sum(w * w, axis=axes, keepdims=True))


def map_weights(ours: SAMAudio, theirs: Any) -> list[tuple[str, mx.array]]:
    """Our parameters under mlx-audio's names and layouts, one per mlx-audio parameter.

    Names: ours are the official checkpoint's; ``streamsep.sam_audio.loading._mlx_audio_name``
    (the loader's tested mlx-audio -> official mapping) names each of mlx-audio's. Layouts: both
    keep MLX's (out, k, in) convolutions and (1, 1, C) Snake alphas; where mlx-audio keeps a
    weight-normed conv as (weight_g, weight_v), v is our folded weight and g its norm, so
    g * v / |v| is our weight again. The watermark model is left out: mlx-audio's decode never
    runs it (and sizes it independently of the codec). Raises KeyError / ValueError for a
    parameter of mlx-audio's that has no counterpart of the same shape."""
    n_enc = len(ours.config.audio_codec.encoder_rates)
    own = dict(tree_flatten(ours.parameters()))
    out = []
    for key, param in tree_flatten(theirs.parameters()):
        if key.startswith("audio_codec.decoder.wm_model."):
            continue
        base, _, leaf = key.rpartition(".")
        if leaf in ("weight_g", "weight_v"):
            w = own[_official_name(f"{base}.weight", n_enc)]
            if leaf == "weight_v":
                value = w
            elif tuple(param.shape) == (w.shape[0], 1, 1):
                value = _norm_except(w, 0)
            else:  # a transposed conv: mlx-audio normalises over all but the input channels
                value = _norm_except(w, 2)
        else:
            value = own[_official_name(key, n_enc)]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"mlx-audio's {key} is {tuple(param.shape)}; ours gives "
                             f"{tuple(value.shape)}")
        out.append((key, value))
    return out


def build_theirs(sam: ModuleType, ours: SAMAudio, name: str) -> Any:
    """mlx-audio's SAMAudio for the same config, holding our weights."""
    import mlx.nn as nn

    theirs = sam.SAMAudio(sam.SAMAudioConfig.from_dict(config_dict(name)))
    # nn.Module's own load_weights: mlx-audio's override re-lays out torch tensors by shape
    # and silently skips what does not fit, and these are already in its layout.
    nn.Module.load_weights(theirs, map_weights(ours, theirs), strict=False)
    theirs.text_encoder = FixedText(ours.encode_text([PROMPT]))
    theirs.eval()
    mx.eval(theirs.parameters())
    return theirs


# ------------------------------------------------------------------------------- kernel paths
def _path_modules() -> list[ModuleType]:
    from streamsep.sam_audio import codec, dit

    return [m for m in (codec, dit) if hasattr(m, "COMPUTE_PATH")]


@contextlib.contextmanager
def compute_path(path: str) -> Iterator[None]:
    """Our codec (and DiT, where it has CPU forms) on "cpu" kernels or MLX's "native" ones."""
    mods = _path_modules()
    saved = [m.COMPUTE_PATH for m in mods]
    for m in mods:
        m.COMPUTE_PATH = path
    try:
        yield
    finally:
        for m, s in zip(mods, saved, strict=True):
            m.COMPUTE_PATH = s


# ---------------------------------------------------------------------------------- equality
def _rel(a: mx.array, b: mx.array) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def check_equality(ours: SAMAudio, theirs: Any, paths: tuple[str, ...] = ("cpu", "native"),
                   seconds: float = 2.0) -> dict[str, Any]:
    """Relative max difference of one codec encode, one unwatermarked decode and one DiT
    forward between the two models on the same input, for each of our kernel paths."""
    hop, sr = ours.hop_length, ours.sample_rate
    frames = max(2, round(seconds * sr / hop))
    rng = np.random.default_rng(1)
    wav = mx.array(0.1 * rng.standard_normal((1, 1, frames * hop)).astype(np.float32))
    hidden, mask = ours.encode_text([PROMPT])
    res: dict[str, Any] = {"tolerance": TOLERANCE, "seconds": frames * hop / sr}
    theirs_feats = theirs._get_audio_features(wav)  # (1, T, 2C), stacked as ours
    noisy = mx.array(rng.standard_normal((1, frames, ours.noise_channels)).astype(np.float32))
    c = ours.config.codebook_dim
    dec_frames = min(frames, max(2, round(sr / hop)))  # 1 s: native decode is slow on a CPU
    dec_in = noisy[:, :dec_frames, :c]
    theirs_wav = theirs.audio_codec.decode(dec_in.transpose(0, 2, 1))[..., 0]
    mx.eval(theirs_feats, theirs_wav)
    for path in paths:
        with compute_path(path):
            feats = ours.encode_mixture(wav)
            cond = ours.conditioning(feats, (hidden, mask))
            v = ours.velocity(noisy, cond.mixture, cond.text_hidden, cond.text_mask, 0.25,
                              cond.anchor_ids, cond.anchor_alignment, cond.pad_mask)
            wav_ours = ours.audio_codec.decode(dec_in, watermark=False)[:, 0]
            mx.eval(feats, v, wav_ours)
        v_theirs = theirs(noisy, cond.mixture, cond.text_hidden, mx.full((1,), 0.25),
                          text_mask=cond.text_mask, anchor_ids=cond.anchor_ids,
                          anchor_alignment=cond.anchor_alignment, audio_pad_mask=cond.pad_mask)
        res[path] = {"encode": _rel(feats, theirs_feats), "dit_forward": _rel(v, v_theirs),
                     "decode_unwatermarked": _rel(wav_ours, theirs_wav)}
    res["ok"] = all(x <= TOLERANCE for p in paths for x in res[p].values())
    return res


# ------------------------------------------------------------------------------------ timing
def load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not on every platform
        return None


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _stage(fn: Callable[[], Any], reps: int, budget: float = 5.0) -> float:
    """Best of ``reps`` runs after a first one; a first run above ``budget`` seconds is kept
    alone: a stage that slow is compute, not first-call set-up, and reruns cost minutes."""
    first, _ = _timed(lambda: mx.eval(fn()))
    if first > budget:
        return first
    return min(_timed(lambda: mx.eval(fn()))[0] for _ in range(max(1, reps)))


def stages_ours(model: SAMAudio, wav: mx.array, reps: int) -> dict[str, float]:
    hidden, mask = model.encode_text([PROMPT])
    feats = model.encode_mixture(wav)
    cond = model.conditioning(feats, (hidden, mask))
    noise = model.make_noise(1, feats.shape[1], 0)
    msg = mx.zeros((16,))
    mx.eval(feats, noise)
    dit = _stage(lambda: model.velocity(noise, cond.mixture, cond.text_hidden, cond.text_mask,
                                        0.5, cond.anchor_ids, cond.anchor_alignment,
                                        cond.pad_mask), reps)
    return {
        "encode_s": _stage(lambda: model.encode_mixture(wav), reps),
        "dit_step_s": dit,
        "decode_s": _stage(lambda: model.decode_pair(noise, None, msg), reps),
    }


def stages_theirs(theirs: Any, wav: mx.array, reps: int) -> dict[str, float]:
    hidden, mask = theirs.text_encoder([PROMPT])
    feats = theirs._get_audio_features(wav)
    noise = mx.random.normal(feats.shape, key=mx.random.key(0))
    c = feats.shape[-1] // 2
    gen = noise.transpose(0, 2, 1)
    mx.eval(feats, noise)
    dit = _stage(lambda: theirs(noise, feats, hidden, mx.full((1,), 0.5), text_mask=mask), reps)

    def decode() -> mx.array:
        # As mlx-audio's separate: target and residual in two calls, each evaluated.
        t = theirs.audio_codec.decode(gen[:, :c])
        mx.eval(t)
        return theirs.audio_codec.decode(gen[:, c:])

    return {
        "encode_s": _stage(lambda: theirs._get_audio_features(wav), reps),
        "dit_step_s": dit,
        "decode_s": _stage(decode, reps),
    }


def _finish_stages(s: dict[str, float], steps: int, method: str) -> dict[str, float]:
    """Adds one window's cost at ``steps``: encode, the ODE's DiT forwards, decode."""
    s["dit_forwards"] = steps * (2 if method == "midpoint" else 1)
    s["window_s"] = s["encode_s"] + s["dit_forwards"] * s["dit_step_s"] + s["decode_s"]
    return s


def engine_run(model: SAMAudio, audio: np.ndarray, steps: int, method: str,
               plan_s: tuple[float, float, float, float] | None = None,
               settle_s: float = 1.0) -> dict[str, Any]:
    """The live engine over ``audio`` as ``streamsep bench`` runs it: warm-up, then every window
    (``engine.offline.bench``); adds compute per second of audio and the first window's."""
    from streamsep.engine.engine import warm_up
    from streamsep.engine.metrics import Metrics
    from streamsep.engine.offline import bench
    from streamsep.engine.plan import WindowPlan
    from streamsep.separators.sam import SAMSeparator

    sep = SAMSeparator(model, steps=steps, method=method)
    sep.set_prompt(PROMPT)
    try:
        from streamsep.separators.base import RegionSeparator

        # Whether the engine re-does whole windows or only the new and emitted audio.
        incremental = isinstance(sep, RegionSeparator)
    except ImportError:
        incremental = False
    plan = WindowPlan.from_seconds(model.sample_rate, model.hop_length, *(plan_s or ()))
    warm = warm_up(sep, plan, runs=1, settle_s=settle_s)
    metrics = Metrics(None, status=None)
    t0 = time.perf_counter()
    res = bench(sep, plan, audio, prompt=PROMPT, metrics=metrics)
    wall = time.perf_counter() - t0
    first = metrics.windows[0]["compute_s"] if metrics.windows else None
    total = res.get("compute_mean_s", 0.0) * res["windows"]
    res.update({
        "first_call_s": warm, "wall_s": wall, "compute_total_s": total,
        # Live, per second of audio the engine spends one window's compute per hop: the
        # steady state, without the last windows that flush the end of a short input.
        "compute_per_audio_s": res.get("rtf"),
        # Offline the input is all there: first audio is the first window's compute; live it
        # also waits for the first window's input (plan.first_end).
        "first_audio_s": first, "first_audio_len_s": plan.seconds(plan.hop),
        "first_input_s": plan.seconds(plan.first_end), "incremental": incremental,
        "plan": {"window_s": plan.seconds(plan.window), "hop_s": plan.seconds(plan.hop),
                 "lookahead_s": plan.seconds(plan.lookahead),
                 "crossfade_s": plan.seconds(plan.crossfade)},
        "load1": load1(),
    })
    return res


def _ode(steps: int, method: str) -> dict[str, Any]:
    return {"method": method, "step_size": 1.0 / steps}


def long_run(model: Any, audio: mx.array, steps: int, method: str) -> dict[str, Any]:
    """``separate_long(chunk 10, overlap 3)``: the same call on either model."""
    wall, res = _timed(lambda: model.separate_long(audio, [PROMPT], CHUNK_S, OVERLAP_S,
                                                   ode_opt=_ode(steps, method), seed=42))
    mx.eval(res.target[0])
    n = audio.shape[-1]
    sr = model.sample_rate
    return {"wall_s": wall, "compute_per_audio_s": wall / (n / sr), "out_samples":
            int(res.target[0].size), "load1": load1()}


def streaming_run(model: Any, audio: mx.array, steps: int, method: str,
                  first_only: bool = False) -> dict[str, Any]:
    """``separate_streaming`` with the same chunking: time to the first chunk, and in total."""
    sr = model.sample_rate
    t0 = time.perf_counter()
    gen = model.separate_streaming(audio, [PROMPT], chunk_seconds=CHUNK_S,
                                   overlap_seconds=OVERLAP_S, ode_opt=_ode(steps, method),
                                   seed=42)
    first = first_len = None
    chunks = samples = 0
    for chunk in gen:
        mx.eval(chunk.target)
        if first is None:
            first, first_len = time.perf_counter() - t0, chunk.target.shape[0] / sr
        chunks += 1
        samples += int(chunk.target.shape[0])
        if first_only:
            break
    total = time.perf_counter() - t0
    # Both sides' first chunk needs the first chunk_seconds of input (ours runs mlx-audio's
    # chunks as an engine plan whose first window ends there).
    first_input = min(CHUNK_S, audio.shape[-1] / sr)
    out: dict[str, Any] = {"first_audio_s": first, "first_audio_len_s": first_len,
                           "first_input_s": first_input, "chunks": chunks, "load1": load1()}
    if chunks == 0:
        # mlx-audio 0.6.2 runs ceil((N - overlap) / (chunk - overlap)) chunks: none for an
        # input shorter than the overlap.
        out["note"] = "yielded no audio for this input"
    if not first_only:
        out.update({"total_s": total, "compute_per_audio_s": total / (audio.shape[-1] / sr),
                    "out_samples": samples})
    return out


def sweep(model: SAMAudio, hops: list[float], steps_list: list[int], method: str,
          windows: int, window_s: float, lookahead_s: float,
          crossfade_s: float) -> list[dict[str, Any]]:
    """Our engine at each hop x steps on ``windows`` windows of quiet noise plus a chirp."""
    from streamsep.engine.plan import PlanError, WindowPlan

    rows: list[dict[str, Any]] = []
    for hop in hops:
        xf = min(crossfade_s, hop)
        try:
            plan = WindowPlan.from_seconds(model.sample_rate, model.hop_length, window_s, hop,
                                           lookahead_s, xf)
        except PlanError as e:  # a hop too long for the window: say so, go on
            rows += [{"hop_s": hop, "steps": st, "skipped": str(e)} for st in steps_list]
            continue
        n = plan.first_end + (windows - 1) * plan.hop
        audio = synthetic(n / model.sample_rate, model.sample_rate, model.hop_length)[:n]
        for steps in steps_list:
            # One warm-up window (not warm_up's default of a second of them): the window's
            # shapes are the same at every point of the sweep.
            r = engine_run(model, audio, steps, method, (window_s, hop, lookahead_s, xf),
                           settle_s=0.0)
            rows.append({
                "hop_s": plan.seconds(plan.hop), "steps": steps, "windows": r["windows"],
                "compute_mean_s": r.get("compute_mean_s"), "compute_p95_s": r.get("compute_p95_s"),
                "rtf": r.get("rtf"), "realtime_ok": r.get("realtime_ok"),
                "algorithmic_latency_s": r.get("algorithmic_latency_s"),
                "budget_s": r.get("budget_auto_s"), "latency_s": r.get("expected_latency_s"),
                "load1": r["load1"],
            })
    return rows


# ------------------------------------------------------------------------------------- input
def synthetic(seconds: float, sr: int, hop: int) -> np.ndarray:
    """A mixture of noise, a gliding tone and a pulsed one, whole latent frames long."""
    n = max(1, round(seconds * sr / hop)) * hop
    rng = np.random.default_rng(0)
    t = np.arange(n) / sr
    glide = 0.3 * np.sin(2 * np.pi * (200 + 50 * t) * t)
    pulse = 0.2 * np.sin(2 * np.pi * 880 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    return (0.05 * rng.standard_normal(n) + glide + pulse).astype(np.float32)


def load_input(path: str | None, seconds: float, sr: int, hop: int) -> tuple[np.ndarray, str]:
    if path is None:
        return synthetic(seconds, sr, hop), f"synthetic {seconds:g} s"
    from streamsep.audio.files import read_audio

    x = read_audio(path, sr, note=None)
    if x.size == 0:
        raise ValueError(f"{path} holds no audio")
    n = max(1, round(seconds * sr / hop)) * hop
    # A shorter file is repeated: the bench needs the same length on both sides, not the
    # file's own length.
    x = np.tile(x, -(-n // x.size))[:n]
    return x.astype(np.float32), f"{path} ({n / sr:g} s)"


# -------------------------------------------------------------------------------------- run
def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def run(args: argparse.Namespace, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole comparison (see the module docstring); returns the JSON report."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    sam = None
    if not args.ours_only:
        sam = import_mlx_audio(args.mlx_audio_path)  # fail in one line, before minutes of work
    steps, method = args.steps, args.method
    report: dict[str, Any] = {
        "preset": args.preset, "steps": steps, "method": method,
        "machine": {"backend": runtime.backend_description(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "mlx": mx.__version__,
                    "device": str(mx.default_device())},
        "mlx_audio": None if sam is None else {"version": mlx_audio_version()},
        "load1_start": load1(),
    }
    log(f"building {args.preset} models (random weights) ...")
    ours = build_ours(args.preset)
    hop, sr = ours.hop_length, ours.sample_rate
    audio, source = load_input(args.input, args.seconds, sr, hop)
    report["input"] = {"source": source, "seconds": audio.size / sr}
    wav = mx.array(audio)[None, None]
    theirs = None
    if sam is not None:
        theirs = build_theirs(sam, ours, args.preset)
        log("equality check (same input, same weights) ...")
        report["equality"] = check_equality(ours, theirs)
        log(_equality_line(report["equality"]))
        if not report["equality"]["ok"] and not args.force:
            raise Mismatch(f"{_equality_line(report['equality'])}: the weight mapping is wrong, "
                           "so timings would compare different models (--force times them "
                           "anyway)")
    paths = [p for p in ("cpu", "native") if p in args.paths]
    win = wav[..., : min(wav.shape[-1], round(CHUNK_S * sr / hop) * hop)]
    report["stage_window_s"] = win.shape[-1] / sr

    stages: dict[str, Any] = {}
    log("per-stage times on one window ...")
    for p in paths:
        with compute_path(p):
            stages[f"ours_{p}"] = _finish_stages(stages_ours(ours, win, args.reps), steps,
                                                   method)
        stages[f"ours_{p}"]["load1"] = load1()
    if theirs is not None:
        stages["mlx_audio"] = _finish_stages(stages_theirs(theirs, win, args.reps), steps,
                                              method)
        stages["mlx_audio"]["load1"] = load1()
    report["stages"] = stages

    plan_s = tuple(args.plan) if args.plan else None
    runs: dict[str, dict[str, Any]] = {"engine": {}, "separate_long": {},
                                       "separate_streaming": {}}
    # Back to back, ours then theirs for each call, so that load drifts hit both alike.
    # The engine's windows cost the same from the second on: --engine-seconds may time a
    # prefix (its compute per second of audio is per window / hop either way).
    n_eng = min(audio.size, max(1, round(args.engine_seconds * sr / hop)) * hop) \
        if args.engine_seconds else audio.size
    for p in paths:
        log(f"engine, {p} kernels ...")
        with compute_path(p):
            runs["engine"][f"ours_{p}"] = engine_run(ours, audio[:n_eng], steps, method, plan_s)
    for what, fn in (("separate_long", long_run), ("separate_streaming", streaming_run)):
        kw = {"first_only": args.first_audio_only} if what == "separate_streaming" else {}
        for p in paths:
            log(f"{what}, ours, {p} kernels ...")
            with compute_path(p):
                if what == "separate_streaming" and not hasattr(ours, "separate_streaming"):
                    runs[what][f"ours_{p}"] = {"skipped": "SAMAudio has no separate_streaming"}
                    continue
                runs[what][f"ours_{p}"] = fn(ours, wav, steps, method, **kw)
        if theirs is not None:
            log(f"{what}, mlx-audio ...")
            runs[what]["mlx_audio"] = fn(theirs, wav, steps, method, **kw)
    report["runs"] = runs
    report["ratios"] = ratios(report)

    if args.sweep:
        log("latency sweep (our engine, default kernels) ...")
        plan = plan_s or (10.0, 2.0, 1.0, 0.4)
        report["sweep"] = sweep(ours, args.sweep_hops, args.sweep_steps, method,
                                args.sweep_windows, plan[0], plan[2], plan[3])
    report["load1_end"] = load1()
    return report


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """mlx-audio's figure over ours (> 1: ours is cheaper / sooner), per kernel path."""
    runs, stages = report["runs"], report["stages"]
    m_long = runs["separate_long"].get("mlx_audio", {}).get("compute_per_audio_s")
    m_first = runs["separate_streaming"].get("mlx_audio", {}).get("first_audio_s")
    out: dict[str, float | None] = {}
    for p in ("cpu", "native"):
        side = f"ours_{p}"
        eng = runs["engine"].get(side, {})
        out[f"engine_vs_long_{p}"] = _ratio(m_long, eng.get("compute_per_audio_s"))
        out[f"first_audio_engine_vs_streaming_{p}"] = _ratio(m_first, eng.get("first_audio_s"))
        m_s = runs["separate_streaming"].get("mlx_audio", {})
        out[f"first_audio_live_{p}"] = _ratio(
            _plus(m_s.get("first_input_s"), m_s.get("first_audio_s")),
            _plus(eng.get("first_input_s"), eng.get("first_audio_s")))
        out[f"long_vs_long_{p}"] = _ratio(m_long, runs["separate_long"].get(side, {}).get(
            "compute_per_audio_s"))
        out[f"streaming_first_{p}"] = _ratio(m_first, runs["separate_streaming"].get(
            side, {}).get("first_audio_s"))
        for st in ("encode_s", "dit_step_s", "decode_s", "window_s"):
            out[f"stage_{st[:-2]}_{p}"] = _ratio(stages.get("mlx_audio", {}).get(st),
                                                stages.get(side, {}).get(st))
    return out


# ------------------------------------------------------------------------------------ output
def _equality_line(eq: dict[str, Any]) -> str:
    parts = []
    for p in ("cpu", "native"):
        if p in eq:
            e = eq[p]
            parts.append(f"{p} kernels: encode {e['encode']:.1e}, DiT forward "
                         f"{e['dit_forward']:.1e}, decode (no watermark) "
                         f"{e['decode_unwatermarked']:.1e}")
    verdict = "OK" if eq["ok"] else "MISMATCH"
    return (f"equality vs mlx-audio ({eq['seconds']:g} s input; max |diff| / max |theirs|, "
            f"tolerance {eq['tolerance']:g}): " + "; ".join(parts) + f" -> {verdict}")


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _fmt(v: Any, unit: str = " s") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.2f}{unit}" if abs(v) < 1000 else f"{v:.0f}{unit}"
    return str(v)


def table(report: dict[str, Any]) -> str:
    """The comparison as a plain-text table (figures in seconds; ratios = mlx-audio / ours)."""
    runs, stages = report["runs"], report["stages"]
    present = [s for s in SIDES if s in stages]
    heads = {"ours_cpu": "ours (CPU kernels)", "ours_native": "ours (native)",
             "mlx_audio": f"mlx-audio {(report.get('mlx_audio') or {}).get('version') or ''}"}
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, get: Callable[[str], Any], unit: str = " s") -> None:
        rows.append((label, [_fmt(get(s), unit) for s in present]))

    def st(key: str) -> Callable[[str], Any]:
        return lambda s: stages.get(s, {}).get(key)

    def rn(what: str, key: str) -> Callable[[str], Any]:
        return lambda s: runs[what].get(s, {}).get(key)

    row(f"one window ({report['stage_window_s']:g} s): encode", st("encode_s"))
    row("  one DiT forward", st("dit_step_s"))
    row("  decode target+residual", st("decode_s"))
    row(f"  window at {report['steps']} {report['method']} steps", st("window_s"))
    eng = lambda k: lambda s: None if s == "mlx_audio" else runs["engine"].get(s, {}).get(k)  # noqa: E731
    row("engine: compute per s of audio (RTF)", eng("compute_per_audio_s"))
    row("engine: compute per window (mean)", eng("compute_mean_s"))
    row("engine: first audio (compute)", eng("first_audio_s"))
    row("engine: first audio live (input + compute)",
        lambda s: _plus(eng("first_input_s")(s), eng("first_audio_s")(s)))
    row("separate_long(10, 3): per s of audio", rn("separate_long", "compute_per_audio_s"))
    row("separate_long(10, 3): wall", rn("separate_long", "wall_s"))
    row("separate_streaming: first audio", rn("separate_streaming", "first_audio_s"))
    row("  audio in the first chunk", rn("separate_streaming", "first_audio_len_s"))
    row("separate_streaming: first audio live",
        lambda s: _plus(rn("separate_streaming", "first_input_s")(s),
                        rn("separate_streaming", "first_audio_s")(s)))
    row("separate_streaming: total", rn("separate_streaming", "total_s"))
    width = max(len(r[0]) for r in rows)
    colw = max(14, *(len(heads[s]) for s in present))
    lines = [f"{'':<{width}}  " + "  ".join(f"{heads[s]:>{colw}}" for s in present)]
    lines += [f"{label:<{width}}  " + "  ".join(f"{c:>{colw}}" for c in cells)
              for label, cells in rows]
    return "\n".join(lines)


def summary(report: dict[str, Any]) -> str:
    inp = report["input"]
    eng = next(iter(report["runs"]["engine"].values()), {})
    p = eng.get("plan", {})
    out = [
        f"SAM-Audio {report['preset']} (random weights), {report['steps']} {report['method']} "
        f"steps; input {inp['source']}; {report['machine']['backend']}; "
        f"{report['machine']['cpus']} CPUs; load (1 min) {report['load1_start']} at start, "
        f"{report['load1_end']} at end",
    ]
    if p:
        how = ("only new and emitted audio per window" if eng.get("incremental")
               else "whole windows")
        out.append(f"engine ({how}; {eng.get('audio_s', 0):g} s of input) plan: window "
                   f"{p['window_s']:g} s, hop {p['hop_s']:g} s, lookahead "
                   f"{p['lookahead_s']:g} s, crossfade {p['crossfade_s']:g} s; separate_long / "
                   f"separate_streaming: chunk {CHUNK_S:g} s, overlap {OVERLAP_S:g} s")
    if "equality" in report:
        out.append(_equality_line(report["equality"]))
    out.append(table(report))
    r = {k: v for k, v in report.get("ratios", {}).items() if v is not None}
    if r:
        out.append("ratios (mlx-audio / ours; > 1 = ours cheaper or sooner):")
        for p in ("cpu", "native"):
            keys = [("engine per s of audio vs separate_long", f"engine_vs_long_{p}"),
                    ("engine first audio vs separate_streaming",
                     f"first_audio_engine_vs_streaming_{p}"),
                    ("engine first audio live vs separate_streaming's",
                     f"first_audio_live_{p}"),
                    ("separate_long vs separate_long", f"long_vs_long_{p}"),
                    ("separate_streaming first audio", f"streaming_first_{p}"),
                    ("encode", f"stage_encode_{p}"), ("DiT forward", f"stage_dit_step_{p}"),
                    ("decode", f"stage_decode_{p}"), ("window", f"stage_window_{p}")]
            got = [f"{label} {r[k]:.1f}x" for label, k in keys if k in r]
            if got:
                out.append(f"  {p} kernels: " + "; ".join(got))
    for side, v in report["runs"]["separate_streaming"].items():
        if isinstance(v, dict) and v.get("note"):
            out.append(f"note: {side} separate_streaming {v['note']}")
        if isinstance(v, dict) and v.get("skipped"):
            out.append(f"note: {side} separate_streaming skipped: {v['skipped']}")
    loads = [(name, side, v.get("load1")) for name, d in report["runs"].items()
             for side, v in d.items() if isinstance(v, dict) and v.get("load1") is not None]
    if loads:
        out.append("load (1 min) after each run: " + ", ".join(
            f"{n}/{s} {ld}" for n, s, ld in loads))
    if report.get("sweep"):
        out.append("latency sweep (our engine; latency = hop + lookahead + crossfade + budget):")
        out.append(f"  {'hop':>5} {'steps':>5} {'compute/window':>15} {'p95':>7} {'RTF':>6} "
                   f"{'latency':>8} {'real time':>9}")
        for s in report["sweep"]:
            if "skipped" in s:
                out.append(f"  {s['hop_s']:>5.2f} {s['steps']:>5d}  skipped: {s['skipped']}")
                continue
            out.append(f"  {s['hop_s']:>5.2f} {s['steps']:>5d} {_fmt(s['compute_mean_s']):>15} "
                       f"{_fmt(s['compute_p95_s']):>7} {_fmt(s['rtf'], ''):>6} "
                       f"{_fmt(s['latency_s']):>8} {'yes' if s['realtime_ok'] else 'no':>9}")
    return "\n".join(out)


# -------------------------------------------------------------------------------------- CLI
def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_vs_mlx_audio",
                                description=(__doc__ or "").splitlines()[0])
    p.add_argument("input", nargs="?", default=None,
                   help="audio file for the mixture (repeated or cut to --seconds); "
                        "default: a synthetic mixture")
    p.add_argument("--preset", default="small", choices=BENCH_PRESETS,
                   help="model size (reduced: the small DiT on a codec at encoder 16 / "
                        "decoder 384 channels, for a quick run)")
    p.add_argument("--seconds", type=float, default=30.0, help="input length (default 30)")
    p.add_argument("--steps", type=int, default=4, help="ODE steps, both sides (default 4)")
    p.add_argument("--method", default="euler", choices=("euler", "midpoint"))
    p.add_argument("--plan", type=float, nargs=4, metavar=("W", "H", "R", "X"), default=None,
                   help="our engine's window, hop, lookahead, crossfade (default: its defaults)")
    p.add_argument("--paths", default="cpu,native",
                   help="our kernel paths to time: cpu, native or both (default both)")
    p.add_argument("--reps", type=int, default=2, help="runs per fast stage (best is kept)")
    p.add_argument("--first-audio-only", action="store_true",
                   help="run separate_streaming to its first chunk only (its total is about "
                        "separate_long's)")
    p.add_argument("--engine-seconds", type=float, default=None, metavar="S",
                   help="run our engine on the first S seconds only (default: all)")
    p.add_argument("--no-sweep", dest="sweep", action="store_false",
                   help="skip the latency sweep")
    p.add_argument("--sweep-hops", type=_floats, default=[0.5, 1.0, 2.0])
    p.add_argument("--sweep-steps", type=_ints, default=[2, 4, 8],
                   help="(at least 2: one step would be step_size 1, which neither side takes)")
    p.add_argument("--sweep-windows", type=int, default=4, help="windows per sweep point")
    p.add_argument("--ours-only", action="store_true", help="time our side alone")
    p.add_argument("--mlx-audio-path", default=os.environ.get("STREAMSEP_MLX_AUDIO_PATH"),
                   metavar="DIR", help="a folder mlx-audio was installed into (pip --target)")
    p.add_argument("--force", action="store_true",
                   help="time even when the equality check fails")
    p.add_argument("--json", default=None, metavar="PATH|-",
                   help="also write the report as JSON to PATH (- for stdout)")
    return p


def check_args(args: argparse.Namespace) -> str | None:
    """The first bad argument, as one line; None when all are fine."""
    if not 0 < args.seconds <= 3600:
        return f"--seconds must be between 0 and 3600 (got {args.seconds})"
    if args.engine_seconds is not None and not args.engine_seconds > 0:
        return f"--engine-seconds must be positive (got {args.engine_seconds})"
    if args.steps < 2:
        return f"--steps must be at least 2 (got {args.steps})"
    paths = [x.strip() for x in str(args.paths).split(",") if x.strip()]
    if not paths or any(x not in ("cpu", "native") for x in paths):
        return f"--paths must list cpu and/or native (got {args.paths!r})"
    args.paths = paths
    if any(s < 2 for s in args.sweep_steps):
        return "--sweep-steps must all be at least 2"
    if any(h <= 0 for h in args.sweep_hops) or args.sweep_windows < 1:
        return "--sweep-hops must be positive and --sweep-windows at least 1"
    if args.json and args.json != "-":
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder):
            return f"--json {args.json}: folder {folder} does not exist"
    return None


def write_json(report: dict[str, Any], path: str | None) -> None:
    if not path:
        return
    text = json.dumps(report, indent=2)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    bad = check_args(args)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    try:
        report = run(args)
    except (MlxAudioMissing, Mismatch) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(report), file=sys.stderr if args.json == "-" else sys.stdout)
    write_json(report, args.json)
    return 0 if report.get("equality", {"ok": True})["ok"] else 1
