"""`--model FILE.py:NAME` / `package.module:NAME`: the README example end to end, every load error
as one line, and the fault-injection plugins in tests/plugins/ through `streamsep file`."""

import re
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT

from streamsep.cli import main
from streamsep.separators.base import ModelError
from streamsep.separators.plugin import check_separator, is_plugin_spec, load_plugin
from streamsep.separators.registry import load_separator

SR = 48000
PLUGINS = ROOT / "tests" / "plugins"
FAST = ["--window", "1", "--hop", "0.2", "--lookahead", "0.08", "--crossfade", "0.04"]


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("### Bring your own separator", 1)[1].split("\n### ", 1)[0]


def test_readme_plugin_example_runs_through_streamsep_file(tmp_path):
    section = _readme_section()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.startswith("# gain.py") and len(code.splitlines()) <= 20
    (tmp_path / "gain.py").write_text(code)
    cmd = re.search(r"```bash\n(streamsep file .*?)\n```", section, re.S).group(1)
    args = shlex.split(cmd)[1:]
    assert "--model" in args and args[args.index("--model") + 1] == "gain.py:Gain"
    args = [str(ROOT / a) if a == "model/demo.wav" else a.replace("out/", f"{tmp_path}/")
            for a in args]
    # the plugin is found relative to the folder the user runs streamsep in
    r = subprocess.run([sys.executable, "-m", "streamsep", *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "error" not in r.stderr and "warning" not in r.stderr, r.stderr
    mix, sr = sf.read(ROOT / "model" / "demo.wav", dtype="float32")
    half, sr1 = sf.read(tmp_path / "half.wav", dtype="float32")
    rest, sr2 = sf.read(tmp_path / "rest.wav", dtype="float32")
    assert sr == sr1 == sr2 and len(mix) == len(half) == len(rest)
    # -p speech has no "quiet": gain 0.5, exactly what the example says (16-bit files)
    assert np.max(np.abs(half - 0.5 * mix)) < 1e-3
    assert np.max(np.abs(half + rest - mix)) < 1e-3


def test_the_readme_example_as_a_module_and_as_an_instance(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", _readme_section(), re.S).group(1)
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "gains.py").write_text(code + "\n\ndef make():\n    return Gain()\n\n"
                                  "QUIET = Gain()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec in ("mypkg.gains:Gain", "mypkg.gains:make", "mypkg.gains:QUIET"):
        sep = load_separator(spec)
        sep.set_prompt("quiet please")
        t, r = sep.separate(np.ones(1920, np.float32), None, None)
        assert t.dtype == np.float32 and np.all(t == 0.25) and np.all(r == 0.75)


@pytest.mark.parametrize("spec, plugin", [
    ("gain.py:Gain", True), ("dir/gain.py", True), ("pkg.mod:Name", True), ("mod:make", True),
    ("passthrough", False), ("owner/repo", False), ("./model", False),
])
def test_plugin_specs_are_told_apart_from_other_models(spec, plugin):
    assert is_plugin_spec(spec) is plugin


def _write(tmp_path, body, name="plug.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


GOOD = """
    import numpy as np

    class Good:
        sample_rate = 48000
        frame_hop = 1920
        noise_channels = 0

        def set_prompt(self, text):
            pass

        def separate(self, window, noise, anchors=None):
            return window, np.zeros_like(window)
"""


def _err(spec):
    with pytest.raises(ModelError) as e:
        load_separator(spec)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_file_and_folder(tmp_path):
    assert "plugin file" in _err(f"{tmp_path}/nope.py:X") and "not found" in _err(
        f"{tmp_path}/nope.py:X")
    (tmp_path / "d.py").mkdir()
    assert "is a folder" in _err(f"{tmp_path}/d.py:X")


def test_import_error_names_the_exception_and_the_plugin_line(tmp_path):
    p = _write(tmp_path, """\
        import numpy as np

        SCALE = 1 / 0
    """)
    msg = _err(f"{p}:X")
    assert "ZeroDivisionError: division by zero" in msg and "plug.py line 3" in msg, msg


def test_error_inside_numpy_points_at_the_plugin_line_not_numpy(tmp_path):
    p = _write(tmp_path, """\
        import numpy as np

        x = np.zeros(3)
        y = np.reshape(x, (2, 2))
    """)
    msg = _err(f"{p}:X")
    assert "ValueError" in msg and "plug.py line 4" in msg, msg


def test_syntax_error_and_missing_dependency(tmp_path):
    p = _write(tmp_path, "class X:\n    def f(self)\n        pass\n")
    msg = _err(f"{p}:X")
    assert "not valid Python" in msg and "plug.py line 2" in msg, msg
    p = _write(tmp_path, "import numpy\nimport no_such_package_xyz\n", "dep.py")
    msg = _err(f"{p}:X")
    assert "needs the module 'no_such_package_xyz'" in msg and "dep.py line 2" in msg, msg
    assert "pip install no_such_package_xyz" in msg


def test_a_missing_name_lists_what_looks_like_a_separator(tmp_path):
    p = _write(tmp_path, GOOD + """
    def build():
        return Good()

    def helper(x):
        return x

    CONSTANT = 3
    """)
    msg = _err(f"{p}:Gut")
    assert "has no 'Gut'" in msg and "Good, build" in msg and "helper" not in msg, msg
    msg = _err(str(p))
    assert "name the separator" in msg and f"{p}:Good" in msg
    p = _write(tmp_path, "X = 1\n", "empty.py")
    assert "defines no separator" in _err(f"{p}:Y")


def test_module_not_found_and_module_import_error(tmp_path, monkeypatch):
    assert "no module named 'no_such_mod_xyz'" in _err("no_such_mod_xyz.sub:X")
    pkg = tmp_path / "brokenpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("import os\n\nraise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    msg = _err("brokenpkg.mod:X")
    assert "RuntimeError: no GPU here" in msg and "mod.py line 3" in msg, msg


@pytest.mark.parametrize("cls, needles", [
    ("class S:\n    pass\n", ["no sample_rate", "no frame_hop", "no noise_channels",
                              "no set_prompt(text)", "no separate(window, noise, anchors)"]),
    (GOOD.replace("frame_hop = 1920", "frame_hop = 0"), ["frame_hop must be a positive integer"]),
    (GOOD.replace("sample_rate = 48000", "sample_rate = 48000.0"), ["sample_rate must be"]),
    (GOOD.replace("noise_channels = 0", "noise_channels = -1"), ["noise_channels must be"]),
    (GOOD.replace("noise_channels = 0", "noise_channels = True"), ["noise_channels must be"]),
    (GOOD.replace("sample_rate = 48000", "sample_rate = 10**9"), ["above 768000 Hz"]),
    (GOOD.replace("def separate(self, window, noise, anchors=None)", "def separate(self, w)"),
     ["separate() must accept separate(window, noise, anchors)"]),
    (GOOD.replace("def set_prompt(self, text):", "def set_prompt(self):"),
     ["set_prompt() must accept"]),
    (GOOD + "\n        def prepare_prompt(self, text):\n            return text\n",
     ["prepare_prompt() without apply_prompt()"]),
])
def test_an_object_that_is_not_a_separator_is_named_with_what_it_lacks(tmp_path, cls, needles):
    body = textwrap.dedent(cls)
    name = re.search(r"class (\w+)", body).group(1)
    p = _write(tmp_path, body)
    msg = _err(f"{p}:{name}")
    assert "is not a usable separator" in msg
    for n in needles:
        assert n in msg, msg


def test_constructor_needing_arguments_or_raising(tmp_path):
    p = _write(tmp_path, GOOD + """
    class Needs(Good):
        def __init__(self, path, gain=1.0):
            self.path = path

    class Boom(Good):
        def __init__(self):
            raise OSError("weights.bin missing")
    """)
    msg = _err(f"{p}:Needs")
    assert "needs arguments (path)" in msg
    msg = _err(f"{p}:Boom")
    assert "Boom() failed: OSError: weights.bin missing" in msg and "plug.py line" in msg, msg


def test_plugin_errors_end_the_cli_in_one_line(capsys, tmp_path):
    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros(SR, np.float32), SR)
    p = _write(tmp_path, "raise ImportError('cannot find libfoo.so')\n")
    with pytest.raises(SystemExit) as e:
        main(["file", str(wav), "-p", "x", "-o", str(tmp_path / "o.wav"), "--model", f"{p}:X",
              *FAST])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: importing the plugin")
    assert "ImportError: cannot find libfoo.so" in lines[0]
    assert not (tmp_path / "o.wav").exists()


def test_fault_plugins_load_and_validate():
    for name in ("faulty.py:raising", "faulty.py:stalling", "faulty.py:Raising",
                 "corrupt.py:corrupt", "corrupt.py:Corrupt"):
        sep = load_plugin(str(PLUGINS / name))
        assert check_separator(sep) == []


def _file(capsys, tmp_path, model, seconds=3.0, extra=()):
    x = np.random.default_rng(1).uniform(-0.5, 0.5, int(seconds * SR)).astype(np.float32)
    wav = tmp_path / "in.wav"
    sf.write(wav, x, SR, subtype="FLOAT")
    out = tmp_path / "o.wav"
    try:
        main(["file", str(wav), "-p", "x", "-o", str(out), "--model", str(PLUGINS / model),
              *FAST, *extra])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, x, out, capsys.readouterr().err


def test_a_plugin_raising_on_some_windows_plays_dry_there_and_finishes(capsys, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("STREAMSEP_TEST_FAULT_WINDOWS", "3,5-7")
    monkeypatch.setenv("STREAMSEP_TEST_FAULT_EXC", "RuntimeError")
    code, x, out, err = _file(capsys, tmp_path, "faulty.py:raising")
    assert code == 0, err
    y, _ = sf.read(out, dtype="float32")
    np.testing.assert_array_equal(y, x)  # a passthrough, and dry where it failed
    assert "warning: window 3 at 0.6 s: the separator raised RuntimeError: injected fault on "\
           "window 3" in err
    assert "faulty.py line" in err and "error" not in err


def test_a_plugin_failing_on_every_window_ends_the_run_in_one_line(capsys, tmp_path):
    code, x, out, err = _file(capsys, tmp_path, "faulty.py:raising", seconds=11.0)
    assert code == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    line = next(i for i, t in enumerate((PLUGINS / "faulty.py").read_text().splitlines(), 1)
                if "raise self.exc(" in t)
    # 10 s of 0.2 s hops: windows 0..49 all failed
    assert errors == ["error: the separator failed on every window for 10 s (ValueError: "
                      f"injected fault on window 49 (at faulty.py line {line})): fix the model "
                      "or use --model passthrough"], err
    assert "Traceback" not in err
    y, _ = sf.read(out, dtype="float32")  # what was written before the end is kept, aligned
    assert 0 < len(y) < len(x)
    np.testing.assert_array_equal(y, x[: len(y)])


@pytest.mark.parametrize("mode", ["nan", "short", "int16", "stereo"])
def test_a_plugin_returning_broken_output_never_reaches_the_file(capsys, tmp_path, monkeypatch,
                                                                 mode):
    monkeypatch.setenv("STREAMSEP_TEST_CORRUPT_MODE", mode)
    monkeypatch.setenv("STREAMSEP_TEST_FAULT_WINDOWS", "2-4")
    code, x, out, err = _file(capsys, tmp_path, "corrupt.py:corrupt")
    assert code == 0, err
    y, _ = sf.read(out, dtype="float32")
    np.testing.assert_array_equal(y, x)
    assert "warning: window 2 at 0.4 s: the separator returned" in err
