"""Read PyTorch ``torch.save`` checkpoints without torch and without running pickle code.

A torch checkpoint is a zip holding ``<root>/data.pkl`` and one raw file per storage under
``<root>/data/``. The pickle only needs a handful of globals to rebuild tensors; the unpickler
below admits exactly those and refuses everything else, so a malicious checkpoint cannot execute
code. Tensors come back as numpy arrays (bfloat16 as float32, since numpy has no bfloat16).
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    if not size:
        return storage[offset : offset + 1].reshape(())
    itemsize = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    ).copy()


def _rebuild_parameter(data, *_ignored):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"checkpoint asks for {module}.{name}, which a weights-only load refuses"
        )

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointError(f"unsupported persistent id in checkpoint: {pid!r}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unsupported storage type in checkpoint: {storage_type!r}")
        return self._load_storage(str(key), _STORAGE_DTYPES[storage_type.name])


def load_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Return the flat ``{name: array}`` state dict stored in a ``torch.save`` zip file."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch zip checkpoint ({exc}); re-download it"
        ) from exc
    with archive:
        pkl_names = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pkl_names:
            raise CheckpointError(f"{path}: no data.pkl inside; is this a torch.save file?")
        root = pkl_names[0][: -len("data.pkl")]
        cache: dict[str, np.ndarray] = {}

        def load_storage(key: str, dtype) -> np.ndarray:
            if key not in cache:
                raw = archive.read(f"{root}data/{key}")
                if dtype == "bfloat16":
                    bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
                    cache[key] = bits.view(np.float32)
                else:
                    cache[key] = np.frombuffer(raw, dtype=dtype)
            return cache[key]

        with archive.open(pkl_names[0]) as f:
            obj = _RestrictedUnpickler(f, load_storage).load()
    return _flatten(obj)


def _flatten(obj, prefix: str = "") -> dict[str, np.ndarray]:
    # Official checkpoints are a flat state dict; some wrap it as {"model": state_dict}.
    out: dict[str, np.ndarray] = {}
    if isinstance(obj, np.ndarray):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    return out
