"""The torch-free checkpoint reader: real files load, hostile or damaged files are refused."""

import collections
import io
import os
import pickle
import shutil
import sys
import types
import zipfile

import numpy as np
import pytest
from conftest import FIXTURES

from streamsep.sam_audio.checkpoint import CheckpointError, load_torch_checkpoint

CHECKPOINT = FIXTURES / "sam_tiny_a" / "checkpoint.pt"


# ------------------------------------------------------------------ writing torch-style zips
class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, data


@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-in modules so pickle can name torch's globals the way torch.save does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: the reader substitutes its own
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "BFloat16Storage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return (rebuild, (*self.args, False, collections.OrderedDict()))


def _write_checkpoint(path, state, storages, storage_types, numels=None):
    """A zip laid out as torch.save writes it: archive/data.pkl + archive/data/<key>."""

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                numel = (numels or {}).get(obj.key, obj.data.size)
                return ("storage", storage_types[obj.key], obj.key, "cpu", numel)
            return None

    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for st in storages:
            z.writestr(f"archive/data/{st.key}", st.data.tobytes())


# ------------------------------------------------------------------ the fixture
def test_fixture_checkpoint_loads():
    w = load_torch_checkpoint(CHECKPOINT)
    assert w["audio_codec.encoder.block.0.weight_v"].shape == (8, 1, 7)
    assert w["audio_codec.decoder.model.1.block.1.weight_g"].shape == (192, 1, 1)
    assert w["transformer.layers.0.attention.wq.weight"].dtype == np.float32
    assert any(k.startswith("vision_encoder.") for k in w)
    assert all(np.isfinite(v).all() for v in w.values())


def test_keep_filter_skips_tensors():
    full = load_torch_checkpoint(CHECKPOINT)
    kept = load_torch_checkpoint(CHECKPOINT, keep=lambda k: not k.startswith("vision_encoder."))
    assert set(kept) == {k for k in full if not k.startswith("vision_encoder.")}
    for k, v in kept.items():
        np.testing.assert_array_equal(v, full[k])
    assert load_torch_checkpoint(CHECKPOINT, keep=lambda k: False) == {}


# ------------------------------------------------------------------ tensor rebuilding
def test_views_offsets_bfloat16_and_nesting(fake_torch, tmp_path):
    base = np.arange(12, dtype=np.float32)
    bf16_values = np.array([1.5, -2.0, 3.25], np.float32)
    bf16_bits = (bf16_values.view(np.uint32) >> 16).astype(np.uint16)
    a, b = _Storage("0", base), _Storage("1", bf16_bits)
    state = {
        "model": collections.OrderedDict(
            whole=_Tensor(a, 0, (3, 4), (4, 1)),
            transposed=_Tensor(a, 0, (4, 3), (1, 4)),
            offset=_Tensor(a, 2, (2, 2), (4, 1)),
            scalar=_Tensor(a, 5, (), ()),
            bf16=_Tensor(b, 0, (3,), (1,)),
        )
    }
    types_ = {"0": fake_torch.FloatStorage, "1": fake_torch.BFloat16Storage}
    path = tmp_path / "c.pt"
    _write_checkpoint(path, state, [a, b], types_)
    w = load_torch_checkpoint(path)
    grid = base.reshape(3, 4)
    np.testing.assert_array_equal(w["model.whole"], grid)
    np.testing.assert_array_equal(w["model.transposed"], grid.T)
    np.testing.assert_array_equal(w["model.offset"], [[2, 3], [6, 7]])
    assert w["model.scalar"].shape == () and float(w["model.scalar"]) == 5.0
    assert w["model.bf16"].dtype == np.float32
    np.testing.assert_array_equal(w["model.bf16"], bf16_values)


def test_forged_element_count_is_refused(fake_torch, tmp_path):
    a = _Storage("0", np.zeros(4, np.float32))
    path = tmp_path / "c.pt"
    _write_checkpoint(path, {"w": _Tensor(a, 0, (4,), (1,))}, [a],
                      {"0": fake_torch.FloatStorage}, numels={"0": 10**12})
    with pytest.raises(CheckpointError, match="holds 16 bytes"):
        load_torch_checkpoint(path)


def test_tensor_past_its_storage_is_refused(fake_torch, tmp_path):
    a = _Storage("0", np.zeros(4, np.float32))
    path = tmp_path / "c.pt"
    _write_checkpoint(path, {"w": _Tensor(a, 2, (4,), (1,))}, [a], {"0": fake_torch.FloatStorage})
    with pytest.raises(CheckpointError, match="past the end"):
        load_torch_checkpoint(path)


# ------------------------------------------------------------------ hostile and damaged files
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os')",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_disallowed_global_is_refused_and_not_run(tmp_path, payload):
    marker = tmp_path / "pwned"
    obj = _Evil(marker) if payload == "system" else _EvalEvil()
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": obj}, protocol=2))
    with pytest.raises(CheckpointError, match="weights-only load refuses"):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    data = CHECKPOINT.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_torch_checkpoint(path)
    message = str(info.value)
    assert "truncated or corrupt" in message and "download it again" in message
    assert "\n" not in message


def test_non_zip_file_gives_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"<html>Access denied</html>")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_torch_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_torch_checkpoint(tmp_path / "absent.pt")


def test_zip_without_pickle_or_with_damaged_pickle(tmp_path):
    path = tmp_path / "a.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/other.txt", "x")
    with pytest.raises(CheckpointError, match="no data.pkl"):
        load_torch_checkpoint(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2)[:-5])
    with pytest.raises(CheckpointError, match="damaged index"):
        load_torch_checkpoint(path)


def test_missing_storage_entry(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(CHECKPOINT) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("/data/0"):
                dst.writestr(info, src.read(info))
    with pytest.raises(CheckpointError, match="lacks tensor data"):
        load_torch_checkpoint(path)


def test_fixture_copy_unchanged(tmp_path):
    # Loading returns arrays we own: mutating them must not touch a second load.
    copy = tmp_path / "checkpoint.pt"
    shutil.copyfile(CHECKPOINT, copy)
    first = load_torch_checkpoint(copy)
    key = "proj.weight"
    before = first[key].copy()
    first[key] += 1.0
    np.testing.assert_array_equal(load_torch_checkpoint(copy)[key], before)


# ------------------------------------------------------------------ safetensors
def test_safetensors_round_trip_with_dtypes_and_keep(tmp_path):
    import mlx.core as mx

    from streamsep.sam_audio.checkpoint import load_safetensors

    values = np.array([[1.5, -2.0, 3.25], [0.0, 4.0, -0.5]], np.float32)
    path = tmp_path / "w.safetensors"
    mx.save_safetensors(
        str(path),
        {"f32": mx.array(values), "f16": mx.array(values).astype(mx.float16),
         "bf16": mx.array(values).astype(mx.bfloat16), "i32": mx.array([1, 2, 3]),
         "skip.me": mx.zeros((4,))},
        metadata={"format": "test"},
    )
    w, meta = load_safetensors(path, keep=lambda k: not k.startswith("skip."))
    assert meta == {"format": "test"} and "skip.me" not in w
    assert w["f16"].dtype == np.float16 and w["bf16"].dtype == np.float32
    for key in ("f32", "f16", "bf16"):
        np.testing.assert_array_equal(w[key], values)  # exactly representable values
    np.testing.assert_array_equal(w["i32"], [1, 2, 3])


def test_safetensors_damage_is_reported(tmp_path):
    from streamsep.sam_audio.checkpoint import load_safetensors

    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(CheckpointError, match="header length"):
        load_safetensors(path)
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 8)  # 8 of 16 bytes
    with pytest.raises(CheckpointError, match="do not fit"):
        load_safetensors(path)
