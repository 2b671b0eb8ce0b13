"""resolve_model: layouts, the text encoder, conversion, and one clear line for every failure."""

import importlib
import importlib.util
import json
import re
import shutil

import huggingface_hub
import mlx.core as mx
import numpy as np
import pytest
from conftest import FIXTURES, ROOT
from huggingface_hub import errors as hf_errors

from streamsep.sam_audio.hub import ModelLoadError
from streamsep.sam_audio.loading import check_weights, resolve_config, resolve_model
from streamsep.sam_audio.processor import SAMAudioProcessor

FIXTURE = FIXTURES / "sam_tiny_a"
REPO = "facebook/sam-audio-large"
GATED = (
    "facebook/sam-audio-large is gated: request access at "
    "https://huggingface.co/facebook/sam-audio-large, then set HF_TOKEN "
    "(or run `hf auth login`)"
)


@pytest.fixture(scope="module")
def reference():
    return resolve_model(FIXTURE)


def _message(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ Meta's layout
def test_meta_layout_from_local_directory(reference):
    r = reference
    assert r.origin == "meta" and r.layout == "torch"
    assert r.source == str(FIXTURE)
    assert r.config["transformer"]["dim"] == 64
    assert (r.hop_length, r.sample_rate) == (1920, 48000)
    w = r.weights
    assert w["audio_codec.encoder.block.0.weight_v"].shape == (8, 1, 7)  # torch layout
    assert w["align_masked_video.conv.weight"].shape == (64, 32, 1)
    assert not any(k.startswith("vision_encoder.") for k in w)
    # T5 from the t5/ subfolder, under text_encoder. with Hugging Face names.
    assert w["text_encoder.encoder.block.0.layer.0.SelfAttention.q.weight"].shape == (64, 64)
    assert w["text_encoder.shared.weight"].shape == (100, 64)
    assert r.text_encoder_config["d_model"] == 64
    assert r.tokenizer_path is None  # the fixture ships no tokenizer.json
    assert all(isinstance(v, np.ndarray) for v in w.values())


def test_tokenizer_found_next_to_t5(tmp_path):
    model = _copy_fixture(tmp_path)
    (model / "t5" / "tokenizer.json").write_text("{}")
    assert resolve_model(model).tokenizer_path == model / "t5" / "tokenizer.json"


def _copy_fixture(tmp_path, with_t5=True):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "checkpoint.pt"):
        shutil.copyfile(FIXTURE / name, model / name)
    if with_t5:
        shutil.copytree(FIXTURE / "t5", model / "t5")
    return model


# ------------------------------------------------------------------ local-directory errors
def test_missing_directory_and_files(tmp_path):
    with pytest.raises(ModelLoadError) as info:
        resolve_model(tmp_path / "nowhere")
    assert "local model directory" in _message(info) and "does not exist" in _message(info)
    with pytest.raises(ModelLoadError) as info:
        resolve_model(str(FIXTURE / "config.json"))
    assert "is a file" in _message(info)
    with pytest.raises(ModelLoadError) as info:
        resolve_model(tmp_path)
    assert f"model directory {tmp_path} has no config.json" in _message(info)
    shutil.copyfile(FIXTURE / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError) as info:
        resolve_model(tmp_path)
    assert "has no checkpoint.pt or *.safetensors" in _message(info)


def test_missing_text_encoder_weights(tmp_path):
    model = _copy_fixture(tmp_path)
    (model / "t5" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as info:
        resolve_model(model)
    assert f"text encoder directory {model / 't5'} has no model.safetensors" in _message(info)


def test_corrupt_checkpoint(tmp_path):
    model = _copy_fixture(tmp_path)
    data = (model / "checkpoint.pt").read_bytes()
    (model / "checkpoint.pt").write_bytes(data[:1000])
    with pytest.raises(ModelLoadError) as info:
        resolve_model(model)
    assert "checkpoint.pt" in _message(info) and "truncated or corrupt" in _message(info)


def test_corrupt_safetensors_and_config(tmp_path):
    model = _copy_fixture(tmp_path)
    (model / "checkpoint.pt").unlink()
    (model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelLoadError) as info:
        resolve_model(model)
    assert "model.safetensors is not a readable safetensors file" in _message(info)
    (model / "config.json").write_text("{broken")
    with pytest.raises(ModelLoadError) as info:
        resolve_model(model)
    assert "config.json is not valid JSON" in _message(info)


def test_quantized_config_is_refused(tmp_path):
    model = _copy_fixture(tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["quantization"] = {"bits": 4, "group_size": 64}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="quantized weights"):
        resolve_model(model)


# ------------------------------------------------------------------ check_weights
def test_check_weights_names_the_key():
    expected = {"a.weight": (2, 3), "b.bias": (3,), "c.bias": (1,)}
    got = {"a.weight": np.zeros((2, 3)), "b.bias": np.zeros(3), "c.bias": np.zeros(1)}
    check_weights(expected, got, "src")
    with pytest.raises(ModelLoadError) as info:
        check_weights(expected, {"a.weight": np.zeros((2, 3))}, "src")
    assert _message(info).startswith("src: tensor b.bias is missing (and 1 more)")
    with pytest.raises(ModelLoadError) as info:
        check_weights(expected, {**got, "a.weight": mx.zeros((3, 2))}, "src")
    assert "src: tensor a.weight has shape (3, 2), expected (2, 3)" in _message(info)
    check_weights(expected, {**got, "extra": np.zeros(1)}, "src")
    with pytest.raises(ModelLoadError, match="unexpected tensor extra"):
        check_weights(expected, {**got, "extra": np.zeros(1)}, "src", strict=True)


# ------------------------------------------------------------------ hub: success paths
def _serve_t5(calls):
    """A fake hf_hub_download serving the fixture's T5 (no tokenizer.json) as the repo t5-base."""

    def fake(repo_id, filename, revision=None, token=None, **_):
        calls.append((repo_id, filename, token))
        path = FIXTURE / "t5" / filename
        if repo_id == "t5-base" and path.is_file():
            return str(path)
        raise hf_errors.RemoteEntryNotFoundError("404", response=_response(404))

    return fake


def _response(status):
    # huggingface_hub's errors carry an httpx-style response; use whichever client it uses.
    module = hf_errors.HfHubHTTPError.__mro__[1].__module__.split(".")[0]
    http = importlib.import_module(module)
    return http.Response(status, request=http.Request("GET", "https://huggingface.co/x"))


def test_hub_repo_with_t5_from_hub(tmp_path, monkeypatch):
    snapshot = _copy_fixture(tmp_path, with_t5=False)
    calls, snapshots = [], []

    def fake_snapshot(repo_id, allow_patterns=None, revision=None, token=None, **_):
        snapshots.append((repo_id, tuple(allow_patterns), revision, token))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _serve_t5(calls))
    r = resolve_model(REPO, revision="main", token="hf_x")
    assert r.source == f"{REPO}@main"
    assert snapshots == [(REPO, snapshots[0][1], "main", "hf_x")]
    assert "checkpoint.pt" in snapshots[0][1] and "config.json" in snapshots[0][1]
    # T5 comes from config.text_encoder.name; a missing tokenizer.json is not an error.
    assert ("t5-base", "config.json", "hf_x") in calls
    assert ("t5-base", "model.safetensors", "hf_x") in calls
    assert r.tokenizer_path is None and r.text_encoder_source == "t5-base"
    assert "text_encoder.encoder.final_layer_norm.weight" in r.weights


def test_processor_from_hub_fetches_only_config(monkeypatch):
    calls = []

    def fake(repo_id, filename, revision=None, token=None, **_):
        calls.append(filename)
        return str(FIXTURE / filename)

    def no_snapshot(*args, **kwargs):
        raise AssertionError("the processor must not download weights")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_snapshot)
    proc = SAMAudioProcessor.from_pretrained(REPO)
    assert calls == ["config.json"] and proc.audio_hop_length == 1920
    assert resolve_config(REPO)["transformer"]["n_layers"] == 2


# ------------------------------------------------------------------ hub: every failure
def _hub_failure(monkeypatch, exc):
    def raiser(*args, **kwargs):
        raise exc

    monkeypatch.setattr(huggingface_hub, "snapshot_download", raiser)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raiser)
    with pytest.raises(ModelLoadError) as info:
        resolve_model(REPO)
    message = _message(info)
    with pytest.raises(ModelLoadError) as info:
        SAMAudioProcessor.from_pretrained(REPO)
    assert _message(info) == message  # the config-only path says the same
    return message


def test_gated_repo(monkeypatch):
    exc = hf_errors.GatedRepoError("403 gated", response=_response(403))
    assert _hub_failure(monkeypatch, exc) == GATED


@pytest.mark.parametrize("status", [401, 403])
def test_http_401_and_403(monkeypatch, status):
    exc = hf_errors.HfHubHTTPError(f"{status} Client Error", response=_response(status))
    assert _hub_failure(monkeypatch, exc) == GATED


def test_repo_not_found(monkeypatch):
    exc = hf_errors.RepositoryNotFoundError("404", response=_response(404))
    message = _hub_failure(monkeypatch, exc)
    assert message.startswith(f"{REPO} was not found on the Hugging Face Hub")
    assert "HF_TOKEN" in message


@pytest.mark.parametrize(
    "exc",
    [
        hf_errors.LocalEntryNotFoundError("not cached and offline"),
        hf_errors.OfflineModeIsEnabled("HF_HUB_OFFLINE=1"),
        ConnectionError("Name or service not known"),
    ],
    ids=["local-entry", "offline-mode", "connection"],
)
def test_offline(monkeypatch, exc):
    message = _hub_failure(monkeypatch, exc)
    assert message.startswith(f"cannot download {REPO}: the Hugging Face Hub is unreachable")
    assert "download it on a connected machine" in message
    assert "or pass a local directory" in message


def test_revision_and_server_errors(monkeypatch):
    exc = hf_errors.RevisionNotFoundError("404 rev", response=_response(404))
    assert "has no revision" in _hub_failure(monkeypatch, exc)
    exc = hf_errors.HfHubHTTPError("500 Server Error", response=_response(500))
    message = _hub_failure(monkeypatch, exc)
    assert message.startswith(f"downloading {REPO} failed (HTTP 500") and "retry later" in message


def test_snapshot_without_config(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        resolve_model(REPO)
    assert _message(info).startswith(f"{REPO} has no file config.json")


def test_t5_repo_gated_names_that_repo(tmp_path, monkeypatch):
    snapshot = _copy_fixture(tmp_path, with_t5=False)
    config = json.loads((snapshot / "config.json").read_text())
    config["text_encoder"]["name"] = "google/private-t5"
    (snapshot / "config.json").write_text(json.dumps(config))

    def gated(*args, **kwargs):
        raise hf_errors.GatedRepoError("403", response=_response(403))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(snapshot))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(ModelLoadError) as info:
        resolve_model(REPO)
    assert _message(info).startswith("google/private-t5 is gated")


# ------------------------------------------------------------------ mlx-community layout
_CODEC_RENAMES = [
    # official → mlx-audio, written in the forward direction of mlx-audio's own converter.
    (r"encoder\.block\.0\.", "encoder.conv_in."),
    (r"encoder\.block\.5\.", "encoder.snake_out."),
    (r"encoder\.block\.6\.", "encoder.conv_out."),
    (r"encoder\.block\.(\d)\.block\.([012])\.block\.(\d)\.",
     lambda m: f"encoder.blocks.{int(m[1]) - 1}.res{int(m[2]) + 1}."
               f"{['act1', 'conv1', 'act2', 'conv2'][int(m[3])]}."),
    (r"encoder\.block\.(\d)\.block\.3\.", lambda m: f"encoder.blocks.{int(m[1]) - 1}.snake."),
    (r"encoder\.block\.(\d)\.block\.4\.", lambda m: f"encoder.blocks.{int(m[1]) - 1}.conv."),
    (r"decoder\.model\.0\.", "decoder.conv_in."),
    (r"decoder\.model\.(\d)\.block\.(\d+)\.block\.(\d)\.",
     lambda m: f"decoder.blocks.{int(m[1]) - 1}.block_{m[2]}."
               f"{['act1', 'conv1', 'act2', 'conv2'][int(m[3])]}."),
    (r"decoder\.model\.(\d)\.block\.(\d+)\.",
     lambda m: f"decoder.blocks.{int(m[1]) - 1}.block_{m[2]}."),
    (r"decoder\.wm_model\.encoder_block\.pre\.0\.", "decoder.snake_out."),
    (r"decoder\.wm_model\.encoder_block\.pre\.1\.", "decoder.conv_out."),
    (r"\.(pre|post)\.(\d)\.", r".\1_\2."),
    (r"quantizer\.(in|out)_proj\.", r"quantizer_\1_proj."),
]


def _to_mlx_audio(official: dict) -> dict:
    """What mlx-audio's SAMAudio would save for these official weights (names + MLX layouts)."""
    out = {}
    for key, value in official.items():
        if key.startswith(("text_encoder.", "align_masked_video.")):
            continue  # mlx-audio keeps neither in its weights
        if key.startswith("audio_codec."):
            lstm = re.search(r"\.lstm\.(weight|bias)_(ih|hh)_l(\d)$", key)
            if lstm and lstm[1] == "bias":
                if lstm[2] == "hh":
                    continue
                value = value + official[key.replace("bias_ih", "bias_hh")]
            is_transpose = re.search(r"decoder\.model\.\d\.block\.[13]\.", key)
            name = key[len("audio_codec."):]
            for pattern, repl in _CODEC_RENAMES:
                name = re.sub(pattern, repl, name, count=1)
            if lstm:
                part = {"weight": {"ih": "Wx", "hh": "Wh"}[lstm[2]], "bias": "bias"}[lstm[1]]
                name = re.sub(r"lstm\..*$", f"lstm.layers.{lstm[3]}.{part}", name)
            if name.endswith(".alpha"):
                value = value.transpose(0, 2, 1)
            elif value.ndim == 3:
                value = value.transpose(1, 2, 0) if is_transpose else value.transpose(0, 2, 1)
            key = "audio_codec." + name
        elif key.endswith("project.weight"):
            value = value.transpose(0, 2, 1)
        out[key] = np.ascontiguousarray(value)
    return out


def test_mlx_community_layout_maps_back_to_official(tmp_path, reference):
    model = tmp_path / "mlx"
    model.mkdir()
    shutil.copyfile(FIXTURE / "config.json", model / "config.json")
    shutil.copytree(FIXTURE / "t5", model / "t5")
    converted = _to_mlx_audio(reference.weights)
    assert "audio_codec.decoder.blocks.0.block_3.weight" in converted  # sanity of the fake
    keys = sorted(converted)
    half = len(keys) // 2  # two shards, as sharded repos have
    for i, part in enumerate((keys[:half], keys[half:])):
        mx.save_safetensors(str(model / f"model-0000{i + 1}-of-00002.safetensors"),
                            {k: mx.array(converted[k]) for k in part})
    r = resolve_model(model)
    assert r.origin == "mlx-community" and r.layout == "torch"
    assert set(r.weights) == set(reference.weights)
    for key, want in reference.weights.items():
        got = r.weights[key]
        if re.search(r"\.bias_(ih|hh)_l\d$", key) or key.startswith("align_masked_video."):
            continue
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    # LSTM biases arrive summed: only the sum enters the cell.
    for key in (k for k in reference.weights if k.endswith("bias_ih_l0")):
        hh = key.replace("bias_ih", "bias_hh")
        np.testing.assert_allclose(r.weights[key] + r.weights[hh],
                                   reference.weights[key] + reference.weights[hh], rtol=1e-6)
    # align_masked_video is absent from mlx-audio conversions: a zero gate switches it off.
    assert float(r.weights["align_masked_video.gate"][0]) == 0.0
    assert r.weights["align_masked_video.conv.weight"].shape == (64, 32, 1)


# ------------------------------------------------------------------ tools/convert_checkpoint.py
def _converter():
    spec = importlib.util.spec_from_file_location(
        "convert_checkpoint", ROOT / "tools" / "convert_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_then_load_gives_identical_tensors(tmp_path, reference, capsys):
    convert = _converter()
    out = tmp_path / "converted"
    assert convert.main([str(FIXTURE), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    r = resolve_model(out)
    assert r.origin == "streamsep"
    assert r.config == reference.config
    assert r.text_encoder_config == reference.text_encoder_config
    assert set(r.weights) == set(reference.weights)
    for key, want in reference.weights.items():
        assert r.weights[key].dtype == want.dtype, key
        np.testing.assert_array_equal(r.weights[key], want, err_msg=key)
    # A second run refuses to overwrite without --overwrite, then replaces with it.
    assert convert.main([str(FIXTURE), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert convert.main([str(FIXTURE), str(out), "--dtype", "bfloat16", "--overwrite"]) == 0
    half = resolve_model(out)
    key = "transformer.layers.0.feed_forward.w1.weight"
    np.testing.assert_allclose(half.weights[key], reference.weights[key], rtol=1e-2, atol=1e-2)
    assert not np.array_equal(half.weights[key], reference.weights[key])


def test_convert_keeps_tokenizer_and_reports_errors(tmp_path, capsys):
    convert = _converter()
    src = _copy_fixture(tmp_path)
    (src / "t5" / "tokenizer.json").write_text('{"version": "1.0"}')
    out = tmp_path / "out"
    assert convert.main([str(src), str(out), "--dtype", "float16"]) == 0
    assert (out / "t5" / "tokenizer.json").read_text() == '{"version": "1.0"}'
    assert resolve_model(out).weights["proj.weight"].dtype == np.float16
    assert convert.main([str(tmp_path / "absent"), str(tmp_path / "o2")]) == 1
    assert "does not exist" in capsys.readouterr().err
