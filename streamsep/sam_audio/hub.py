"""Hugging Face Hub downloads with one-line, actionable errors.

Every failure of ``huggingface_hub`` (gated repo, missing repo or file, no network, bad token) is
turned into a :class:`ModelLoadError` whose message names the repo and says what to do. The token
is ``token=`` when given, else whatever huggingface_hub finds itself (``HF_TOKEN``, then the
``huggingface-cli login`` cache).
"""

from __future__ import annotations

from pathlib import Path


class ModelLoadError(ValueError):
    """A model that cannot be found, downloaded or read; the message says how to fix it."""


def gated_message(repo_id: str) -> str:
    return (
        f"{repo_id} is gated: request access at https://huggingface.co/{repo_id}, "
        "then set HF_TOKEN (or run `huggingface-cli login`)"
    )


def offline_message(repo_id: str) -> str:
    return (
        f"cannot download {repo_id}: the Hugging Face Hub is unreachable (no network, or "
        f"HF_HUB_OFFLINE=1) and it is not in the local cache; download it on a connected machine "
        f"(`huggingface-cli download {repo_id}`) and copy the cache over, or pass a local directory"
    )


def not_found_message(repo_id: str) -> str:
    return (
        f"{repo_id} was not found on the Hugging Face Hub: check the repo id "
        "(e.g. facebook/sam-audio-large), or if it is private set HF_TOKEN "
        "(or run `huggingface-cli login`)"
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

    try:
        return Path(
            hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, token=token)
        )
    except Exception as exc:  # every hub failure becomes one clear line
        if missing_ok and _is_absent_file(exc):
            return None
        raise translate_hub_error(exc, repo_id, filename, revision) from exc


def download_snapshot(
    repo_id: str,
    allow_patterns: list[str],
    *,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """Local folder holding the files of ``repo_id`` that match ``allow_patterns``."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id=repo_id, allow_patterns=allow_patterns, revision=revision, token=token
            )
        )
    except Exception as exc:
        raise translate_hub_error(exc, repo_id, None, revision) from exc
