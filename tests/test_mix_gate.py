"""--mix and --gate: applied by the worker to the final blocks, the dry input read at exactly their
positions. Deterministic: the engine is driven by hand, no devices."""

import numpy as np
import pytest
from cli_util import one_error, run_cli
from engine_sim import Collect

from streamsep.engine import live
from streamsep.engine.engine import Engine, FileSink
from streamsep.engine.mixgate import FRAME_S, RAMP_S, RELEASE_S, MixGate
from streamsep.engine.offline import run_fast
from streamsep.engine.plan import WindowPlan
from streamsep.separators.simple import Passthrough, Silence

SR, HOP = 48000, 1920
PLAN = (25, 5, 2, 1)  # window, hop, lookahead, crossfade in latent frames (1 s, 0.2 s, ...)


def _engine(sep, **mixgate):
    plan = WindowPlan(SR, HOP, *PLAN)
    eng = Engine(sep, plan, skip_ahead=False)
    if mixgate:
        eng.use_mixgate(MixGate(SR, **mixgate))
    tgt, res = Collect(), Collect()
    eng.add_sink(FileSink(tgt, "target"))
    eng.add_sink(FileSink(res, "residual"))
    return eng, tgt, res


def _noise(n, seed=0, scale=0.1):
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _blocks(x, n=4800):
    return (x[i : i + n] for i in range(0, len(x), n))


def test_mix_half_with_passthrough_returns_the_input_exactly():
    x = _noise(5 * SR)
    eng, tgt, res = _engine(Passthrough(), mix=0.5)
    run_fast(eng, _blocks(x), "speech")
    np.testing.assert_array_equal(tgt.data, x)
    np.testing.assert_array_equal(res.data, 0)


def test_mix_half_with_silence_is_half_the_aligned_input_sample_exact():
    x = _noise(5 * SR, seed=1)
    eng, tgt, res = _engine(Silence(), mix=0.5)
    run_fast(eng, _blocks(x), "speech")
    half = np.float32(0.5) * x
    np.testing.assert_array_equal(tgt.data, half)
    np.testing.assert_array_equal(res.data, x - half)  # residual = input - output


def test_mix_one_is_the_separators_output_bit_for_bit():
    x = _noise(3 * SR, seed=2)
    eng, tgt, res = _engine(Silence())  # the default: mix 1, gate off
    run_fast(eng, _blocks(x), "speech")
    np.testing.assert_array_equal(tgt.data, 0)
    np.testing.assert_array_equal(res.data, x)


def test_a_typed_mix_command_changes_the_mix_at_the_next_window():
    x = _noise(6 * SR, seed=3)
    eng, tgt, _ = _engine(Silence(), mix=0.5)
    at = []

    def blocks():
        for i, b in enumerate(_blocks(x)):
            yield b
            if i == 40:  # 4 s in: typed while the run goes on
                assert live.command(eng, "mix 0.25") == "mix -> 0.25 from the next window"
                at.append(eng.plan.emit_start(eng.worker.next_end))

    run_fast(eng, blocks(), "speech")
    y, p, ramp = tgt.data, at[0], int(RAMP_S * SR)
    assert p % eng.plan.hop == 0 and 2 * SR < p < 5 * SR  # a window boundary
    np.testing.assert_array_equal(y[:p], np.float32(0.5) * x[:p])
    np.testing.assert_array_equal(y[p + ramp :], np.float32(0.75) * x[p + ramp :])
    # the ramp goes from the old to the new mix without a step
    r = y[p : p + ramp] / np.where(x[p : p + ramp] == 0, 1, x[p : p + ramp])
    assert np.all(np.diff(r) >= -1e-6) and 0.5 <= r.min() and r.max() <= 0.75 + 1e-6


class MuteBetween(Passthrough):
    """Target = input, except zero on the absolute positions [lo, hi) (residual = the rest)."""

    def __init__(self, lo, hi):
        super().__init__()
        self.lo, self.hi = lo, hi

    def separate_region(self, window, noise, anchors, *, start, emit):
        w = np.asarray(window, np.float32)[emit].copy()
        pos = start + emit.start + np.arange(len(w))
        t = np.where((pos >= self.lo) & (pos < self.hi), 0.0, w).astype(np.float32)
        return t, (w - t).astype(np.float32)


def test_gate_silences_a_stretch_with_no_target_and_reopens_after():
    lo, hi = 2 * SR, 4 * SR
    x = _noise(6 * SR, seed=4)
    hold = 0.3
    eng, tgt, res = _engine(MuteBetween(lo, hi), gate=True, hold_s=hold)
    run_fast(eng, _blocks(x), "speech")
    y = tgt.data
    # open before: the target itself, bit for bit
    np.testing.assert_array_equal(y[:lo], x[:lo])
    # closed: after the hold, a frame to notice and the release fade, exactly silent
    closed = lo + int((hold + 2 * FRAME_S + RELEASE_S) * SR)
    np.testing.assert_array_equal(y[closed:hi], 0)
    # reopened within a frame and the attack: the target again, bit for bit
    back = hi + int(2 * FRAME_S * SR)
    np.testing.assert_array_equal(y[back:], x[back:])
    # nothing is lost: it went to the residual (to float rounding in the fades)
    np.testing.assert_allclose(y + res.data, x, atol=1e-7)
    assert eng.mixgate.closed_samples >= hi - closed


def test_gate_stays_open_on_a_target_near_the_input_level():
    x = _noise(3 * SR, seed=5)
    eng, tgt, _ = _engine(Passthrough(), gate=True)
    run_fast(eng, _blocks(x), "speech")
    np.testing.assert_array_equal(tgt.data, x)
    assert eng.mixgate.closed_samples == 0


def test_gate_and_mix_commands_and_their_refusals():
    eng, _, _ = _engine(Passthrough())
    assert live.command(eng, "gate on").startswith("gate -> on (threshold -24 dB)")
    assert live.command(eng, "gate -30").startswith("gate -> on (threshold -30 dB)")
    assert live.command(eng, "gate off").startswith("gate -> off")
    assert "between -80 and 0 dB" in live.command(eng, "gate 12")
    assert "gate takes on, off or a threshold" in live.command(eng, "gate loud")
    assert "between 0" in live.command(eng, "mix 2")
    assert "between 0" in live.command(eng, "mix lots")
    assert eng.mixgate.requested == (1.0, False, -30.0)
    assert live.command(eng, "prompt mix 2") == "prompt -> 'mix 2' from the next window"
    assert live.command(eng, "a dog barking") == "prompt -> 'a dog barking' from the next window"


@pytest.mark.parametrize("args,needle", [
    (["--mix", "1.5"], "--mix must be between 0"),
    (["--mix", "nan"], "--mix must be between 0"),
    (["--gate-threshold", "3"], "--gate-threshold"),
    (["--gate-hold", "-1"], "--gate-hold must be between 0 and 10"),
    (["--virtual-mic", "bad name"], "--virtual-mic 'bad name'"),
    (["--virtual-mic", "--output-device", "x"], "drop -o"),
])
def test_bad_mix_gate_and_virtual_mic_options_are_one_line(capsys, args, needle):
    code, err = run_cli(capsys, "run", "-p", "speech", "--model", "passthrough", *args)
    one_error(code, err, needle)
