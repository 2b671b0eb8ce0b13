"""`streamsep file IN... -o OUT`: many inputs and folders, output naming, overwrite rules,
channels, sample formats, progress, verbosity, and `bench` writing JSON only where asked."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from cli_util import one_error, run_cli
from conftest import ROOT

from streamsep.audio.files import OutputSpec, check_space, output_format
from streamsep.engine.offline import ChannelLayout, run_file
from streamsep.engine.plan import WindowPlan
from streamsep.separators.simple import Passthrough

SR = 48000
FAST = ["--model", "passthrough", "--window", "1", "--hop", "0.2", "--lookahead", "0.08",
        "--crossfade", "0.04"]


def _noise(seconds, channels=1, sr=SR, seed=0):
    shape = (int(seconds * sr),) if channels == 1 else (int(seconds * sr), channels)
    return (0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _ok(capsys, *args):
    code, err = run_cli(capsys, *args)
    assert code in (0, None), err
    assert "Traceback" not in err and "error:" not in err, err
    return err


def _archive(root):
    """in/a.flac (stereo, 24-bit), in/sub/a.wav (mono 16-bit, 44.1 kHz), in/b.mp3, a text file,
    a broken .wav and a hidden folder."""
    (root / "in" / "sub").mkdir(parents=True)
    (root / "in" / ".cache").mkdir()
    sf.write(root / "in" / "a.flac", _noise(2.0, 2), SR, subtype="PCM_24")
    sf.write(root / "in" / "sub" / "a.wav", _noise(1.5, sr=44100, seed=1), 44100,
             subtype="PCM_16")
    sf.write(root / "in" / "b.mp3", _noise(1.0, seed=2), SR)
    sf.write(root / "in" / ".cache" / "hidden.wav", _noise(0.5), SR)
    (root / "in" / "notes.txt").write_text("not audio")
    (root / "in" / "broken.wav").write_bytes(b"RIFF but not really")
    return root / "in"


# -- inputs and names ------------------------------------------------------------------------------
def test_a_folder_is_searched_recursively_and_named_by_the_templates(capsys, tmp_path):
    src = _archive(tmp_path)
    out = tmp_path / "out"  # missing: created
    err = _ok(capsys, "file", str(src), "-p", "a dog barking", "-o", str(out),
              "--residual-name", "{stem}_rest.{ext}", *FAST)
    assert "3 audio files" in err
    assert "skipped 1 file that is not audio (notes.txt)" in err
    assert f"skipped {src / 'broken.wav'}" in err
    assert f"created the folder {out}" in err
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == ["a_a_dog_barking.flac", "a_rest.flac", "b_a_dog_barking.mp3", "b_rest.mp3",
                   "sub/a_a_dog_barking.wav", "sub/a_rest.wav"]
    # passthrough: the target is the input, in its rate, length, channels and sample format
    for name, ref in (("a_a_dog_barking.flac", src / "a.flac"),
                      ("sub/a_a_dog_barking.wav", src / "sub" / "a.wav")):
        i, r = sf.info(out / name), sf.info(ref)
        assert (i.samplerate, i.channels, i.frames, i.subtype) == \
            (r.samplerate, r.channels, r.frames, r.subtype)
    np.testing.assert_array_equal(sf.read(out / "a_a_dog_barking.flac")[0],
                                  sf.read(src / "a.flac")[0])
    assert not [p for p in out.rglob(".*")]  # no .partial left behind
    assert "3 of 3 files separated" in err


def test_many_files_into_an_existing_folder_and_a_template_with_subfolders(capsys, tmp_path):
    a, b = tmp_path / "x.wav", tmp_path / "y.wav"
    sf.write(a, _noise(1.0), SR)
    sf.write(b, _noise(1.0, seed=1), SR)
    out = tmp_path / "o"
    out.mkdir()
    # `-o EXISTING_DIR` used to fail with "unknown audio format '(none)'"
    _ok(capsys, "file", str(a), "-p", "speech", "-o", str(out), *FAST)
    assert (out / "x_speech.wav").exists()
    _ok(capsys, "file", str(a), str(b), "-p", "speech", "-o", str(out), "--name",
        "{stem}/{prompt}_{model}.flac", *FAST)
    assert sf.info(out / "x" / "speech_passthrough.flac").frames == SR
    assert sf.info(out / "y" / "speech_passthrough.flac").frames == SR


def test_output_folder_inside_the_input_folder_is_not_read_back(capsys, tmp_path):
    src = tmp_path / "music"
    src.mkdir()
    sf.write(src / "a.wav", _noise(1.0), SR)
    out = src / "separated"
    for _ in range(2):
        err = _ok(capsys, "file", str(src), "-p", "speech", "-o", str(out), "--overwrite",
                  *FAST)
        assert "1 audio file " in err
    assert sorted(p.name for p in out.iterdir()) == ["a_speech.wav"]


@pytest.mark.parametrize("args, needles", [
    (["--name", "{stem}_{nope}.wav"], ["--name", "unknown field {nope}", "{stem}"]),
    (["--name", "{stem}"], ["--name", "no extension"]),
    (["--name", "../{stem}.wav"], ["--name", "relative to the output folder"]),
    (["--residual-name", "/abs/{stem}.wav"], ["--residual-name", "relative"]),
    (["--name", "{stem}.xyz"], ["unknown audio format"]),
    (["--residual", "r.wav"], ["--residual names one file", "--residual-name"]),
])
def test_bad_templates_and_options_for_a_folder_are_one_line(capsys, tmp_path, args, needles):
    sf.write(tmp_path / "a.wav", _noise(0.5), SR)
    code, err = run_cli(capsys, "file", str(tmp_path / "a.wav"), "-p", "x", "-o",
                        str(tmp_path / "out") + "/", *args, *FAST)
    one_error(code, err, *needles)
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_a_file_output_takes_one_input_file(capsys, tmp_path):
    for n in ("a", "b"):
        sf.write(tmp_path / f"{n}.wav", _noise(0.5), SR)
    code, err = run_cli(capsys, "file", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "-p",
                        "x", "-o", str(tmp_path / "o.wav"), *FAST)
    one_error(code, err, "-o", "names one file", "2 inputs", "folder")
    code, err = run_cli(capsys, "file", str(tmp_path), "-p", "x", "-o",
                        str(tmp_path / "o.wav"), *FAST)
    one_error(code, err, "the input is a folder")
    code, err = run_cli(capsys, "file", str(tmp_path / "a.wav"), "-p", "x", "-o",
                        str(tmp_path / "o.wav"), "--name", "{stem}.wav", *FAST)
    one_error(code, err, "--name", "is a file")
    code, err = run_cli(capsys, "file", str(tmp_path / "nothing"), "-p", "x", "-o",
                        str(tmp_path / "out"), *FAST)
    one_error(code, err, "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    code, err = run_cli(capsys, "file", str(empty), "-p", "x", "-o", str(tmp_path / "out"),
                        *FAST)
    one_error(code, err, "no audio files", "1 other files skipped")


def test_two_inputs_with_the_same_output_name_are_refused(capsys, tmp_path):
    sf.write(tmp_path / "a.wav", _noise(0.5), SR)
    sf.write(tmp_path / "a.flac", _noise(0.5), SR)
    code, err = run_cli(capsys, "file", str(tmp_path / "a.wav"), str(tmp_path / "a.flac"), "-p",
                        "x", "-o", str(tmp_path / "out"), "--name", "{stem}.wav", *FAST)
    one_error(code, err, "a.wav and", "a.flac", "would both be written", "{stem}")
    code, err = run_cli(capsys, "file", str(tmp_path / "a.wav"), "-p", "x", "-o",
                        str(tmp_path / "out"), "--name", "{stem}.wav", "--residual-name",
                        "{stem}.wav", *FAST)
    one_error(code, err, "the same file")


# -- never overwrite an input; existing outputs only with --overwrite ------------------------------
def test_an_input_is_never_overwritten_also_through_links(capsys, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, _noise(0.5), SR)
    before = src.read_bytes()
    (tmp_path / "link.wav").symlink_to(src)
    os.link(src, tmp_path / "hard.wav")
    for target in ("link.wav", "hard.wav"):
        code, err = run_cli(capsys, "file", str(src), "-p", "x", "-o", str(tmp_path / target),
                            "--overwrite", *FAST)
        one_error(code, err, "is the input file")
    # a folder whose template gives the input's own name, even with --overwrite
    code, err = run_cli(capsys, "file", str(tmp_path / "in.wav"), "-p", "x", "-o",
                        str(tmp_path), "--name", "{stem}.{ext}", "--overwrite", *FAST)
    one_error(code, err, "is the input file")
    # ... also where the input is reached through a link to it
    code, err = run_cli(capsys, "file", str(tmp_path / "link.wav"), "-p", "x", "-o",
                        str(tmp_path), "--name", "in.wav", "--overwrite", *FAST)
    one_error(code, err, "is the input file")
    assert src.read_bytes() == before


def test_existing_outputs_need_overwrite(capsys, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, _noise(0.5), SR)
    out = tmp_path / "o.wav"
    sf.write(out, np.full(10, 0.5, np.float32), SR)
    code, err = run_cli(capsys, "file", str(src), "-p", "x", "-o", str(out), *FAST)
    one_error(code, err, "exists already", "--overwrite")
    assert sf.info(out).frames == 10  # untouched
    _ok(capsys, "file", str(src), "-p", "x", "-o", str(out), "--overwrite", *FAST)
    assert sf.info(out).frames == SR // 2


# -- channels ----------------------------------------------------------------------------------
def test_channel_layouts():
    x = np.random.default_rng(0).standard_normal((100, 2)).astype(np.float32)
    ms = ChannelLayout("midside", 2)
    np.testing.assert_allclose(ms.join(np.stack(ms.split(x), 1)), x, atol=1e-6)
    assert (ms.lanes, ms.out_channels) == (2, 2)
    assert ChannelLayout("midside", 6).mode == "keep"  # mid/side is for stereo only
    assert (ChannelLayout("keep", 6).lanes, ChannelLayout("mono", 6).out_channels) == (6, 1)
    assert ChannelLayout("keep", 1).mode == "mono"


@pytest.mark.parametrize("mode", ["keep", "midside"])
def test_stereo_passthrough_comes_back_unchanged(tmp_path, mode):
    x = _noise(2.0, 2)
    src = tmp_path / "st.wav"
    sf.write(src, x, SR, subtype="FLOAT")
    plan = WindowPlan.from_seconds(SR, 1920, 1.0, 0.2, 0.08, 0.04)
    s = run_file(Passthrough(), plan, str(src), str(tmp_path / "t.wav"), prompt="x",
                 residual_path=str(tmp_path / "r.wav"), channels=mode)
    t = sf.read(tmp_path / "t.wav", dtype="float32")[0]
    r = sf.read(tmp_path / "r.wav", dtype="float32")[0]
    assert t.shape == x.shape and s["channels"] == 2 and s["lane_windows"] == 2 * s["windows"]
    np.testing.assert_allclose(t, x, atol=1e-6)
    np.testing.assert_allclose(r, 0, atol=1e-6)


def test_each_channel_is_separated_as_its_own_mono_file_would_be(tmp_path):
    """The embedded model, shared by the channels' engines: channel c of a multichannel run
    equals the run of channel c alone (no lane sees another's audio or state)."""
    from streamsep.separators.registry import load_separator

    d = np.load(ROOT / "tests" / "fixtures" / "embedded_demo.npz")
    import soxr

    up = [soxr.resample(d[k][: 4 * 16000].astype(np.float32), 16000, SR)
          for k in ("speech", "music", "noise")]
    x = np.stack([0.7 * up[0] + 0.4 * up[1], 0.3 * up[0] + 0.6 * up[1],
                  0.5 * up[0] + 0.5 * up[2]], 1).astype(np.float32)
    src = tmp_path / "three.wav"
    sf.write(src, x, SR, subtype="FLOAT")
    sep = load_separator("embedded")
    sep.set_prompt("speech")
    plan = WindowPlan.from_seconds(SR, sep.frame_hop, 2.0, 0.5, 0.25, 0.1)
    run_file(sep, plan, str(src), str(tmp_path / "all.wav"), prompt="speech")
    both = sf.read(tmp_path / "all.wav", dtype="float32")[0]
    assert both.shape == x.shape
    for c in range(3):
        one = tmp_path / f"c{c}.wav"
        sf.write(one, x[:, c], SR, subtype="FLOAT")
        run_file(sep, plan, str(one), str(tmp_path / f"o{c}.wav"), prompt="speech")
        np.testing.assert_array_equal(both[:, c],
                                      sf.read(tmp_path / f"o{c}.wav", dtype="float32")[0])
    assert np.abs(both[:, 0] - both[:, 1]).max() > 0.01  # the channels really differ


def test_channels_on_the_command_line(capsys, tmp_path):
    src = tmp_path / "six.flac"
    sf.write(src, _noise(1.0, 6), SR)
    _ok(capsys, "file", str(src), "-p", "x", "-o", str(tmp_path / "k.flac"), *FAST)
    assert sf.info(tmp_path / "k.flac").channels == 6
    err = _ok(capsys, "file", str(src), "-p", "x", "-o", str(tmp_path / "m.flac"), "--channels",
              "mono", *FAST)
    assert sf.info(tmp_path / "m.flac").channels == 1 and "downmixing 6 channels" in err
    # the live path is mono: --realtime downmixes, and says so
    st = tmp_path / "st.wav"
    sf.write(st, _noise(0.6, 2), SR)
    err = _ok(capsys, "file", str(st), "-p", "x", "-o", str(tmp_path / "rt.wav"), "--realtime",
              "--budget", "0.05", *FAST)
    assert "mono downmix" in err and sf.info(tmp_path / "rt.wav").channels == 1


def test_a_region_separator_needs_one_copy_per_channel(tmp_path):
    class Cached(Passthrough):
        def separate_region(self, window, noise, anchors, *, start, emit):
            return window[emit].copy(), np.zeros(emit.stop - emit.start, np.float32)

    src = tmp_path / "st.wav"
    sf.write(src, _noise(1.0, 2), SR)
    plan = WindowPlan.from_seconds(SR, 1920, 1.0, 0.2, 0.08, 0.04)
    with pytest.raises(ValueError, match="one separator per channel"):
        run_file(Cached(), plan, str(src), str(tmp_path / "o.wav"), prompt="x")
    run_file([Cached(), Cached()], plan, str(src), str(tmp_path / "o.wav"), prompt="x")
    np.testing.assert_array_equal(sf.read(tmp_path / "o.wav")[0], sf.read(src)[0])


# -- sample formats ------------------------------------------------------------------------------
def test_subtype_defaults_to_the_inputs_where_the_format_allows(tmp_path):
    p = str(tmp_path / "o")
    assert output_format(p + ".wav", like="PCM_16") == ("WAV", "PCM_16")
    assert output_format(p + ".flac", like="PCM_24") == ("FLAC", "PCM_24")
    assert output_format(p + ".flac", like="FLOAT") == ("FLAC", "PCM_24")
    assert output_format(p + ".wav", like="MPEG_LAYER_III") == ("WAV", "FLOAT")
    assert output_format(p + ".wav", like="DOUBLE") == ("WAV", "DOUBLE")
    assert output_format(p + ".ogg", like="PCM_16") == ("OGG", None)
    assert output_format(p + ".wav") == ("WAV", "FLOAT")  # the API default as before
    assert output_format(p + ".wav", subtype="pcm_24") == ("WAV", "PCM_24")
    # RF64 and the space check count the channels and bytes per sample
    frames = 8 * 10**8  # 4.8 GB as stereo 24-bit (past 4 GiB), 3.2 GB as stereo 16-bit
    assert output_format(p + ".wav", frames, channels=2, subtype="PCM_24")[0] == "RF64"
    assert output_format(p + ".wav", frames, channels=2, subtype="PCM_16")[0] == "WAV"
    with pytest.raises(Exception, match="not enough space"):
        check_space([OutputSpec(p + ".wav", 10**12, 2, "PCM_16")])


def test_subtype_on_the_command_line(capsys, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, _noise(0.5), SR, subtype="FLOAT")
    _ok(capsys, "file", str(src), "-p", "x", "-o", str(tmp_path / "a.wav"), "--subtype",
        "PCM_16", *FAST)
    assert sf.info(tmp_path / "a.wav").subtype == "PCM_16"
    _ok(capsys, "file", str(src), "-p", "x", "-o", str(tmp_path / "b.flac"), *FAST)
    assert sf.info(tmp_path / "b.flac").subtype == "PCM_24"
    _ok(capsys, "file", str(src), "-p", "x", "-o", str(tmp_path / "c.wav"), *FAST)
    assert sf.info(tmp_path / "c.wav").subtype == "FLOAT"
    code, err = run_cli(capsys, "file", str(src), "-p", "x", "-o", str(tmp_path / "d.flac"),
                        "--subtype", "FLOAT", *FAST)
    one_error(code, err, "--subtype FLOAT", ".flac", "PCM_24")
    assert not (tmp_path / "d.flac").exists()
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.full(SR // 2, 1.5, np.float32), SR, subtype="FLOAT")
    err = _ok(capsys, "file", str(loud), "-p", "x", "-o", str(tmp_path / "e.wav"), "--subtype",
              "PCM_16", *FAST)
    assert "clipped" in err and "--subtype FLOAT" in err


# -- a batch that meets a bad file, or a signal ------------------------------------------------
def test_one_bad_file_of_many_is_reported_and_the_others_are_written(capsys, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", _noise(0.5), SR)
    bad = _noise(0.5)
    bad[100] = np.nan
    sf.write(src / "b.wav", bad, SR, subtype="FLOAT")
    sf.write(src / "c.wav", _noise(0.5), SR)
    code, err = run_cli(capsys, "file", str(src), "-p", "x", "-o", str(tmp_path / "out"), *FAST)
    assert code == 1, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 2 and "NaN" in errors[0] and "1 of 3 files failed" in errors[1], err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x.wav", "c_x.wav"]


def test_a_full_disk_stops_the_batch(capsys, tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(tiny)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        src = tmp_path / "in"
        src.mkdir()
        for i in range(3):
            sf.write(src / f"{i}.wav", _noise(20.0, seed=i) * 3, SR, subtype="FLOAT")
        # FLAC's size is not known up front, so the disk fills during the first file
        code, err = run_cli(capsys, "file", str(src), "-p", "x", "-o", str(tiny), "--name",
                            "{stem}.flac", *FAST)
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert code == 1 and len(errors) == 1 and "is full" in errors[0], err
        assert [p.name for p in tiny.iterdir()] == ["0.flac"]  # kept; the others not begun
    finally:
        subprocess.run(["umount", "-l", str(tiny)], capture_output=True)


def _size(path):
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed into place between the listing and the stat
        return 0


def test_a_signal_stops_the_batch_with_the_current_file_finalized(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    xs = [_noise(5.0, seed=i) for i in range(3)]
    for i, x in enumerate(xs):
        sf.write(src / f"{i}.wav", x, SR, subtype="FLOAT")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "streamsep", "file", str(src), "-p", "x", "-o", str(out),
           "--realtime", "--budget", "0.1", *FAST]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    # File 1 is done and file 2 has separated audio on disk (past its header): on a busy machine
    # the first window of file 2 may take longer than any fixed sleep, and a signal before it
    # rightly leaves no file 2 at all.
    while time.monotonic() < deadline:
        parts = [p for p in out.iterdir() if p.name.startswith(".1_x.wav")] if out.exists() else []
        if (out / "0_x.wav").exists() and parts and _size(parts[0]) > 16384:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "error:" not in err, err
    assert "stopped by SIGTERM" in err and "1 file not started" in err, err
    np.testing.assert_array_equal(sf.read(out / "0_x.wav", dtype="float32")[0], xs[0])
    part = sf.read(out / "1_x.wav", dtype="float32")[0]
    assert 0 < len(part) < len(xs[1])
    np.testing.assert_array_equal(part, xs[1][: len(part)])
    assert sorted(p.name for p in out.iterdir()) == ["0_x.wav", "1_x.wav"]


# -- progress, verbosity, help -------------------------------------------------------------------
def _on_a_terminal(args):
    """stderr of ``streamsep ARGS`` run on a pseudo-terminal 100 columns wide."""
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout and stderr are the terminal
        try:
            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
            os.chdir(ROOT)
            os.execv(sys.executable, [sys.executable, "-m", "streamsep", *args])
        finally:
            os._exit(127)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def test_progress_bars_show_on_a_terminal_only(tmp_path):
    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", _noise(30.0, seed=i), SR)
    args = ["file", str(tmp_path / "0.wav"), str(tmp_path / "1.wav"), "-p", "x", "-o",
            str(tmp_path / "out"), "--overwrite", *FAST]
    code, text = _on_a_terminal(args)
    assert code == 0, text
    assert "all 2 files" in text and "0.wav" in text and "%" in text, text
    assert "/60 s [" in text and "/30 s [" in text  # seconds of audio, time spent < time left
    assert "note: wrote" in text
    code, text = _on_a_terminal(["-q", *args])
    assert code == 0 and text.strip() == "", text  # -q: no notes, no bars
    r = subprocess.run([sys.executable, "-m", "streamsep", *args], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "%" not in r.stderr and "note: wrote" in r.stderr


def test_quiet_and_verbose(capsys, tmp_path):
    sf.write(tmp_path / "a.wav", _noise(0.5), SR)
    (tmp_path / "x.txt").write_text("x")
    args = ["-p", "x", "-o", str(tmp_path / "out"), "--overwrite", *FAST]
    assert _ok(capsys, "-q", "file", str(tmp_path), *args) == ""
    assert _ok(capsys, "file", str(tmp_path), *args, "-q") == ""
    err = _ok(capsys, "-v", "file", str(tmp_path), *args)
    assert f"skipped {tmp_path / 'x.txt'}" in err and "windows, mean RTF" in err
    err = _ok(capsys, "file", str(tmp_path), *args)  # -q/-v do not stick to later calls
    assert "note: wrote" in err and "mean RTF" not in err
    code, err = run_cli(capsys, "-q", "file", str(tmp_path / "nope.wav"), *args)
    one_error(code, err, "not found")  # errors are shown with -q


@pytest.mark.parametrize("command", ["devices", "run", "file", "bench"])
def test_every_command_help_has_examples(command):
    from click.testing import CliRunner

    from streamsep.cli import cli

    r = CliRunner().invoke(cli, [command, "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and f"streamsep {command}" in r.output


def test_version(capsys):
    from click.testing import CliRunner

    from streamsep.cli import cli

    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "streamsep, version" in r.output


# -- bench writes JSON only where --json says ----------------------------------------------------
def test_bench_writes_no_json_uninvited(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "bench", "--synthetic", "2", *FAST)
    assert code in (0, None), err
    assert list(tmp_path.iterdir()) == []
    code, err = run_cli(capsys, "bench", "--synthetic", "2", "--json", "b.json", *FAST)
    assert code in (0, None) and (tmp_path / "b.json").exists(), err
