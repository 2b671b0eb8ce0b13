"""Read weight files without torch: ``torch.save`` checkpoints (running no pickle code) and
safetensors.

A torch checkpoint is a zip holding ``<root>/data.pkl`` and one raw file per storage under
``<root>/data/``. The pickle only needs a handful of globals to rebuild tensors; the unpickler
below admits exactly those and refuses everything else, so a malicious checkpoint cannot execute
code. Unpickling yields lazy tensor references; only the tensors a caller keeps are read from the
zip, so a skipped vision encoder costs neither time nor memory. Tensors come back as numpy arrays
(bfloat16 widened to float32, since numpy has no bfloat16).
"""

from __future__ import annotations

import collections
import json
import pickle
import struct
import zipfile
from collections.abc import Callable
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


class _LazyStorage:
    """A storage named in the pickle; its bytes stay in the zip until a kept tensor needs them."""

    def __init__(self, key: str, dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel


class _LazyTensor:
    def __init__(self, storage: _LazyStorage, offset: int, size: tuple, stride: tuple):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    if not isinstance(storage, _LazyStorage):
        raise CheckpointError("checkpoint rebuilds a tensor from something that is not a storage")
    return _LazyTensor(storage, int(offset), tuple(int(s) for s in size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


# The only globals a weights-only state dict needs. Anything else (os.system, builtins.eval,
# arbitrary classes) is refused before it can be called.
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"checkpoint asks for {module}.{name}, which a weights-only load refuses "
            "(the file is not a plain state dict, or it was tampered with)"
        )

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointError(f"unsupported persistent id in checkpoint: {pid!r}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unsupported storage type in checkpoint: {storage_type!r}")
        return _LazyStorage(str(key), _STORAGE_DTYPES[storage_type.name], int(numel))


def load_torch_checkpoint(
    path: str | Path, keep: Callable[[str], bool] | None = None
) -> dict[str, np.ndarray]:
    """Return the flat ``{name: array}`` state dict stored in a ``torch.save`` zip file.

    ``keep(name)`` selects tensors by name; the others are never read from the file.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({exc}); it is truncated or corrupt: "
            "delete it and download it again"
        ) from exc
    with archive:
        pkl_names = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pkl_names:
            raise CheckpointError(
                f"{path} has no data.pkl inside, so it is not a torch.save checkpoint"
            )
        root = pkl_names[0][: -len("data.pkl")]
        _check_byteorder(archive, root, path)
        try:
            with archive.open(pkl_names[0]) as f:
                obj = _RestrictedUnpickler(f).load()
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
                IndexError, KeyError, AttributeError, OSError) as exc:
            raise CheckpointError(
                f"{path} has a damaged index ({type(exc).__name__}: {exc}); "
                "delete it and download it again"
            ) from exc
        lazy = _flatten(obj)
        out: dict[str, np.ndarray] = {}
        storages: dict[str, np.ndarray] = {}
        for name, ref in lazy.items():
            if keep is not None and not keep(name):
                continue
            out[name] = _materialize(archive, root, ref, storages, path)
    return out


def _check_byteorder(archive: zipfile.ZipFile, root: str, path: Path) -> None:
    try:
        order = archive.read(f"{root}byteorder").decode().strip()
    except KeyError:
        return  # files from torch < 1.13 omit it; they are little-endian
    if order != "little":
        raise CheckpointError(f"{path} was saved on a {order}-endian machine, which is unsupported")


def _read_storage(archive: zipfile.ZipFile, root: str, storage: _LazyStorage, path: Path):
    name = f"{root}data/{storage.key}"
    raw_dtype = np.uint16 if storage.dtype == "bfloat16" else storage.dtype
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(
            f"{path} lacks tensor data {name}: the file is incomplete; download it again"
        ) from None
    expected = storage.numel * np.dtype(raw_dtype).itemsize
    if info.file_size != expected:
        # Checked before allocating, so a forged element count cannot exhaust memory.
        raise CheckpointError(
            f"{path}: tensor data {name} holds {info.file_size} bytes, expected {expected}; "
            "the file is corrupt: download it again"
        )
    arr = np.empty(storage.numel, dtype=raw_dtype)
    try:
        if info.compress_type == zipfile.ZIP_STORED:
            got = _read_stored(path, info, arr)
        else:
            with archive.open(info) as f:
                got = f.readinto(memoryview(arr).cast("B"))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(
            f"{path}: tensor data {name} is damaged ({exc}); delete it and download it again"
        ) from exc
    if got != arr.nbytes:
        raise CheckpointError(
            f"{path}: tensor data {name} holds {got} bytes, expected {arr.nbytes}; "
            "the file is corrupt: download it again"
        )
    if storage.dtype == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _read_stored(path: Path, info: zipfile.ZipInfo, arr: np.ndarray) -> int:
    # torch.save stores tensors uncompressed: read them straight from the file into the array,
    # ~3x faster than zipfile's chunked, copying reader (CRC is skipped, as safetensors has none).
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile("bad local file header")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        return fh.readinto(memoryview(arr).cast("B"))


def _materialize(archive, root, ref, storages: dict, path: Path) -> np.ndarray:
    st = ref.storage
    if st.key not in storages:
        storages[st.key] = _read_storage(archive, root, st, path)
    data = storages[st.key]
    count = int(np.prod(ref.size)) if ref.size else 1
    if ref.size:
        span = ref.offset + sum((s - 1) * abs(d) for s, d in zip(ref.size, ref.stride, strict=True))
        if count and span >= data.size:
            raise CheckpointError(f"{path}: a tensor reaches past the end of its storage")
    contiguous = _is_contiguous(ref.size, ref.stride)
    if contiguous and ref.offset == 0 and count == data.size:
        # The usual case: the tensor is its whole storage, so no copy is needed.
        return data.reshape(ref.size)
    if not ref.size:
        return data[ref.offset : ref.offset + 1].reshape(()).copy()
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset :],
        shape=ref.size,
        strides=tuple(s * data.itemsize for s in ref.stride),
        writeable=False,
    )
    return np.array(view)


def _is_contiguous(size: tuple, stride: tuple) -> bool:
    expected = 1
    for s, d in zip(reversed(size), reversed(stride), strict=True):
        if s != 1 and d != expected:
            return False
        expected *= s
    return True


def _flatten(obj, prefix: str = "") -> dict[str, _LazyTensor]:
    # Official checkpoints are a flat state dict; some wrap it as {"model": state_dict}.
    out: dict[str, _LazyTensor] = {}
    if isinstance(obj, _LazyTensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    return out


# ------------------------------------------------------------------------------ safetensors
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16",
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


def load_safetensors(
    path: str | Path, keep: Callable[[str], bool] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a safetensors file, read straight into numpy arrays.

    Only tensors with ``keep(name)`` true are read; bfloat16 is widened to float32.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = path.stat().st_size
            head = fh.read(8)
            if len(head) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            n = struct.unpack("<Q", head)[0]
            if n > min(size - 8, 100 * 1024**2):
                raise ValueError(f"header length {n} does not fit the file")
            header = json.loads(fh.read(n))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
            metadata = header.pop("__metadata__", None) or {}
            base = 8 + n
            out: dict[str, np.ndarray] = {}
            for name, entry in header.items():
                if keep is not None and not keep(name):
                    continue
                out[name] = _read_safetensors_tensor(fh, name, entry, base, size)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); delete it and download or "
            "convert it again"
        ) from exc
    return out, {str(k): str(v) for k, v in metadata.items()}


def _read_safetensors_tensor(fh, name: str, entry: dict, base: int, size: int) -> np.ndarray:
    dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"tensor {name} has unsupported dtype {entry['dtype']}")
    raw = np.uint16 if dtype == "bfloat16" else dtype
    shape = tuple(int(s) for s in entry["shape"])
    begin, end = (int(x) for x in entry["data_offsets"])
    count = int(np.prod(shape)) if shape else 1
    if end - begin != count * np.dtype(raw).itemsize or begin < 0 or base + end > size:
        raise ValueError(f"tensor {name} has offsets {begin}..{end} that do not fit its shape")
    arr = np.empty(count, dtype=raw)
    fh.seek(base + begin)
    if fh.readinto(memoryview(arr).cast("B")) != arr.nbytes:
        raise ValueError(f"tensor {name} is cut short")
    if dtype == "bfloat16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.reshape(shape)
