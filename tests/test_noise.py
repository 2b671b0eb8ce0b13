import numpy as np

from streamsep.engine.noise import position_noise


def test_noise_of_a_frame_depends_only_on_seed_and_frame():
    a = position_noise(7, 10, 30, 16)  # frames 10..39
    b = position_noise(7, 25, 30, 16)  # frames 25..54
    np.testing.assert_array_equal(a[15:], b[:15])
    assert not np.array_equal(a[:15], b[15:])


def test_negative_frames_and_other_seeds():
    a = position_noise(1, -5, 10, 4)
    np.testing.assert_array_equal(a[5:], position_noise(1, 0, 5, 4))
    assert not np.allclose(position_noise(2, 0, 5, 4), a[5:])


def test_noise_is_standard_normal_float32():
    z = position_noise(0, 0, 4000, 64)
    assert z.dtype == np.float32 and z.shape == (4000, 64)
    assert abs(float(z.mean())) < 0.01
    assert abs(float(z.std()) - 1.0) < 0.01
    # channels and neighbouring frames are uncorrelated
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.05
    assert abs(np.corrcoef(z[1:, 0], z[:-1, 0])[0, 1]) < 0.05
