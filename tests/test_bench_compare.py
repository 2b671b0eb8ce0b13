"""tools/bench_vs_mlx_audio.py / ``streamsep bench --compare mlx-audio`` (streamsep.bench_compare).

CI has no mlx-audio: there the bench's own side runs on the micro preset and its one-line
install hint is checked; the weight-mapping equality check against mlx-audio runs where mlx-audio
is importable (installed, or in a ``pip --target`` folder named by STREAMSEP_MLX_AUDIO_PATH).
"""

import json
import os
import sys

import pytest
from cli_util import one_error, run_cli

from streamsep import bench_compare as bc
from streamsep import cli

# The micro preset on a 1 s window: the whole bench in seconds.
QUICK = ["--preset", "micro", "--seconds", "2", "--plan", "1", "0.5", "0.2", "0.1",
         "--reps", "1", "--sweep-hops", "0.5,2", "--sweep-steps", "2", "--sweep-windows", "1"]


def _mlx_audio():
    try:
        return bc.import_mlx_audio(os.environ.get("STREAMSEP_MLX_AUDIO_PATH"))
    except bc.MlxAudioMissing as e:
        pytest.skip(f"mlx-audio is not importable here ({e})")


def _hide_mlx_audio(monkeypatch):
    # A None entry in sys.modules makes the import fail as if the package were not installed.
    for name in list(sys.modules):
        if name == "mlx_audio" or name.startswith("mlx_audio."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlx_audio", None)
    monkeypatch.delenv("STREAMSEP_MLX_AUDIO_PATH", raising=False)


def test_our_side_runs_and_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bc.main([*QUICK, "--ours-only", "--paths", "cpu", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    for label in ("engine: compute per s of audio", "separate_long(10, 3)",
                  "separate_streaming: first audio", "latency sweep"):
        assert label in table
    r = json.loads(out.read_text())
    assert r["load1_start"] is None or r["load1_start"] >= 0
    eng = r["runs"]["engine"]["ours_cpu"]
    assert eng["windows"] > 0 and eng["compute_per_audio_s"] > 0 and eng["first_audio_s"] > 0
    assert r["runs"]["separate_long"]["ours_cpu"]["out_samples"] == 2 * 48000
    stream = r["runs"]["separate_streaming"]["ours_cpu"]
    if "skipped" not in stream:
        assert stream["first_audio_s"] > 0 and stream["out_samples"] == 2 * 48000
    st = r["stages"]["ours_cpu"]
    assert st["window_s"] == pytest.approx(st["encode_s"] + 4 * st["dit_step_s"] + st["decode_s"])
    assert st["dit_forwards"] == 4  # euler: one forward per step
    row, too_long = r["sweep"]
    assert row["steps"] == 2 and row["rtf"] > 0 and row["latency_s"] > row["hop_s"]
    assert "must not exceed --window" in too_long["skipped"]  # a 2 s hop in a 1 s window
    assert "mlx_audio" not in r["stages"] and "equality" not in r


def test_without_mlx_audio_the_tool_prints_the_install_line(monkeypatch, capsys):
    _hide_mlx_audio(monkeypatch)
    assert bc.main(QUICK) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: mlx-audio is not installed")
    assert "pip install --no-deps mlx-audio==0.6.2 sentencepiece" in err[0]


def test_without_mlx_audio_the_cli_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    _hide_mlx_audio(monkeypatch)
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "bench", "--compare", "mlx-audio", "--preset", "micro",
                        "--synthetic", "2")
    one_error(code, err, "mlx-audio is not installed", "pip install --no-deps mlx-audio")
    assert list(tmp_path.iterdir()) == []


def test_cli_compare_writes_json_only_when_asked(monkeypatch, capsys, tmp_path):
    seen = []

    def fake_run(args, log=None):
        seen.append(args)
        return {"equality": {"ok": True}}

    monkeypatch.setattr(bc, "run", fake_run)
    monkeypatch.setattr(bc, "summary", lambda report: "TABLE")
    monkeypatch.chdir(tmp_path)
    code, _ = run_cli(capsys, "bench", "--compare", "mlx-audio", "--preset", "reduced",
                      "--steps", "2", "--hop", "1")
    assert code == 0 and list(tmp_path.iterdir()) == []  # no streamsep-bench.json uninvited
    args = seen[-1]
    assert (args.preset, args.steps, args.method, args.json) == ("reduced", 2, "euler", None)
    assert args.plan == [10.0, 1.0, 1.0, 0.4]
    code, _ = run_cli(capsys, "bench", "--compare", "mlx-audio", "--json", "out.json")
    assert code == 0 and json.loads((tmp_path / "out.json").read_text())["equality"]["ok"]


def test_cli_compare_refuses_a_model(capsys):
    code, err = run_cli(capsys, "bench", "--compare", "mlx-audio", "--model", "passthrough")
    one_error(code, err, "--compare", "--model")


def test_cli_presets_are_the_bench_presets():
    assert cli.COMPARE_PRESETS == bc.BENCH_PRESETS


def test_weight_mapping_makes_both_models_compute_the_same():
    sam = _mlx_audio()
    ours = bc.build_ours("micro")
    theirs = bc.build_theirs(sam, ours, "micro")
    mapped = dict(bc.map_weights(ours, theirs))
    # Every mlx-audio parameter its SAM-Audio path uses (all but the watermark) got ours.
    from mlx.utils import tree_flatten

    used = {k for k, _ in tree_flatten(theirs.parameters())
            if not k.startswith("audio_codec.decoder.wm_model.")}
    assert set(mapped) == used
    eq = bc.check_equality(ours, theirs, seconds=1.0)
    assert eq["ok"], bc._equality_line(eq)
    for path in ("cpu", "native"):
        assert set(eq[path]) == {"encode", "dit_forward", "decode_unwatermarked"}
        assert max(eq[path].values()) <= bc.TOLERANCE
