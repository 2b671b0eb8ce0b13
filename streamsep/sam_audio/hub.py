"""Hugging Face Hub downloads with one-line, actionable errors.

Every failure of ``huggingface_hub`` (gated repo, missing repo or file, no network, bad token) is
turned into a :class:`ModelLoadError` whose message names the repo and says what to do. The token
is ``token=`` when given, else whatever huggingface_hub finds itself (``HF_TOKEN``, then the
``hf auth login`` cache).

Offline, huggingface_hub retries every request with backoff (five retries, 24 s measured here
for the README's snippet) before it gives up. So before asking the hub, ``hub_offline`` checks
``HF_HUB_OFFLINE`` and makes one TCP connection to the hub (or the proxy) with a short timeout;
when either says offline, only the local cache is asked (``local_files_only``): a cached model
loads, anything else fails at once (about 1 s for the snippet, most of it imports).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

#: Seconds the reachability probe waits for a TCP connection; a reachable hub answers in well
#: under a second, and DNS failure (the common offline case) returns at once.
PROBE_TIMEOUT_S = 3.0
#: How long a probe's answer is reused, so that one load (config, weights, T5) probes once.
PROBE_TTL_S = 60.0
_probe: tuple[float, str | None] | None = None


class ModelLoadError(ValueError):
    """A model that cannot be found, downloaded or read; the message says how to fix it."""


def gated_message(repo_id: str) -> str:
    return (
        f"{repo_id} is gated: request access at https://huggingface.co/{repo_id}, "
        "then set HF_TOKEN (or run `hf auth login`)"
    )


def offline_message(repo_id: str, why: str | None = None) -> str:
    return (
        f"cannot download {repo_id}: the Hugging Face Hub is unreachable "
        f"({why or 'no network, or HF_HUB_OFFLINE=1'}) and it is not in the local cache; "
        f"download it on a connected machine (`hf download {repo_id}`) and copy the cache over, "
        "or pass a local directory"
    )


def not_found_message(repo_id: str) -> str:
    return (
        f"{repo_id} was not found on the Hugging Face Hub: check the repo id "
        "(e.g. facebook/sam-audio-large), or if it is private set HF_TOKEN "
        "(or run `hf auth login`)"
    )


class _Absent(Exception):
    """Stands in for an error class that the installed huggingface_hub does not define."""


def _hf_errors() -> dict[str, type]:
    from huggingface_hub import errors

    names = ("GatedRepoError", "RepositoryNotFoundError", "RevisionNotFoundError",
             "EntryNotFoundError", "RemoteEntryNotFoundError", "LocalEntryNotFoundError",
             "OfflineModeIsEnabled", "HFValidationError", "HfHubHTTPError")
    return {n: getattr(errors, n, _Absent) for n in names}


def _is_absent_file(exc: BaseException) -> bool:
    """The repo exists but does not have the file (as opposed to: the file is not cached)."""
    e = _hf_errors()
    return isinstance(exc, e["RemoteEntryNotFoundError"]) or (
        isinstance(exc, e["EntryNotFoundError"])
        and not isinstance(exc, e["LocalEntryNotFoundError"])
    )


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def translate_hub_error(
    exc: BaseException, repo_id: str, filename: str | None = None, revision: str | None = None
) -> ModelLoadError:
    """The :class:`ModelLoadError` for a huggingface_hub exception raised while fetching repo_id."""
    e = _hf_errors()
    offline = (e["LocalEntryNotFoundError"], e["OfflineModeIsEnabled"], ConnectionError,
               TimeoutError)
    # Order matters: GatedRepoError is a RepositoryNotFoundError, which is an HfHubHTTPError.
    if isinstance(exc, e["GatedRepoError"]):
        return ModelLoadError(gated_message(repo_id))
    if isinstance(exc, e["RevisionNotFoundError"]):
        return ModelLoadError(
            f"{repo_id} has no revision {revision!r}: pass an existing branch, tag or commit"
        )
    if isinstance(exc, e["RepositoryNotFoundError"]):
        return ModelLoadError(not_found_message(repo_id))
    if _is_absent_file(exc):
        what = filename or "a required file"
        return ModelLoadError(
            f"{repo_id} has no file {what}: it is not a SAM-Audio model repo in a layout streamsep "
            "knows (config.json + checkpoint.pt, or config.json + *.safetensors)"
        )
    if isinstance(exc, offline) or _is_network_error(exc):
        return ModelLoadError(offline_message(repo_id))
    if isinstance(exc, e["HFValidationError"]):
        return ModelLoadError(
            f"{repo_id!r} is neither an existing local directory nor a valid Hugging Face repo id "
            "(owner/name): fix the path or the id"
        )
    status = _status(exc)
    if status in (401, 403):
        return ModelLoadError(gated_message(repo_id))
    if isinstance(exc, e["HfHubHTTPError"]):
        code = f"HTTP {status}" if status else type(exc).__name__
        return ModelLoadError(
            f"downloading {repo_id} failed ({code}: {_first_line(exc)}); retry later, "
            "or pass a local directory"
        )
    return ModelLoadError(
        f"downloading {repo_id} failed ({type(exc).__name__}: {_first_line(exc)}); retry later, "
        "or pass a local directory"
    )


def _is_network_error(exc: BaseException) -> bool:
    # httpx/requests connection failures that huggingface_hub did not wrap; matched by name so
    # this module does not depend on which HTTP client the installed huggingface_hub uses.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names & {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException",
                 "NetworkError", "ConnectionError", "ProxyError"}
    )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _probe_target() -> tuple[str, int]:
    """The host and port a download would connect to first: the proxy when one is set."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlsplit(endpoint)
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k)), None) if url.scheme == "https" else None
    if proxy:
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_offline() -> str | None:
    """Why the hub cannot be reached now (a few words for a message), or None if it can."""
    global _probe
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return "HF_HUB_OFFLINE is set"
    now = time.monotonic()
    if _probe is not None and now - _probe[0] < PROBE_TTL_S:
        return _probe[1]
    host, port = _probe_target()
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
        why = None
    except OSError as e:
        why = f"cannot connect to {host}:{port}: {getattr(e, 'strerror', None) or e}"
    _probe = (now, why)
    return why


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def download_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    missing_ok: bool = False,
) -> Path | None:
    """Path of ``filename`` from ``repo_id`` in the local HF cache, downloading it if needed.

    With ``missing_ok``, a file the repo does not have gives None instead of an error.
    """
    from huggingface_hub import hf_hub_download

    offline = hub_offline()
    try:
        return Path(
            hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, token=token,
                            local_files_only=offline is not None)
        )
    except Exception as exc:  # every hub failure becomes one clear line
        if missing_ok and _is_absent_file(exc):
            return None
        raise _translate(exc, repo_id, filename, revision, offline) from exc


def download_snapshot(
    repo_id: str,
    allow_patterns: list[str],
    *,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """Local folder holding the files of ``repo_id`` that match ``allow_patterns``."""
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        return Path(
            snapshot_download(
                repo_id=repo_id, allow_patterns=allow_patterns, revision=revision, token=token,
                local_files_only=offline is not None,
            )
        )
    except Exception as exc:
        raise _translate(exc, repo_id, None, revision, offline) from exc


def _translate(exc: BaseException, repo_id: str, filename: str | None, revision: str | None,
               offline: str | None) -> ModelLoadError:
    """translate_hub_error, naming why the hub was not asked when that is the failure."""
    e = _hf_errors()
    not_cached = (e["LocalEntryNotFoundError"], e["OfflineModeIsEnabled"], ConnectionError,
                  TimeoutError)
    if offline is not None and (isinstance(exc, not_cached) or _is_network_error(exc)):
        return ModelLoadError(offline_message(repo_id, offline))
    return translate_hub_error(exc, repo_id, filename, revision)
