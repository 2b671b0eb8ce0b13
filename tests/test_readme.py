"""The README's Python quick start must run as written against our package."""

import re

import numpy as np
import soundfile as sf
from conftest import ROOT, sam_tiny_with_tokenizer


def _quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("### SAM-Audio: the mlx-audio API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    code = _quick_start()
    assert 'SAMAudio.from_pretrained("facebook/sam-audio-large")' in code
    model_dir = sam_tiny_with_tokenizer(tmp_path)
    rng = np.random.default_rng(0)
    n = 48000 + 700  # not a multiple of the hop: the output is cut to whole latent frames
    sf.write(tmp_path / "audio.wav", 0.1 * rng.standard_normal(n).astype(np.float32), 48000)

    code = code.replace("facebook/sam-audio-large", str(model_dir))
    code = code.replace("path/to/audio.wav", str(tmp_path / "audio.wav"))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})

    out, sr = sf.read(tmp_path / "separated.wav", dtype="float32")
    assert sr == 48000
    hop = 1920
    assert len(out) == -(-n // hop) * hop
    assert np.isfinite(out).all() and np.abs(out).max() > 0


def test_readme_main_command_runs(tmp_path, monkeypatch):
    """The fresh-machine main job, as written (after the set-up step), from the repo root."""
    import shlex
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    cmd = re.search(r"```bash\nbash tools/setup.sh && (.*?)\n```", text).group(1)
    args = shlex.split(cmd)
    assert args[0] == ".venv/bin/streamsep" and "model/demo.wav" in args
    args = [a.replace("out/", f"{tmp_path}/") for a in args[1:]]
    r = subprocess.run([sys.executable, "-m", "streamsep", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "error" not in r.stderr, r.stderr
    mix, sr = sf.read(ROOT / "model" / "demo.wav", dtype="float32")
    speech, sr1 = sf.read(tmp_path / "speech.wav", dtype="float32")
    rest, sr2 = sf.read(tmp_path / "rest.wav", dtype="float32")
    assert sr == sr1 == sr2 and len(mix) == len(speech) == len(rest)
    # target + residual = mixture (16-bit files: within quantisation)
    assert np.max(np.abs(speech + rest - mix)) < 1e-3
    assert 0.05 < np.std(speech) / np.std(mix) < 1.0
