"""`streamsep eval`: a click command that scores the held-out set shipped in the package by
default, reads both corpus layouts, writes its own with --make-corpus, and fails in one line."""

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import soundfile as sf
from cli_util import one_error, run_cli
from conftest import ROOT

from streamsep.evaluation import BUNDLED_CORPUS, INDEX, load_mixtures, si_sdr

KINDS = ("speech+music", "speech+noise", "speech+music+noise", "real_speech+music",
         "real_speech+noise")


def _eval_json(capsys, tmp_path, *args):
    path = tmp_path / "eval.json"
    code, err = run_cli(capsys, "eval", *args, "--json", str(path))
    assert code in (0, None), err
    return json.loads(path.read_text())


def test_the_bundled_set_is_twenty_held_out_mixtures_small_and_licensed():
    index = json.loads((BUNDLED_CORPUS / INDEX).read_text())
    mixtures = index["mixtures"]
    assert len(mixtures) == 20
    assert sorted(m["kind"] for m in mixtures) == sorted(KINDS * 4)
    files = [BUNDLED_CORPUS / f for m in mixtures for f in m["files"].values()]
    assert sorted(p.name for p in BUNDLED_CORPUS.glob("*.flac")) == sorted(p.name for p in files)
    for p in files:
        i = sf.info(p)
        assert (i.samplerate, i.channels, i.frames, i.subtype) == (16000, 1, 160000, "PCM_16")
    size = sum(p.stat().st_size for p in BUNDLED_CORPUS.iterdir())
    assert size <= 20e6, size
    lic = (BUNDLED_CORPUS / "LICENSES.md").read_text()
    for origin in ("espeak-ng", "Flite", "cmu_us_slt_arctic_hts", "LibriVox", "codec2",
                   "Planet Blupi", "FluidR3", "GPL-3+", "LGPL-2.1", "public domain"):
        assert origin in lic, origin
    # every recorded-speech mixture is listed in the recorded-speech row, and no other one
    row = next(ln for ln in lic.splitlines() if ln.startswith("| `speech` of `real_speech"))
    real = sorted(m["id"] for m in mixtures if m["kind"].startswith("real_speech"))
    assert [i for i in (m["id"] for m in mixtures) if i in row] == real


def test_the_package_data_globs_take_every_file_of_the_set_into_a_wheel():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["streamsep"]
    for p in BUNDLED_CORPUS.iterdir():
        rel = p.relative_to(ROOT / "streamsep").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel
    assert "recursive-include streamsep/data/eval" in (ROOT / "MANIFEST.in").read_text()


def test_eval_scores_the_bundled_set_by_default(capsys, tmp_path):
    res = _eval_json(capsys, tmp_path, "--model", "passthrough", "--limit", "5")
    assert res["corpus"] == str(BUNDLED_CORPUS)
    rows = [r for r in res["rows"] if r["method"] == "model"]
    # 5 mixtures: 3 with music, all with speech; a trained and a held-out wording each
    assert len(rows) == 2 * (5 + 3)
    for r in rows:  # passthrough returns the mixture: no improvement, through two resamplers
        assert abs(r["sisdri"]) < 0.2, r
    # the mixture is the sum of the stored sources: the baseline the test computes itself
    m = json.loads((BUNDLED_CORPUS / INDEX).read_text())["mixtures"][0]
    src = {n: sf.read(BUNDLED_CORPUS / f, dtype="float32")[0] for n, f in m["files"].items()}
    mix = np.sum([src[n] for n in sorted(src)], axis=0, dtype=np.float32)
    base = next(r for r in res["rows"] if r["id"] == m["id"] and r["method"] == "mixture"
                and r["target"] == "speech")
    assert base["sisdr"] == pytest.approx(si_sdr(mix, src["speech"]), abs=1e-9)


def test_the_table_goes_to_stdout_and_json_dash_moves_it_to_stderr(capsys):
    from streamsep.cli import main

    main(["eval", "--model", "passthrough", "--limit", "1"])
    cap = capsys.readouterr()
    assert "SI-SDRi" in cap.out and "SI-SDRi" not in cap.err
    main(["eval", "--model", "passthrough", "--limit", "1", "--json", "-"])
    cap = capsys.readouterr()
    assert json.loads(cap.out)["offline"]["table"]
    assert "SI-SDRi" in cap.err


def test_seams_score_the_engine_pass(capsys, tmp_path):
    """--seams runs the engine pass and scores its seams per prompt class: windows of a
    passthrough agree exactly where they overlap, the embedded model's do not (but closely),
    and every figure is a number, in the JSON and in the table."""
    from streamsep.cli import main

    path = tmp_path / "seams.json"
    main(["eval", "--seams", "--limit", "2", "--engine-limit", "2", "--json", str(path)])
    out = capsys.readouterr().out
    res = json.loads(path.read_text())
    assert "engine" in res and set(res["seams"]) == {"speech", "music"}
    speech = res["seams"]["speech"]
    assert speech["mixtures"] == 2 and res["seams"]["music"]["mixtures"] == 1
    for key in ("sisdri", "near_minus_elsewhere", "disagreement_db"):
        assert np.isfinite(speech[key]), (key, speech)
    assert speech["discontinuity"]["ratio"] > 0 and speech["discontinuity"]["seam_points"] > 0
    assert -60 < speech["disagreement_db"] < 0, speech
    assert "seams, speech (2 mixtures)" in out and "seams, music (1 mixture)" in out
    flat = _eval_json(capsys, tmp_path, "--model", "passthrough", "--seams", "--limit", "1",
                      "--engine-limit", "1")
    assert flat["seams"]["speech"]["disagreement_db"] < -200  # identical overlaps


def _npz_corpus(folder, n=2):
    """A corpus in tools/make_corpus.py's layout, from noise and tones."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    meta, arrays = [], {}
    t = np.arange(160000) / 16000
    for i in range(n):
        speech = (0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t) * (t % 1 < 0.6)).astype(np.float32)
        noise = (0.05 * rng.standard_normal(len(t))).astype(np.float32)
        key = f"m{i:03d}"
        arrays.update({f"{key}/speech": speech, f"{key}/noise": noise,
                       f"{key}/mixture": speech + noise})
        meta.append({"id": key, "kind": "speech+noise", "sources": ["noise", "speech"]})
    (folder / "test_mixtures.json").write_text(json.dumps(meta))
    np.savez(folder / "test_mixtures.npz", **arrays)
    return arrays


def test_make_corpus_writes_a_corpus_that_scores_like_its_source(capsys, tmp_path):
    arrays = _npz_corpus(tmp_path / "npz")
    code, err = run_cli(capsys, "eval", "--corpus", str(tmp_path / "npz"), "--make-corpus",
                        str(tmp_path / "flac"))
    assert code in (0, None), err
    assert "wrote mixtures.json and 4 FLAC sources" in err
    got = load_mixtures(tmp_path / "flac", None)
    assert [m["id"] for m in got] == ["m000", "m001"]
    for m in got:
        for name in ("speech", "noise"):  # 16-bit: within half a step (and the step itself)
            assert np.max(np.abs(m["audio"][name] - arrays[f"{m['id']}/{name}"])) <= 2**-15
        np.testing.assert_array_equal(m["audio"]["mixture"],
                                      m["audio"]["noise"] + m["audio"]["speech"])
    a = _eval_json(capsys, tmp_path, "--corpus", str(tmp_path / "npz"), "--model", "passthrough")
    b = _eval_json(capsys, tmp_path, "--corpus", str(tmp_path / "flac"), "--model",
                   "passthrough")
    for x, y in zip(a["rows"], b["rows"], strict=True):
        assert (x["method"], x["id"], x["target"]) == (y["method"], y["id"], y["target"])
        assert x["sisdr"] == pytest.approx(y["sisdr"], abs=0.05)


def test_make_corpus_of_the_bundled_set_copies_it_sample_for_sample(capsys, tmp_path):
    code, err = run_cli(capsys, "eval", "--make-corpus", str(tmp_path / "mine"), "--limit", "2")
    assert code in (0, None), err
    index = json.loads((tmp_path / "mine" / INDEX).read_text())
    assert [m["id"] for m in index["mixtures"]] == ["m000", "m001"]
    for m in index["mixtures"]:
        for f in m["files"].values():
            np.testing.assert_array_equal(sf.read(tmp_path / "mine" / f, dtype="int16")[0],
                                          sf.read(BUNDLED_CORPUS / f, dtype="int16")[0])


def test_eval_runs_from_a_copy_of_the_package_outside_the_repository(tmp_path):
    """What a wheel installs (the package and its data files) is all `streamsep eval` needs:
    no tools/, no corpus folder, no repository."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "streamsep", site / "streamsep",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import streamsep, sys; assert streamsep.__file__.startswith(sys.argv[1]), "
            "streamsep.__file__; from streamsep.cli import main; "
            "main(['eval', '--model', 'passthrough', '--limit', '1'])")
    r = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "offline RTF" in r.stdout


@pytest.mark.parametrize("args, needles", [
    (["--limit", "0"], ["--limit must be at least 1"]),
    (["--corpus", "/nonexistent/corpus"], ["--corpus /nonexistent/corpus is not a folder"]),
    (["--hop", "20"], ["must not exceed --window"]),
    (["--json", "/nonexistent/x.json"], ["--json /nonexistent/x.json", "does not exist"]),
    (["--make-corpus", str(BUNDLED_CORPUS)], ["is the corpus being read"]),
    (["--nope"], ["no such option"]),
])
def test_bad_options_are_one_line(capsys, args, needles):
    code, err = run_cli(capsys, "eval", *args)
    one_error(code, err, *needles)


def test_a_broken_corpus_is_one_line(capsys, tmp_path):
    (tmp_path / INDEX).write_text("{not json")
    code, err = run_cli(capsys, "eval", "--corpus", str(tmp_path), "--model", "passthrough")
    assert code == 2
    one_error(code, err, f"{tmp_path / INDEX} is not a corpus index")
    (tmp_path / INDEX).write_text(json.dumps({"mixtures": [
        {"id": "m0", "kind": "speech+noise", "sources": ["speech"],
         "files": {"speech": "missing.flac"}}]}))
    code, err = run_cli(capsys, "eval", "--corpus", str(tmp_path), "--model", "passthrough")
    one_error(code, err, "cannot read", "missing.flac")
