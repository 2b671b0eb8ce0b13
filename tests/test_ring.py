import numpy as np

from streamsep.engine.ring import HistoryRing, PlaybackRing


def test_history_ring_reads_back_written_ranges_across_wraparound():
    r = HistoryRing(100)
    x = np.arange(1, 351, dtype=np.float32)
    for i in range(0, 350, 37):
        r.write(x[i : i + 37])
    out = np.empty(60, np.float32)
    assert r.read(280, out) == 0
    np.testing.assert_array_equal(out, x[280:340])


def test_history_ring_pads_before_start_and_after_write_pos():
    r = HistoryRing(100)
    r.write(np.arange(1, 11, dtype=np.float32))
    out = np.full(20, 7, np.float32)
    assert r.read(-5, out) == 0
    np.testing.assert_array_equal(out[:5], 0)
    np.testing.assert_array_equal(out[5:15], np.arange(1, 11))
    np.testing.assert_array_equal(out[15:], 0)


def test_history_ring_reports_overwritten_samples():
    r = HistoryRing(50)
    r.write(np.ones(120, np.float32))
    out = np.empty(30, np.float32)
    assert r.read(60, out) == 10  # positions 60..69 were overwritten (oldest kept: 70)
    np.testing.assert_array_equal(out[:10], 0)
    np.testing.assert_array_equal(out[10:], 1)


def test_playback_ring_plays_scheduled_samples_in_order():
    r = PlaybackRing(64)
    r.start(-4)
    r.write_at(0, np.arange(1, 9, dtype=np.float32))
    out = np.empty(6, np.float32)
    assert r.read_into(out) == (-4, 0)  # pre-roll positions are not underruns
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, 2])
    assert r.read_into(out) == (2, 0)
    np.testing.assert_array_equal(out, [3, 4, 5, 6, 7, 8])


def test_playback_ring_underrun_keeps_position_and_late_samples_are_dropped():
    r = PlaybackRing(64)
    r.start(0)
    out = np.empty(10, np.float32)
    assert r.read_into(out) == (0, 10)  # nothing ready: all missing, position still advances
    assert r.read_pos == 10
    r.write_at(0, np.arange(1, 21, dtype=np.float32))  # first 10 samples are late
    assert r.late_samples == 10
    assert r.read_into(out) == (10, 0)
    np.testing.assert_array_equal(out, np.arange(11, 21))


def test_playback_ring_never_overwrites_unplayed_audio():
    r = PlaybackRing(16)
    r.start(0)
    r.write_at(0, np.ones(20, np.float32))
    assert r.overflow_samples == 4
