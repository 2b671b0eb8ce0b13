import pytest

from streamsep.engine.plan import PlanError, WindowPlan


def test_defaults_are_whole_frames_and_latency_is_h_plus_r_plus_x():
    p = WindowPlan.from_seconds(48000, 1920)
    assert p.window == 10 * 48000
    assert (p.hop, p.lookahead, p.crossfade) == (2 * 48000, 48000, 19200)
    assert p.algorithmic_latency == p.hop + p.lookahead + p.crossfade
    assert p.emit_start(p.first_end) == 0


def test_lengths_round_to_nearest_frame():
    p = WindowPlan.from_seconds(48000, 1920, window=1.0, hop=0.21, lookahead=0.05, crossfade=0.03)
    assert p.hop_frames == 5 and p.lookahead_frames == 1 and p.crossfade_frames == 1
    assert p.window % 1920 == 0


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(window=2.0, hop=1.5, lookahead=0.5, crossfade=0.2), "must not exceed --window"),
        (dict(hop=0.01), "--hop must be at least one latent frame"),
        (dict(hop=0.2, crossfade=0.4), "--crossfade"),
        (dict(lookahead=-1.0), "--lookahead must not be negative"),
        (dict(window=float("nan")), "--window must be a finite"),
        (dict(window=1000.0), "--window 1000.0 s is too long"),
    ],
)
def test_impossible_settings_are_rejected_with_the_knob_named(kw, needle):
    with pytest.raises(PlanError, match=needle.replace("(", r"\(").replace("+", r"\+")):
        WindowPlan.from_seconds(48000, 1920, **kw)
