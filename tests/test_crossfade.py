import numpy as np

from streamsep.engine.crossfade import Crossfader, fade_weights


def test_weights_sum_to_one_and_are_monotonic():
    for n in (1, 2, 7, 1920, 19200):
        fi, fo = fade_weights(n)
        np.testing.assert_allclose(fi + fo, 1.0, atol=1e-15)
        assert np.all(np.diff(fi) > 0) and 0 < fi[0] <= fi[-1] < 1


def test_blend_of_identical_signals_is_bit_exact():
    x = np.random.default_rng(0).standard_normal(480).astype(np.float32)
    head = x.copy()
    Crossfader(480).blend(x.copy(), head)
    np.testing.assert_array_equal(head, x)


def test_blend_moves_from_old_to_new():
    old = np.ones(100, np.float32)
    new = np.zeros(100, np.float32)
    Crossfader(100).blend(old, new)
    fi, fo = fade_weights(100)
    np.testing.assert_allclose(new, fo, atol=1e-6)
    assert new[0] > 0.99 and new[-1] < 0.01
