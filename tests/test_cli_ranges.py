"""Every numeric option is range-checked before anything loads: one 'error: ...' line naming it."""

import numpy as np
import pytest
import soundfile as sf
from cli_util import one_error, run_cli

SR = 48000
FAST = ["--model", "passthrough", "--window", "1", "--hop", "0.2", "--lookahead", "0.08",
        "--crossfade", "0.04"]

_cli, _one_error = run_cli, one_error


@pytest.fixture
def wav(tmp_path):
    p = tmp_path / "in.wav"
    sf.write(p, np.zeros(SR, np.float32), SR)
    return p


SHARED_BAD = [
    (["--window", "nan"], "--window must be a finite number"),
    (["--window", "inf"], "--window must be a finite number"),
    (["--window", "1e9"], "--window 1000000000.0 s is too long"),
    (["--window", "0"], "--window must be at least one latent frame"),
    (["--hop", "nan"], "--hop must be a finite number"),
    (["--hop", "0"], "--hop must be at least one latent frame"),
    (["--hop", "-inf"], "--hop must be a finite number"),
    (["--lookahead", "nan"], "--lookahead must be a finite number"),
    (["--lookahead", "-0.5"], "--lookahead must not be negative"),
    (["--crossfade", "inf"], "--crossfade must be a finite number"),
    (["--steps", "1000000"], "--steps must be at most 256"),
    (["--steps", "257"], "--steps must be at most 256"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--steps", "-3"], "--steps must be at least 1"),
    (["--seed", "-1"], "--seed must be between 0 and 2**64 - 1"),
    (["--seed", str(2**64)], "--seed must be between 0 and 2**64 - 1"),
    (["--budget", "nan"], "--budget must be between 0 and 60"),
    (["--budget", "inf"], "--budget must be between 0 and 60"),
    (["--budget", "-1"], "--budget must be between 0 and 60"),
    (["--budget", "61"], "--budget must be between 0 and 60"),
]


@pytest.mark.parametrize("knobs, needle", SHARED_BAD)
@pytest.mark.parametrize("command", ["file", "bench", "run"])
def test_shared_numeric_options(capsys, tmp_path, wav, command, knobs, needle):
    out = tmp_path / "o.wav"
    head = {"file": ["file", str(wav), "-p", "x", "-o", str(out)],
            "bench": ["bench", "--synthetic", "1", "--json", str(tmp_path / "b.json")],
            "run": ["run", "-p", "x"]}[command]
    code, err = _cli(capsys, *head, *FAST, *knobs)  # the later option wins
    _one_error(code, err, needle)
    assert not out.exists() and not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("knobs, needle", [
    (["--duration", "nan"], "--duration must be a positive number of seconds"),
    (["--duration", "inf"], "--duration must be a positive number of seconds"),
    (["--duration", "0"], "--duration must be a positive number of seconds"),
    (["--duration", "-2"], "--duration must be a positive number of seconds"),
    (["--latency", "nan"], "--latency must be low, high or seconds between 0 and 2"),
    (["--latency", "inf"], "--latency must be low, high or seconds between 0 and 2"),
    (["--latency", "2.5"], "--latency must be low, high or seconds between 0 and 2"),
    (["--latency", "-0.01"], "--latency must be low, high or seconds between 0 and 2"),
    (["--latency", "soon"], "--latency must be low, high or seconds between 0 and 2"),
    (["--blocksize", "1000000"], "--blocksize must be 0 (PortAudio chooses) or 16 to 16384"),
    (["--blocksize", "8"], "--blocksize must be 0 (PortAudio chooses) or 16 to 16384"),
    (["--blocksize", "-5"], "--blocksize must be 0 (PortAudio chooses) or 16 to 16384"),
])
def test_run_options(capsys, knobs, needle):
    code, err = _cli(capsys, "run", "-p", "speech", *FAST, *knobs)
    _one_error(code, err, needle)


@pytest.mark.parametrize("knobs", [
    ["--duration", "0.5"], ["--latency", "0"], ["--latency", "2"], ["--latency", "0.05"],
    ["--latency", "low"], ["--blocksize", "0"], ["--blocksize", "16"], ["--blocksize", "16384"],
    ["--blocksize", "1000"], ["--steps", "256"], ["--seed", str(2**64 - 1)], ["--budget", "0"],
])
def test_values_at_the_edges_of_the_ranges_pass_the_checks(capsys, knobs):
    # `run` goes on to open devices, which may not exist here: any error must not be the option's
    code, err = _cli(capsys, "run", "-p", "speech", "-i", "no-such-device-xyz", *FAST, *knobs)
    line = _one_error(code, err)
    assert knobs[0] not in line, line


def test_edge_values_run_a_file(capsys, tmp_path, wav):
    out = tmp_path / "o.wav"
    code, err = _cli(capsys, "file", str(wav), "-p", "x", "-o", str(out), *FAST, "--steps",
                     "256", "--seed", str(2**64 - 1), "--budget", "60", "--window", "120",
                     "--hop", "0.04", "--lookahead", "0", "--crossfade", "0")
    assert code == 0 and "error" not in err, err
    assert sf.info(out).frames == SR
