"""`streamsep batch IN_DIR OUT_DIR`: the local process pool and a local Ray head; resuming from
the manifest, a worker killed mid-file, signals, and the one-line errors."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from cli_util import one_error, run_cli
from conftest import ROOT

from streamsep.batch import MANIFEST, BatchError, import_ray

SR = 48000
FAST = ["--window", "1", "--hop", "0.2", "--lookahead", "0.08", "--crossfade", "0.04"]
PLUGIN = ROOT / "tests" / "plugins" / "kill_once.py"
REST = "{stem}_rest.{ext}"


def _noise(seconds, channels=1, sr=SR, seed=0):
    shape = (int(seconds * sr),) if channels == 1 else (int(seconds * sr), channels)
    return (0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _archive(root):
    """in/ with a stereo 24-bit FLAC, a 44.1 kHz 16-bit WAV in a sub-folder, two float WAVs
    and a text file."""
    src = root / "in"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "a.flac", _noise(1.5, 2), SR, subtype="PCM_24")
    sf.write(src / "sub" / "b.wav", _noise(1.2, sr=44100, seed=1), 44100, subtype="PCM_16")
    sf.write(src / "c.wav", _noise(2.0, seed=2), SR, subtype="FLOAT")
    sf.write(src / "d.wav", _noise(1.0, seed=3), SR, subtype="FLOAT")
    (src / "notes.txt").write_text("not audio")
    return src


def _files(folder):
    """{relative path: (format, subtype, rate, channels, the samples' bytes)} of the audio
    files below ``folder``: bit for bit, but for the time stamp libsndfile puts in the PEAK
    chunk of a float WAV."""
    got = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            i = sf.info(p)
            x, _ = sf.read(p, dtype="float64", always_2d=True)  # exact for every subtype here
            got[str(p.relative_to(folder))] = (i.format, i.subtype, i.samplerate, i.channels,
                                               x.tobytes())
    return got


TORN = '{"input": "c.wav", "status": "do'  # a line cut short by a crash of the machine


def _manifest(out):
    lines = (out / MANIFEST).read_text().splitlines()
    return [json.loads(ln) for ln in lines if ln != TORN]


def _statuses(out):
    """{input: [status, ...]} in the order written."""
    got = {}
    for r in _manifest(out):
        got.setdefault(r["input"], []).append(r["status"])
    return got


def _batch(*args):
    """Run `streamsep batch` in its own process (spawned workers, real signals)."""
    return subprocess.run([sys.executable, "-m", "streamsep", "batch", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def _ok(*args):
    r = _batch(*args)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "error:" not in r.stderr, r.stderr
    return r.stderr


def _plugin(tmp_path, killed):
    """A private copy of the kill_once plugin; ``killed`` pre-creates its marker (a clean run)."""
    folder = tmp_path / ("plugin_clean" if killed else "plugin_killer")
    folder.mkdir()
    shutil.copy(PLUGIN, folder / "kill_once.py")
    if killed:
        (folder / "kill_once.killed").write_text("clean run")
    return f"{folder / 'kill_once.py'}:KillOnce", folder / "kill_once.killed"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The archive and what `streamsep file` makes of it (band-pass, with residuals)."""
    root = tmp_path_factory.mktemp("batch")
    src = _archive(root)
    out = root / "file_out"
    r = subprocess.run([sys.executable, "-m", "streamsep", "file", str(src), "-p", "speech",
                        "-o", str(out), "--residual-name", REST, "--model", "bandpass", *FAST],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return src, _files(out)


# -- the process pool ------------------------------------------------------------------------------
def test_the_pool_writes_what_file_writes_and_a_manifest(reference, tmp_path):
    src, want = reference
    out = tmp_path / "out"
    err = _ok(src, out, "-p", "speech", "--residual-name", REST, "--model", "bandpass",
              "--workers", "2", *FAST)
    assert _files(out) == want  # bit for bit, names, sub-folders, formats and channels
    assert "4 of 4 files separated" in err and "2 local worker processes" in err
    recs = _manifest(out)
    assert _statuses(out) == {k: ["started", "done"] for k in
                              ("a.flac", "sub/b.wav", "c.wav", "d.wav")}
    done = {r["input"]: r for r in recs if r["status"] == "done"}
    b = done["sub/b.wav"]
    assert b["size"] == (src / "sub" / "b.wav").stat().st_size
    assert b["mtime_ns"] == (src / "sub" / "b.wav").stat().st_mtime_ns
    assert b["outputs"] == {p: (out / p).stat().st_size
                            for p in ("sub/b_speech.wav", "sub/b_rest.wav")}
    assert b["seconds"] > 0 and abs(b["audio_s"] - 1.2) < 1e-6
    assert len({r["worker"] for r in done.values()}) == 2  # both workers took files
    assert not list(out.rglob(".*"))  # no .partial left


def test_a_second_run_skips_finished_files_and_redoes_the_rest(reference, tmp_path):
    src0, want = reference
    src = tmp_path / "in"
    shutil.copytree(src0, src)
    out = tmp_path / "out"
    _ok(src, out, "-p", "speech", "--residual-name", REST, "--model", "bandpass", *FAST)
    # a.flac: an attempt that never came back (as after kill -9 of the whole batch), with a
    # half-written output under its name; c.wav: its target deleted; d.wav: touched (mtime).
    with open(out / MANIFEST, "a") as f:
        f.write(json.dumps({"input": "a.flac", "status": "started", "attempt": 2}) + "\n")
        f.write(TORN)
    (out / "a_speech.flac").write_bytes((out / "a_speech.flac").read_bytes()[:1000])
    (out / "c_speech.wav").unlink()
    st = (src / "d.wav").stat()
    os.utime(src / "d.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    err = _ok(src, out, "-p", "speech", "--residual-name", REST, "--model", "bandpass", *FAST)
    assert "3 of 3 files separated" in err and "1 skipped (done before)" in err
    assert _files(out) == want
    s = _statuses(out)
    assert s["sub/b.wav"] == ["started", "done"]  # not touched again
    for k in ("a.flac", "c.wav", "d.wav"):
        assert s[k][-2:] == ["started", "done"], s
    # other settings are other outputs' contents: everything again
    err = _ok(src, out, "-p", "speech", "--residual-name", REST, "--model", "bandpass",
              "--seed", "1", *FAST)
    assert "4 of 4 files separated" in err
    err = _ok(src, out, "-p", "speech", "--residual-name", REST, "--model", "bandpass",
              "--seed", "1", *FAST)
    assert "nothing to do: all 4 files are separated already" in err


def test_a_worker_killed_mid_file_is_retried_and_nothing_is_lost_or_doubled(tmp_path):
    src = _archive(tmp_path)
    clean, _ = _plugin(tmp_path, killed=True)
    killer, marker = _plugin(tmp_path, killed=False)
    _ok(src, tmp_path / "clean", "-p", "speech", "--residual-name", REST, "--model", clean,
        "--workers", "2", *FAST)
    out = tmp_path / "out"
    err = _ok(src, out, "-p", "speech", "--residual-name", REST, "--model", killer,
              "--workers", "2", *FAST)
    assert marker.exists()  # a worker did die
    assert "was killed by SIGKILL; trying again (attempt 2 of 3)" in err, err
    assert _files(out) == _files(tmp_path / "clean")
    s = _statuses(out)
    assert sorted(s.values()) == [["started", "done"]] * 3 + [["started", "started", "done"]]
    assert not list(out.rglob(".*"))  # the killed attempt's .partial files were removed


def test_a_file_that_kills_every_worker_fails_alone(tmp_path):
    src = _archive(tmp_path)
    killer, marker = _plugin(tmp_path, killed=False)
    r = _batch(src, tmp_path / "out", "-p", "speech", "--model", killer, "--workers", "1",
               "--retries", "0", *FAST)
    assert marker.exists()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2, r.stderr  # the file's own line, then the batch's
    assert "c.wav: the worker was killed by SIGKILL on every attempt (1)" in errors[0]
    assert "1 of 4 files failed" in errors[1] and "run the same command again" in errors[1]
    s = _statuses(tmp_path / "out")
    assert sorted(v[-1] for v in s.values()) == ["done", "done", "done", "failed"]
    # the next run redoes only the failed one (the marker exists now: it passes)
    err = _ok(src, tmp_path / "out", "-p", "speech", "--model", killer, *FAST)
    assert "1 of 1 files separated" in err and "3 skipped" in err


def test_sigterm_finalizes_running_files_and_the_next_run_finishes(reference, tmp_path):
    src, want = reference
    out = tmp_path / "out"
    env = {**os.environ, "STREAMSEP_BUSY_S": "0.2"}
    cmd = [sys.executable, "-m", "streamsep", "batch", str(src), str(out), "-p", "speech",
           "--residual-name", REST, "--model", "tests/plugins/busy.py:Busy", "--workers", "1",
           *FAST]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # stop once the first file is done and another runs
        if (out / MANIFEST).exists() and (out / MANIFEST).read_text().count('"started"') >= 2:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 143, err
    lines = [ln for ln in err.splitlines() if ln.startswith("stopped by SIGTERM")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "1 interrupted and 2 not started" in lines[0], lines[0]
    s = _statuses(out)
    assert sorted(v[-1] for v in s.values()) == ["done", "interrupted"]
    assert not list(out.rglob(".*"))
    err = _ok(src, out, "-p", "speech", "--residual-name", REST, "--model",
              "tests/plugins/busy.py:Busy", *FAST)
    assert "3 of 3 files separated" in err and "1 skipped" in err
    # Busy is a passthrough: the target is the input, the residual silence
    got = _files(out)
    assert set(got) == set(want)
    np.testing.assert_array_equal(sf.read(out / "c_speech.wav")[0], sf.read(src / "c.wav")[0])


def test_long_files_split_into_segments_join_to_exactly_one_pass(reference, tmp_path):
    src, want = reference
    out = tmp_path / "out"
    # 0.4 s segments (two 0.2 s hops): a.flac (stereo, 1.5 s: 8 windows), c.wav (2 s: 10) and
    # d.wav (1 s: 5) are split at window boundaries; sub/b.wav (44.1 kHz) is resampled, so it
    # runs whole
    err = _ok(src, out, "-p", "speech", "--residual-name", REST, "--model", "bandpass",
              "--segment", "0.4", "--workers", "2", *FAST)
    assert "4 of 4 files separated" in err
    assert _files(out) == want
    done = {r["input"]: r for r in _manifest(out) if r["status"] == "done"}
    assert {k: r.get("segments") for k, r in done.items()} == \
        {"a.flac": 4, "c.wav": 5, "d.wav": 3, "sub/b.wav": None}
    assert _statuses(out)["c.wav"] == ["started", "done"]  # one line each, not per segment
    assert not list(out.rglob(".*"))  # the segments' parts are gone


def test_embedded_model_the_same_whatever_the_workers_and_segments(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    x, sr = sf.read(ROOT / "model" / "demo.wav", dtype="float32")
    sf.write(src / "demo.wav", x[: 6 * sr], sr, subtype="PCM_16")
    _ok(src, tmp_path / "one", "-p", "speech", "--workers", "1", "--segment", "0")
    _ok(src, tmp_path / "split", "-p", "speech", "--workers", "2", "--segment", "2")
    assert _files(tmp_path / "split") == _files(tmp_path / "one")
    r = subprocess.run([sys.executable, "-m", "streamsep", "file", str(src / "demo.wav"), "-p",
                        "speech", "-o", str(tmp_path / "file.wav")], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    # `file` runs OpenBLAS on every core, a batch worker on one: float rounding apart, the same
    a = sf.read(tmp_path / "file.wav", dtype="float64")[0]
    b = sf.read(tmp_path / "one" / "demo_speech.wav", dtype="float64")[0]
    assert a.shape == b.shape and np.max(np.abs(a - b)) <= 2**-15


# -- refusals --------------------------------------------------------------------------------------
def test_outputs_the_manifest_does_not_know_are_not_replaced(capsys, tmp_path):
    src = _archive(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "c_speech.wav").write_bytes(b"someone else's")
    code, err = run_cli(capsys, "batch", str(src), str(out), "-p", "speech", "--model",
                        "bandpass", *FAST)
    one_error(code, err, "c_speech.wav exists already", "--overwrite")
    assert (out / "c_speech.wav").read_bytes() == b"someone else's"


@pytest.mark.parametrize("args, needles", [
    (["missing_dir", "out"], ["IN_DIR missing_dir does not exist"]),
    (["{src}/c.wav", "out"], ["is not a folder", "streamsep file"]),
    (["{src}", "out", "--workers", "0"], ["--workers must be between 1 and 1024"]),
    (["{src}", "out", "--name", "{nope}.wav"], ["unknown field {nope}"]),
    (["{src}", "out", "--subtype", "PCM_99"], ["--subtype PCM_99"]),
    (["{src}", "out", "--budget", "1"], ["no such option", "--budget"]),
    (["{src}", "{src}/"], ["is IN_DIR", "another folder"]),
    (["{src}", "out", "--ray", "nowhere"], ["--ray nowhere", "HOST:PORT"]),
])
def test_bad_invocations_are_one_line(capsys, tmp_path, args, needles):
    src = _archive(tmp_path)
    args = [a.replace("{src}", str(src)) for a in args]
    if args[1] == "out":
        args[1] = str(tmp_path / "out")
    code, err = run_cli(capsys, "batch", *args, "-p", "speech", "--model", "bandpass")
    one_error(code, err, *needles)
    assert not (tmp_path / "out").exists()


def test_without_ray_the_option_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BatchError, match=r"pip install 'streamsep\[cluster\]'"):
        import_ray()


# -- Ray -------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A private Ray head on 127.0.0.1 (2 CPUs) in its own process group, which is what is
    stopped at the end (`ray stop` would stop every Ray on the machine). CI requires Ray
    (STREAMSEP_RAY_REQUIRED=1); elsewhere the tests skip without it."""
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        if os.environ.get("STREAMSEP_RAY_REQUIRED") == "1":
            pytest.fail("Ray is not installed: pip install -e '.[cluster]'")
        pytest.skip("Ray is not installed (pip install -e '.[cluster]')")
    port = _free_port()
    # Ray's default session folder (/tmp/ray): a pytest tmp path would make its socket paths
    # longer than a Unix socket name may be.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port",
         str(port), "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, "ray start --head exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not come up in 120 s"
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)


def test_ray_actors_write_what_the_pool_writes_and_retry_a_killed_worker(ray_head, tmp_path):
    src = _archive(tmp_path)
    clean, _ = _plugin(tmp_path, killed=True)
    killer, marker = _plugin(tmp_path, killed=False)
    _ok(src, tmp_path / "pool", "-p", "speech", "--residual-name", REST, "--model", clean,
        *FAST)
    out = tmp_path / "ray"
    err = _ok(src, out, "-p", "speech", "--residual-name", REST, "--model", killer,
              "--ray", ray_head, *FAST)
    assert marker.exists()  # an actor was killed mid-file; Ray restarted it and retried
    assert f"Ray at {ray_head}, 2 actors on 2 CPUs" in err, err
    assert _files(out) == _files(tmp_path / "pool")
    assert sorted(_statuses(out).values()) == [["started", "done"]] * 4
    assert not list(out.rglob(".*"))
    err = _ok(src, out, "-p", "speech", "--residual-name", REST, "--model", killer,
              "--ray", ray_head, *FAST)
    assert "nothing to do" in err
    # segments of long files are Ray tasks too, joined to what the pool writes in one pass
    _ok(src, tmp_path / "pool_bp", "-p", "speech", "--model", "bandpass", "--segment", "0",
        *FAST)
    _ok(src, tmp_path / "ray_bp", "-p", "speech", "--model", "bandpass", "--segment", "0.4",
        "--ray", ray_head, *FAST)
    assert _files(tmp_path / "ray_bp") == _files(tmp_path / "pool_bp")
    assert not list((tmp_path / "ray_bp").rglob(".*"))


def test_ray_at_an_address_where_none_runs_is_one_line(tmp_path):
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        pytest.skip("Ray is not installed")
    src = _archive(tmp_path)
    r = _batch(src, tmp_path / "out", "-p", "speech", "--model", "bandpass", "--ray",
               f"127.0.0.1:{_free_port()}", *FAST)
    one_error(r.returncode, r.stderr, "cannot connect to the Ray cluster", "ray start --head")


def test_ray_batch_stopped_by_sigint_keeps_the_manifest_consistent(ray_head, tmp_path):
    src = _archive(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "STREAMSEP_BUSY_S": "0.2"}
    cmd = [sys.executable, "-m", "streamsep", "batch", str(src), str(out), "-p", "speech",
           "--model", "tests/plugins/busy.py:Busy", "--ray", ray_head, *FAST]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # both actors busy, the first window or so written
        if (out / MANIFEST).exists() and (out / MANIFEST).read_text().count('"started"') >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.startswith("stopped by SIGINT")]
    assert len(lines) == 1 and "Traceback" not in err, err
    s = _statuses(out)
    # every file handed out came back (done or interrupted), none is left "started"
    assert all(v[-1] in ("done", "interrupted") for v in s.values()), s
    assert "interrupted" in [v[-1] for v in s.values()], s
    assert not list(out.rglob(".*"))
    err = _ok(src, out, "-p", "speech", "--model", "tests/plugins/busy.py:Busy", "--ray",
              ray_head, *FAST)
    np.testing.assert_array_equal(sf.read(out / "a_speech.flac")[0], sf.read(src / "a.flac")[0])
