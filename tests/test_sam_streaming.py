"""SAMAudio.separate_streaming / separate_long on the engine's path, on the tiny fixture:
chunk fields, exact length and alignment, one result whatever the input's form, time to first
audio in windows, the short-input pass, anchors."""

import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import FIXTURES
from safetensors.numpy import load_file

from streamsep.engine.plan import WindowPlan
from streamsep.sam_audio import streaming
from streamsep.sam_audio.checkpoint import load_torch_checkpoint
from streamsep.sam_audio.config import SAMAudioConfig
from streamsep.sam_audio.model import SAMAudio, anchor_tensors
from streamsep.sam_audio.t5 import T5Config
from streamsep.separators.sam import SAMSeparator

FIXTURE = FIXTURES / "sam_tiny_a"
HOP = 1920
SR = 48000
OPT = {"method": "euler", "step_size": 0.5}
#: mlx-audio's knobs at the fixture's scale: windows of 10 frames every 7, a 3-frame crossfade.
KNOBS = {"chunk_seconds": 0.4, "overlap_seconds": 0.12, "ode_opt": OPT}


class FakeTokenizer:
    """One id per word + EOS (the fixture ships no tokenizer)."""

    def __call__(self, texts, max_length=512, padding="longest"):
        rows = [[3 + len(w) % 90 for w in t.split()] + [1] for t in texts]
        ids = np.zeros((len(rows), max(map(len, rows))), np.int32)
        mask = np.zeros(ids.shape, bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, True
        return ids, mask


@pytest.fixture(scope="module")
def model():
    w = load_torch_checkpoint(FIXTURE / "checkpoint.pt")
    for k, v in load_file(str(FIXTURE / "t5" / "model.safetensors")).items():
        w["text_encoder." + k] = v
    config = SAMAudioConfig.from_dict(json.loads((FIXTURE / "config.json").read_text()))
    t5 = T5Config.from_dict(json.loads((FIXTURE / "t5" / "config.json").read_text()))
    m = SAMAudio(config, t5_config=t5, tokenizer=FakeTokenizer())
    m.load_checkpoint(w, source=str(FIXTURE))
    return m


def _audio(n, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _blocks(x, seed=1):
    """x in odd block sizes, single samples included."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(x):
        n = int(rng.choice([1, 7, 333, 1920, 4999]))
        yield x[i : i + n]
        i += n


def _joined(chunks):
    chunks = list(chunks)
    t = np.concatenate([np.array(c.target) for c in chunks])
    r = np.concatenate([np.array(c.residual) for c in chunks])
    return chunks, t, r


class IdentitySeparator:
    """Stands in for SAMSeparator: target = the window, residual = its negative."""

    def __init__(self, model, steps=16, method="midpoint"):
        self.sample_rate, self.frame_hop, self.noise_channels = SR, HOP, 256
        self.wm_message = mx.zeros((16,))
        self.step_size = 1 / steps

    def set_prompt(self, text):
        pass

    def separate(self, window, noise, anchors=None):
        return window.copy(), -window


# ---------------------------------------------------------------- results
def test_chunks_join_to_separate_long_exactly(model):
    x = _audio(20 * HOP + 77)  # three windows, two crossfades
    chunks, t, r = _joined(model.separate_streaming(x, ["speech"], seed=5, **KNOBS))
    assert [c.chunk_idx for c in chunks] == list(range(len(chunks))) and len(chunks) == 3
    assert [c.is_last for c in chunks] == [False, False, True]
    assert all(c.noise is None and c.peak_memory is None for c in chunks[:-1])
    assert chunks[-1].noise.shape == (1, 21, 256) and chunks[-1].peak_memory > 0
    assert all(c.target.ndim == 1 and c.target.shape == c.residual.shape for c in chunks)
    assert t.shape == r.shape == x.shape and np.isfinite(t).all()
    long = model.separate_long(mx.array(x)[None, None], ["speech"], seed=5, **KNOBS)
    np.testing.assert_array_equal(np.array(long.target[0]), t)
    np.testing.assert_array_equal(np.array(long.residual[0]), r)
    np.testing.assert_array_equal(np.array(long.noise), np.array(chunks[-1].noise))
    # the noise is position-seeded: the seed changes it, and the result with it
    other = model.separate_long(x, "speech", seed=6, **KNOBS)
    assert not np.allclose(np.array(other.target[0]), t)


def test_blocks_and_paths_give_the_array_result(model, tmp_path):
    import soundfile as sf

    x = _audio(20 * HOP + 77)
    _, t, r = _joined(model.separate_streaming(x, ["speech"], **KNOBS))
    _, bt, br = _joined(model.separate_streaming(_blocks(x), ["speech"], **KNOBS))
    np.testing.assert_array_equal(bt, t)
    np.testing.assert_array_equal(br, r)
    path = tmp_path / "a.wav"
    sf.write(path, x, SR, subtype="FLOAT")  # mlx-audio's list-of-paths form, read block by block
    np.testing.assert_array_equal(np.array(model.separate_long([str(path)], "speech",
                                                               **KNOBS).target[0]), t)


@pytest.mark.parametrize(
    "knobs, n",
    [
        ({"chunk_seconds": 0.4, "overlap_seconds": 0.12}, 37 * HOP + 100),
        ({"chunk_seconds": 0.4, "overlap_seconds": 0.28}, 37 * HOP + 100),  # lookahead too
        ({"plan": WindowPlan.from_seconds(SR, HOP, 0.6, 0.16, 0.08, 0.08)}, 37 * HOP + 100),
        ({"chunk_seconds": 0.4, "overlap_seconds": 0.0}, 40 * HOP),  # ends on a chunk's end
    ],
)
def test_output_is_aligned_with_the_input(model, monkeypatch, knobs, n):
    # With an identity separation the engine's crossfade gives back the input bit for bit: no
    # latency offset, no gain error at the seams, exactly the input's length.
    monkeypatch.setattr(streaming, "SAMSeparator", IdentitySeparator)
    x = _audio(n)
    for source in (x, _blocks(x)):
        chunks, t, r = _joined(model.separate_streaming(source, ["speech"], **knobs))
        np.testing.assert_array_equal(t, x)
        np.testing.assert_array_equal(r, -x)
        assert [c.is_last for c in chunks] == [False] * (len(chunks) - 1) + [True]


def test_first_chunk_comes_after_one_window(model, monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        sep = SAMSeparator(*args, **kwargs)
        for name in ("separate", "separate_region"):
            fn = getattr(sep, name, None)
            if fn is not None:
                setattr(sep, name, lambda *a, _fn=fn, **k: (calls.append(1), _fn(*a, **k))[1])
        return sep

    monkeypatch.setattr(streaming, "SAMSeparator", counting)
    plan = WindowPlan.from_seconds(SR, HOP, 0.6, 0.16, 0.08, 0.08)  # first window ends at 0.32 s
    x = _audio(20 * HOP)
    pulled = [0]

    def live():
        for i in range(0, len(x), 500):
            pulled[0] += len(x[i : i + 500])
            yield x[i : i + 500]

    gen = model.separate_streaming(live(), ["speech"], ode_opt=OPT, plan=plan)
    first = next(gen)
    assert len(calls) == 1 and first.chunk_idx == 0 and not first.is_last
    assert first.target.shape == (plan.hop,)
    assert pulled[0] <= plan.first_end + 500  # one block past the first window's end
    rest = list(gen)
    assert rest[-1].is_last and len(calls) == 1 + len(rest)


def test_short_input_is_one_separate_call(model):
    x = _audio(9 * HOP + 5)  # within one 10-frame chunk
    wm = SAMSeparator(model).wm_message
    ref = model.separate(mx.array(x)[None, None], ["speech"], ode_opt=OPT, seed=3, wm_message=wm)
    long = model.separate_long(x, ["speech"], seed=3, **KNOBS)
    np.testing.assert_array_equal(np.array(long.target[0]), np.array(ref.target[0])[: len(x)])
    np.testing.assert_array_equal(np.array(long.noise), np.array(ref.noise))
    (only,) = model.separate_streaming(_blocks(x), ["speech"], seed=3, **KNOBS)
    assert only.chunk_idx == 0 and only.is_last and only.peak_memory is not None
    np.testing.assert_array_equal(np.array(only.target), np.array(long.target[0]))


def test_callbacks_like_mlx_audio(model):
    x = _audio(12 * HOP + 50)
    got = []
    n = model.separate_streaming(
        x, ["speech"], lambda a, i, last: got.append(("t", a.shape[0], i, last)),
        lambda a, i, last: got.append(("r", a.shape[0], i, last)), **KNOBS,
    )
    assert n == len(x) and sum(g[1] for g in got if g[0] == "t") == len(x)
    assert [g[2:] for g in got] == [(0, False), (0, False), (1, True), (1, True)]


# ---------------------------------------------------------------- anchors
def test_window_spans_land_on_their_frames():
    runs = [("+", 2, 9), ("-", 5, 7), ("+", 30, 40)]
    spans = streaming.window_spans(runs, 3, 10, HOP / SR)
    _, align = anchor_tensors([spans], 10, [10], HOP, SR)
    ids, _ = anchor_tensors([spans], 10, [10], HOP, SR)
    tokens = np.array(ids)[0][np.array(align)[0]]
    assert tokens.tolist() == [1, 1, 2, 2, 1, 1, 0, 0, 0, 0]  # + = 1, - = 2, null = 0
    assert streaming.window_spans(runs, -4, 5, HOP / SR) == []


def test_anchors_as_spans_or_tensors(model):
    x = _audio(12 * HOP + 50)  # two windows, the seam at 0.28 s
    spans = [("+", 0.1, 0.3), ("-", 0.25, 0.45)]  # the second crosses the seam, wins the overlap
    _, t, _ = _joined(model.separate_streaming(x, ["speech"], anchors=spans, **KNOBS))
    ids, align = anchor_tensors([spans], 13, [13], HOP, SR)
    _, tt, _ = _joined(model.separate_streaming(x, ["speech"], anchor_ids=ids,
                                                anchor_alignment=align, **KNOBS))
    np.testing.assert_array_equal(tt, t)
    _, plain, _ = _joined(model.separate_streaming(x, ["speech"], **KNOBS))
    assert not np.allclose(plain, t)
    with pytest.raises(ValueError, match="anchor_alignment covers 5 frames; the audio has 13"):
        model.separate_long(x, ["speech"], anchor_ids=ids, anchor_alignment=align[:, :5])


def test_errors(model):
    x = _audio(3 * HOP)
    with pytest.raises(ValueError, match=r"one recording at a time \(B = 1\)"):
        model.separate_streaming(np.stack([x, x])[:, None], ["a", "a"])
    with pytest.raises(ValueError, match=r"one recording at a time \(B = 1\)"):
        model.separate_streaming([x, x], ["a"])
    with pytest.raises(ValueError, match="needs one description; got 2"):
        model.separate_streaming(x, ["a", "b"])
    with pytest.raises(ValueError, match="overlap_seconds < chunk_seconds"):
        model.separate_streaming(x, ["a"], chunk_seconds=0.2, overlap_seconds=0.2)
    with pytest.raises(ValueError, match="either plan= or chunk_seconds"):
        model.separate_streaming(x, ["a"], chunk_seconds=5.0,
                                 plan=WindowPlan.from_seconds(SR, HOP, 0.6, 0.16, 0.08, 0.08))
    with pytest.raises(ValueError, match="empty"):
        model.separate_streaming(x[:0], ["a"])
    with pytest.raises(ValueError, match="empty"):
        list(model.separate_streaming(iter([]), ["a"]))
    with pytest.raises(ValueError, match="pass either plan= or chunk_seconds"):
        model.separate_long(x, ["a"], overlap_seconds=1.0,
                            plan=WindowPlan.from_seconds(SR, HOP, 0.6, 0.16, 0.08, 0.08))
    with pytest.raises(ValueError, match="anchors or anchor_ids"):
        model.separate_streaming(x, ["a"], anchors=[("+", 0, 1)], anchor_ids=mx.zeros((1, 2)),
                                 anchor_alignment=mx.zeros((1, 3)))


def test_a_failing_window_raises_instead_of_playing_dry(model, monkeypatch):
    # Live, the engine plays a failed window dry and goes on; here the caller must hear of it.
    class Broken(IdentitySeparator):
        def separate(self, window, noise, anchors=None):
            raise ZeroDivisionError("boom")

    monkeypatch.setattr(streaming, "SAMSeparator", Broken)
    with pytest.raises(ZeroDivisionError, match="boom"):
        model.separate_long(_audio(20 * HOP), ["speech"], **KNOBS)
