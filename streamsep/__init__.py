"""streamsep: live, text-prompted audio source separation on MLX."""

from streamsep import runtime as _runtime  # noqa: F401  (must run before mlx.core is imported)

__version__ = "0.1.0"

_LAZY = {
    "load": "streamsep.api",
    "Model": "streamsep.api",
    "SAMAudio": "streamsep.sam_audio.model",
    "SAMAudioProcessor": "streamsep.sam_audio.processor",
    "SeparationResult": "streamsep.sam_audio.model",
    "Batch": "streamsep.sam_audio.processor",
    "save_audio": "streamsep.audio.files",
}


def __getattr__(name: str):
    # Lazy so that `import streamsep` (CLI start-up, engine tests) does not pay for the model code.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamsep' has no attribute {name!r}")


__all__ = list(_LAZY)
