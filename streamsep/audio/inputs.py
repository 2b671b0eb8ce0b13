"""Which files ``streamsep file`` separates, and where each result goes.

Inputs are files or folders; a folder contributes the audio files below it (recursively, in name
order, hidden files and folders left out), judged by extension and then by opening them: a file
with an audio extension that does not open as audio is skipped with a note, like the files that
are not audio at all. The output is one file (for exactly one input file) or a folder, in which
each result is named by a template and placed in the sub-folder its input had under the folder
given (so that ``a/x.wav`` and ``b/x.wav`` cannot collide).

Nothing here writes anything but folders; every check that can refuse the run runs before the
model loads: outputs that would overwrite an input (also through a symlink or a hard link), two
outputs with the same name, and existing outputs without ``overwrite``.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streamsep.audio.files import (
    _EXT_FORMAT,
    AUDIO_EXTENSIONS,
    AudioFileError,
    AudioInfo,
    check_finite,
    probe,
)

DEFAULT_NAME = "{stem}_{prompt}.{ext}"
#: Template fields, for the help text and the error that names an unknown one.
FIELDS = {
    "stem": "the input's file name without its extension",
    "ext": "the input's extension when it can be written (wav, flac, ogg, mp3, aiff, ...), "
           "else wav",
    "prompt": "the prompt, spaces and path characters as _",
    "model": "the --model, as a file name",
}


class InputError(AudioFileError):
    """The inputs or the output naming cannot work; one line says why and what to do."""


@dataclass(frozen=True)
class Input:
    path: str
    info: AudioInfo
    #: the sub-folder of the input under the folder it was found in ("" when given by name)
    subdir: str = ""


@dataclass(frozen=True)
class Job:
    input: Input
    target: str
    residual: str | None


@dataclass
class Found:
    inputs: list[Input]
    #: (path, why) of files with an audio extension that do not open as audio
    unreadable: list[tuple[str, str]]
    #: files that are not audio by their extension
    other: list[str]
    #: files given twice (by name and through a folder, or two folders)
    duplicates: int = 0


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def find_inputs(paths: Iterable[str], exclude: str | None = None,
                probe_fn: Callable[[str], AudioInfo] = probe) -> Found:
    """The audio files named by ``paths`` (files and folders).

    A file named directly must be audio (its error ends the run, as for a single file); files
    found in a folder that are not are skipped and listed. ``exclude`` is a folder not to look
    into: the output folder, when it lies inside an input folder (its results from an earlier
    run are not inputs)."""
    found = Found([], [], [])
    seen: set[str] = set()
    skip = _real(exclude) if exclude else None

    def add(path: str, info: AudioInfo, subdir: str) -> None:
        key = _real(path)
        if key in seen:
            found.duplicates += 1
            return
        seen.add(key)
        found.inputs.append(Input(path, info, subdir))

    for top in paths:
        if not os.path.isdir(top):
            info = probe_fn(top)  # raises, naming the file: not found, not audio, empty
            check_finite(top, info)
            add(top, info, "")
            continue
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and not (skip and _inside(_real(os.path.join(folder, d)), skip)))
            for name in sorted(files):
                if name.startswith("."):
                    continue  # hidden: our own .partial files among them
                path = os.path.join(folder, name)
                if os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
                    found.other.append(path)
                    continue
                try:
                    # NaN samples are looked for when the file's turn comes: scanning a whole
                    # archive here would delay the first result by a full read of everything.
                    info = probe_fn(path)
                except AudioFileError as e:
                    found.unreadable.append((path, str(e)))
                    continue
                rel = os.path.relpath(folder, top)
                add(path, info, "" if rel == "." else rel)
    return found


def check_template(template: str, option: str) -> None:
    """Raise InputError when ``template`` uses a field that does not exist, or names a path
    outside the output folder."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise InputError(f"{option} {template!r}: {e}; write fields as {{stem}}, and a brace "
                         "itself as {{ or }}") from None
    for n in names:
        if n not in FIELDS:
            known = ", ".join("{" + f + "}" for f in FIELDS)
            raise InputError(f"{option} {template!r}: unknown field {{{n}}}; use {known}")
    if os.path.isabs(template) or ".." in re.split(r"[\\/]", template):
        raise InputError(f"{option} {template!r}: a name is relative to the output folder; "
                         "drop the leading / and any ..")
    if not os.path.splitext(template)[1]:
        raise InputError(f"{option} {template!r} has no extension: end it with .{{ext}} (the "
                         "input's format) or e.g. .wav or .flac")


def safe_part(text: str, fallback: str) -> str:
    """``text`` as a piece of a file name: runs of spaces and of characters that are unsafe in
    file names become one _, and it is kept short."""
    part = re.sub(r"[^\w.+-]+", "_", text.strip()).strip("._")
    return part[:60] or fallback


def output_ext(path: str) -> str:
    """{ext}: the input's extension where streamsep can write it, else wav."""
    import soundfile as sf

    ext = os.path.splitext(path)[1].lower()
    fmt = _EXT_FORMAT.get(ext)
    return ext[1:] if fmt is not None and fmt in sf.available_formats() else "wav"


def format_name(template: str, path: str, prompt: str, model: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return template.format(stem=stem, ext=output_ext(path), prompt=safe_part(prompt, "target"),
                           model=safe_part(os.path.basename(model.rstrip("/\\")) or model,
                                           "model"))


def is_folder_output(output: str) -> bool:
    """-o names a folder when it is one, ends with a slash, or has no extension."""
    if os.path.isdir(output) or output.endswith(("/", os.sep)):
        return True
    return not os.path.splitext(os.path.basename(output))[1]


def plan_jobs(inputs: list[Input], output: str, *, folder: bool, residual: str | None,
              name: str, residual_name: str | None, prompt: str, model: str) -> list[Job]:
    """Each input's target and residual paths."""
    if not folder:
        return [Job(inputs[0], output, residual)]
    jobs = []
    for inp in inputs:
        where = os.path.join(output, inp.subdir)
        target = os.path.normpath(os.path.join(where, format_name(name, inp.path, prompt, model)))
        res = None
        if residual_name is not None:
            res = os.path.normpath(os.path.join(
                where, format_name(residual_name, inp.path, prompt, model)))
        jobs.append(Job(inp, target, res))
    return jobs


def check_jobs(jobs: list[Job], *, overwrite: bool, inputs: list[Input]) -> None:
    """Refuse outputs that would overwrite an input (even with ``overwrite``, and also through
    a symlink or a hard link: compared by device and inode), collide with each other, or exist
    already (without ``overwrite``)."""
    ids: dict[tuple[int, int], str] = {}
    for inp in inputs:
        try:
            st = os.stat(inp.path)
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = inp.path
    names: dict[str, str] = {}
    existing: list[str] = []
    for job in jobs:
        for opt, out in (("-o", job.target), ("--residual", job.residual)):
            if out is None:
                continue
            key = os.path.normcase(os.path.abspath(out))
            if key in names:
                other = names[key]
                if other == job.input.path:
                    raise InputError(f"the target and the residual of {other} name the same "
                                     f"file {out}: give two different names")
                raise InputError(f"{other} and {job.input.path} would both be written to {out}: "
                                 "put {stem} in --name (and --residual-name)")
            names[key] = job.input.path
            try:
                st = os.stat(out)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) in ids:
                src = ids[(st.st_dev, st.st_ino)]
                same = "" if os.path.abspath(src) == os.path.abspath(out) else f" ({src})"
                opt = opt if len(jobs) == 1 else "the output"
                raise InputError(f"{opt} {out} is the input file{same}: write to a different "
                                 "file")
            if os.path.lexists(out):
                existing.append(out)
    if existing and not overwrite:
        n = len(existing) - 1
        more = f" (and {n} more output{'s' * (n != 1)})" if n else ""
        raise InputError(f"{existing[0]} exists already{more}: add --overwrite to replace it, "
                         "or write elsewhere")


def make_folders(jobs: list[Job], note: Callable[[str], None] | None = None) -> None:
    """Create the folders the outputs go to (after every check passed). ``note`` hears of
    each top-most folder created, so that a mistyped -o shows."""
    created: list[str] = []
    for job in jobs:
        for out in (job.target, job.residual):
            if out is None:
                continue
            folder = os.path.dirname(os.path.abspath(out))
            if os.path.isdir(folder):
                continue
            top = folder
            while not os.path.exists(os.path.dirname(top)):
                top = os.path.dirname(top)
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create the output folder {folder} "
                                 f"({e.strerror}): choose another -o") from None
            if not any(_inside(top, c) for c in created):
                created.append(top)
                if note is not None:
                    note(f"created the folder {top}")
