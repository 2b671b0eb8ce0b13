"""A user's own separator: ``--model FILE.py:NAME`` or ``--model package.module:NAME``.

NAME is a class, or a function taking no arguments, that makes an object with the Separator
protocol (``streamsep.separators.base``): ``sample_rate``, ``frame_hop``, ``noise_channels``,
``set_prompt(text)`` and ``separate(window, noise, anchors) -> (target, residual)``; an object that
already is one (a module-level instance) is used as it is. The object is checked here, before any
audio flows, so a missing method or a zero frame hop is one clear line at start-up instead of a
failure in the middle of a stream. Every problem is a ``ModelError`` whose message names the
plugin file and line, the exception, or the names the plugin does define.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import numbers
import os
import re
import sys
from types import ModuleType
from typing import Any

from streamsep.separators.base import ModelError, exception_summary

_IDENT = r"[A-Za-z_]\w*"
_MODULE = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_NAME = re.compile(_IDENT)
#: Highest sample rate a plugin may declare: far above any audio device, so only typos hit it.
MAX_SAMPLE_RATE = 768_000
_HELP = "see 'Bring your own separator' in README.md"


def is_plugin_spec(spec: str) -> bool:
    """Whether a ``--model`` value names a plugin (``X.py``, ``X.py:NAME`` or ``a.b:NAME``)."""
    if os.path.isdir(spec):
        return False
    src, colon, _ = spec.rpartition(":")
    if not colon:
        return spec.endswith(".py")
    return src.endswith(".py") or _MODULE.fullmatch(src) is not None


def load_plugin(spec: str) -> Any:
    """The separator named by ``spec``, checked against the protocol; ModelError otherwise."""
    src, colon, name = spec.rpartition(":")
    if not colon:
        src, name = spec, ""
    module = _load_file(spec, src) if src.endswith(".py") else _load_module(spec, src)
    where = src
    found = _candidates(module)
    if not name:
        example = f"--model {src}:{found[0]}" if found else f"--model {src}:NAME"
        listing = f" (it defines {', '.join(found)})" if found else ""
        raise ModelError(f"--model {spec}: name the separator in the plugin, e.g. {example}"
                         f"{listing}")
    if _NAME.fullmatch(name) is None:
        raise ModelError(f"--model {spec}: {name!r} is not a Python name; write FILE.py:NAME")
    if not hasattr(module, name):
        if found:
            raise ModelError(f"{where} has no {name!r}; the separators it defines: "
                             f"{', '.join(found)} (use --model {src}:{found[0]})")
        raise ModelError(f"{where} has no {name!r} and defines no separator (a class with "
                         f"sample_rate, frame_hop, noise_channels, set_prompt() and separate()); "
                         f"{_HELP}")
    sep = _instantiate(getattr(module, name), f"{where}:{name}", _module_root(module.__name__))
    problems = check_separator(sep)
    if problems:
        raise ModelError(f"{where}:{name} is not a usable separator: {'; '.join(problems)} "
                         f"({_HELP})")
    return sep


def check_separator(sep: Any) -> list[str]:
    """What keeps ``sep`` from being a Separator (empty when nothing does), one phrase each."""
    problems: list[str] = []
    for attr, low, what in (("sample_rate", 1, "a positive integer (Hz)"),
                            ("frame_hop", 1, "a positive integer (samples per frame)"),
                            ("noise_channels", 0, "an integer >= 0 (0: it takes no noise)")):
        try:
            v = getattr(sep, attr)
        except AttributeError:
            problems.append(f"no {attr} ({what})")
            continue
        except Exception as e:  # a property that raises: report it, do not crash the CLI
            problems.append(f"reading {attr} raised {exception_summary(e)}")
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            problems.append(f"{attr} must be {what}, got {v!r}")
        elif attr == "sample_rate" and v > MAX_SAMPLE_RATE:
            problems.append(f"sample_rate {v} Hz is above {MAX_SAMPLE_RATE} Hz")
    for meth, args, shape in (("set_prompt", 1, "set_prompt(text)"),
                              ("separate", 3, "separate(window, noise, anchors)")):
        f = getattr(sep, meth, None)
        if f is None:
            problems.append(f"no {shape} method")
        elif not callable(f):
            problems.append(f"{meth} is not a method")
        elif not _accepts(f, args):
            problems.append(f"{meth}() must accept {shape}")
    staged = [m for m in ("prepare_prompt", "apply_prompt") if callable(getattr(sep, m, None))]
    if len(staged) == 1:
        other = "apply_prompt" if staged[0] == "prepare_prompt" else "prepare_prompt"
        problems.append(f"{staged[0]}() without {other}(): define both or neither")
    return problems


# -- loading ---------------------------------------------------------------------------------------
def _load_file(spec: str, src: str) -> ModuleType:
    path = os.path.abspath(os.path.expanduser(src))
    if not os.path.isfile(path):
        what = "is a folder, not a .py file" if os.path.isdir(path) else "not found"
        raise ModelError(f"--model {spec}: plugin file {src} {what}; check the path")
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    modname = f"streamsep_plugin_{stem}"
    mspec = importlib.util.spec_from_file_location(modname, path)
    if mspec is None or mspec.loader is None:
        raise ModelError(f"--model {spec}: cannot import {src} as Python")
    module = importlib.util.module_from_spec(mspec)
    # Registered before it runs, as a normal import would be: dataclasses and pickling look the
    # module up by name while it executes.
    sys.modules[modname] = module
    # Appended, not prepended: a plugin may import helpers next to it, but must not shadow
    # installed packages with a same-named file.
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.append(folder)
    try:
        mspec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(modname, None)
        raise ModelError(_import_failure(e, src, path)) from None
    return module


def _load_module(spec: str, modname: str) -> ModuleType:
    # `streamsep` is a console script, so the current folder is not on sys.path as it is for
    # `python -m`; a plugin module next to the user should import either way.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name and (modname == e.name or modname.startswith(e.name + ".")):
            raise ModelError(f"--model {spec}: no module named {e.name!r}; check the name and "
                             "that it is importable from here, or give a file: --model "
                             "path/to/plugin.py:NAME") from None
        raise ModelError(_import_failure(e, modname, _module_root(modname))) from None
    except (Exception, SystemExit) as e:
        raise ModelError(_import_failure(e, modname, _module_root(modname))) from None


def _module_root(modname: str) -> str | None:
    """The file, or package folder, that holds a module's code (found without importing)."""
    top = modname.split(".")[0]
    mod = sys.modules.get(top)
    if mod is not None and getattr(mod, "__file__", None):
        f = mod.__file__
    else:
        try:  # a top-level name: finding it runs no code
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
        f = None if found is None else found.origin
    if not f or not os.path.isabs(f):
        return None
    return os.path.dirname(f) if os.path.basename(f) == "__init__.py" else f


def _import_failure(e: BaseException, label: str, prefer: str | None) -> str:
    where = exception_summary(e, prefer)
    if isinstance(e, ModuleNotFoundError) and e.name:
        return (f"the plugin {label} needs the module '{e.name}' ({where}): install it "
                f"(pip install {e.name.split('.')[0]}) or fix the import")
    if isinstance(e, SyntaxError):
        return f"the plugin {label} is not valid Python: {where}; fix the plugin"
    return f"importing the plugin {label} failed: {where}; fix the plugin"


def _instantiate(obj: Any, label: str, prefer: str | None) -> Any:
    """Call a class or factory with no arguments; use an existing separator object as it is."""
    if not isinstance(obj, type) and (hasattr(obj, "separate") or not callable(obj)):
        return obj
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature: just try the call
        sig = None
    if sig is not None:
        need = [p.name for p in sig.parameters.values() if p.default is p.empty and p.kind not in
                (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if need:
            raise ModelError(f"{label} needs arguments ({', '.join(need)}) but --model calls it "
                             "with none: give them defaults, or name a function that builds the "
                             "separator")
    try:
        return obj()
    except (Exception, SystemExit) as e:
        raise ModelError(f"{label}() failed: {exception_summary(e, prefer)}; fix the plugin") \
            from None


def _candidates(module: ModuleType) -> list[str]:
    """Public names in ``module`` that look like a separator, a separator class or a factory."""
    out = []
    for name, obj in vars(module).items():
        if name.startswith("_") or isinstance(obj, ModuleType):
            continue
        if isinstance(obj, type) or not callable(obj):
            if callable(getattr(obj, "separate", None)) and callable(
                    getattr(obj, "set_prompt", None)):
                out.append(name)
        elif getattr(obj, "__module__", None) == module.__name__ and _accepts(obj, 0):
            out.append(name)  # a factory function defined in the plugin itself
    return out


def _accepts(f: Any, n: int) -> bool:
    """Whether ``f`` can be called with ``n`` positional arguments (True when unknowable)."""
    try:
        inspect.signature(f).bind(*([None] * n))
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins and C extensions)
        return True
    return True
