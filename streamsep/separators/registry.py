"""Turns a ``--model`` value into a separator, importing model code only when it is asked for.

Accepted values: ``embedded`` (the default: the small model shipped in model/), ``passthrough``,
``silence``, ``bandpass`` or ``bandpass:LOW-HIGH`` (Hz), ``embedded:DIR`` (an embedded-model
directory), a local directory with SAM-Audio weights or an embedded model (told apart by its
config.json), a Hugging Face repo id (owner/name), or a user's own separator:
``FILE.py:NAME`` or ``package.module:NAME`` (see ``streamsep.separators.plugin``).
"""

from __future__ import annotations

import importlib
import json
import os
import re
from typing import Any

from streamsep.separators.base import ModelError
from streamsep.separators.simple import SIMPLE, Bandpass

DEFAULT_MODEL = "embedded"
#: SAM-Audio's reference default is midpoint with 16 steps (32 network passes per window); live
#: use needs a window's compute under the hop, so the CLI defaults to 4 Euler steps (~8x faster).
SAM_DEFAULT_STEPS = 4
SAM_DEFAULT_METHOD = "euler"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: What a prompt the model cannot serve gets (streamsep.separators.embedded.PROMPT_POLICIES):
#: refused, or mapped to the nearest class. Only the embedded model has a closed vocabulary.
PROMPT_POLICIES = ("strict", "nearest")
DEFAULT_PROMPT_POLICY = "strict"
#: The public SAM-Audio checkpoints (gated: request access on their pages).
SAM_REPOS = ("facebook/sam-audio-small", "facebook/sam-audio-base", "facebook/sam-audio-large")


def _adapter(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            raise ModelError(
                f"{what} is not available in this installation ({module} is missing); "
                "use --model passthrough to run the engine without a model") from None
        raise ModelError(f"{what} needs the Python package '{e.name}': pip install {e.name}") \
            from None


def _call_load(mod: Any, spec: str | None, what: str, **kw: Any) -> Any:
    try:
        return mod.load(spec, **kw)
    except ModelError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "" if "passthrough" in msg else "; use --model passthrough to test without a model"
        raise ModelError(f"cannot load {what}: {msg}{hint}") from None


def _is_embedded_dir(path: str) -> bool:
    """A folder written by tools/train.py --export (its config names the embedded model type)."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            return str(json.load(f).get("model_type", "")).startswith("streamsep-embedded")
    except (OSError, ValueError, AttributeError):
        return False


def load_separator(spec: str | None = None, *, steps: int | None = None,
                   method: str | None = None, prompt_policy: str | None = None) -> Any:
    """Load the separator named by ``spec`` (see the module docstring).

    ``prompt_policy`` ("strict", the default, or "nearest") applies to the embedded model, the
    one model that knows a fixed set of prompts; the others take any text."""
    spec = (spec or DEFAULT_MODEL).strip()
    if prompt_policy is not None and prompt_policy not in PROMPT_POLICIES:
        raise ModelError(f"unknown prompt policy {prompt_policy!r}: use "
                         f"{' or '.join(PROMPT_POLICIES)}")
    kw = {k: v for k, v in (("steps", steps), ("method", method)) if v is not None}
    if spec in SIMPLE:
        return SIMPLE[spec]()
    m = re.fullmatch(r"bandpass:(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)", spec)
    if m:
        return Bandpass(float(m.group(1)), float(m.group(2)))
    if spec.startswith("bandpass"):
        raise ModelError(f"bad band in --model {spec!r}: write it as bandpass:LOW-HIGH in Hz, "
                         "e.g. bandpass:300-3400")
    if spec == "embedded" or spec.startswith("embedded:"):
        path = spec.partition(":")[2] or None
        mod = _adapter("streamsep.separators.embedded", "the embedded model")
        return _call_load(mod, path, "the embedded model", **kw,
                          prompt_policy=prompt_policy or DEFAULT_PROMPT_POLICY)
    from streamsep.separators import plugin

    if plugin.is_plugin_spec(spec):
        # A user's separator takes no --steps/--method: it sets its own (like passthrough).
        return plugin.load_plugin(spec)
    sam_kw = {"steps": steps or SAM_DEFAULT_STEPS, "method": method or SAM_DEFAULT_METHOD}
    if os.path.isdir(spec) and _is_embedded_dir(spec):
        return load_separator(f"embedded:{spec}", steps=steps, method=method,
                              prompt_policy=prompt_policy)
    if os.path.isdir(spec):
        mod = _adapter("streamsep.separators.sam", "SAM-Audio")
        return _call_load(mod, spec, f"SAM-Audio from {spec}", **sam_kw)
    if os.path.exists(spec):
        raise ModelError(f"--model {spec!r} is a file: give the directory that holds the model")
    if spec.startswith((".", "/", "~")) or os.sep + os.sep in spec:
        raise ModelError(f"--model {spec!r}: no such directory")
    if _REPO_ID.match(spec):
        mod = _adapter("streamsep.separators.sam", "SAM-Audio")
        return _call_load(mod, spec, f"SAM-Audio from the hub repo {spec}", **sam_kw)
    raise ModelError(
        f"unknown model {spec!r}: use embedded, passthrough, silence, bandpass[:LOW-HIGH], "
        "a local model directory, a Hugging Face repo id (owner/name), or your own separator "
        "as FILE.py:NAME or package.module:NAME")


def kind_of(separator: Any) -> str:
    """"embedded", "sam-audio", "simple" or "plugin": what ``streamsep models`` groups by."""
    module = type(separator).__module__
    if module == "streamsep.separators.embedded":
        return "embedded"
    if module == "streamsep.separators.sam":
        return "sam-audio"
    if module == "streamsep.separators.simple":
        return "simple"
    return "plugin"


def catalogue() -> list[tuple[str, str, list[str]]]:
    """(--model value, what it is, lines about its prompts) for every model streamsep names,
    without loading any of them."""
    from streamsep.embedded import prompts

    try:
        from streamsep.embedded.load import find_model_dir

        where = f"the bundled model in {find_model_dir()}"
    except (OSError, ImportError) as e:  # a broken installation: say so, list the rest
        where = f"not installed here ({str(e).splitlines()[0]})"
    any_text = ["prompts: any text (open vocabulary: T5 text features; no list to check against)"]
    return [
        ("embedded", f"the small speech/music/noise model, offline; {where}",
         prompts.describe()),
        *[(repo, "SAM-Audio from the Hugging Face Hub (gated: request access, then set HF_TOKEN "
                 "or run `hf auth login`)", any_text) for repo in SAM_REPOS],
        ("DIR", "a local folder: SAM-Audio weights (tools/convert_checkpoint.py, mlx-community "
                "conversions) or an embedded model (tools/train.py --export), told apart by its "
                "config.json", ["prompts: those of the model it holds"]),
        ("passthrough", "target = input, residual = 0 (latency and routing checks)",
         ["prompts: ignored"]),
        ("silence", "target = 0, residual = input", ["prompts: ignored"]),
        ("bandpass[:LOW-HIGH]", "the band LOW-HIGH Hz as the target (default 300-3400)",
         ["prompts: ignored"]),
        ("FILE.py:NAME", "your own separator (also package.module:NAME)",
         ["prompts: whatever its set_prompt accepts"]),
    ]
