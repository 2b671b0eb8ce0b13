"""streamsep command line: devices, run, file, batch, bench, eval.

Every failure a user can cause ends in one line on stderr, ``error: <what> <fix>``, and a
non-zero exit code; set STREAMSEP_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import click

from streamsep import console
from streamsep.engine.plan import (
    CONTINUITY_SCHEMES,
    CROSSFADE_SHAPES,
    DEFAULT_CONTINUITY,
    DEFAULT_CROSSFADE_S,
    DEFAULT_CROSSFADE_SHAPE,
    DEFAULT_HOP_S,
    DEFAULT_LOOKAHEAD_S,
    DEFAULT_WINDOW_S,
    WindowPlan,
)
from streamsep.separators.registry import DEFAULT_MODEL

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3", ".au", ".caf", ".w64")
#: streamsep.audio.inputs.DEFAULT_NAME and streamsep.engine.offline.CHANNEL_MODES, spelled out:
#: importing those modules loads soundfile and the engine, which `--help` does not need.
DEFAULT_NAME = "{stem}_{prompt}.{ext}"
CHANNEL_MODES = ("keep", "mono", "midside")


class CliError(Exception):
    """A user-facing failure: printed as one line."""


def _note(text: str) -> None:
    console.note(text)  # -q silences it; above a progress bar while one is shown


# -- shared options --------------------------------------------------------------------------------
def _knobs(f: Callable) -> Callable:
    opts = [
        click.option("--model", default=DEFAULT_MODEL, show_default=True,
                     help="embedded, passthrough, silence, bandpass[:LOW-HIGH], a local model "
                          "directory, a Hugging Face repo id, or your own separator as "
                          "FILE.py:NAME or package.module:NAME."),
        click.option("--window", type=float, default=DEFAULT_WINDOW_S, show_default=True,
                     help="Seconds of audio the model sees per window (W)."),
        click.option("--hop", type=float, default=DEFAULT_HOP_S, show_default=True,
                     help="New audio per window, seconds (H); compute per window must stay "
                          "below it."),
        click.option("--lookahead", type=float, default=DEFAULT_LOOKAHEAD_S, show_default=True,
                     help="Right context the model sees before audio is emitted, seconds (R)."),
        click.option("--crossfade", type=float, default=DEFAULT_CROSSFADE_S, show_default=True,
                     help="Crossfade between consecutive windows, seconds (X)."),
        click.option("--crossfade-shape", type=click.Choice(CROSSFADE_SHAPES),
                     default=DEFAULT_CROSSFADE_SHAPE, show_default=True,
                     help="Crossfade weights: amplitude (sum to one: target + residual stays "
                          "the input) or power (squares sum to one)."),
        click.option("--continuity", type=click.Choice(CONTINUITY_SCHEMES),
                     default=DEFAULT_CONTINUITY, show_default=True,
                     help="How overlapping windows agree: independent (fresh noise per "
                          "window), position (noise seeded by position), inpaint (position, "
                          "plus the shared frames pinned to the previous window's result on "
                          "the flow path; embedded model, 2+ steps)."),
        click.option("--steps", type=int, default=None,
                     help="ODE steps (model default if omitted)."),
        click.option("--method", type=click.Choice(["euler", "midpoint"]), default=None,
                     help="ODE solver (model default if omitted)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the position-indexed noise."),
        click.option("--budget", default="auto", show_default=True,
                     help="Compute allowance per window in seconds, added to the latency; "
                          "auto = 2x the warm-up compute (0.1 s to one hop), raised during a "
                          "live run when recent compute needs more (announced)."),
        click.option("--on-overload", "overload", type=click.Choice(["dry", "silence"]),
                     default="dry", show_default=True,
                     help="What plays where separation is late or skipped: the dry input "
                          "(as target) or silence."),
        click.option("--metrics-json", default=None, metavar="PATH|-",
                     help="Write one JSON object per window to PATH (or - for stdout)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _prompt_policy(f: Callable) -> Callable:
    """--prompt-policy (run and file): what the embedded model does with a prompt it lacks."""
    return click.option(
        "--prompt-policy", type=click.Choice(["strict", "nearest"]), default="strict",
        show_default=True,
        help="strict: a prompt the model cannot serve (the embedded model knows speech, music "
             "and noise; `streamsep models` lists its wordings) is refused; nearest: it acts as "
             "its nearest class.")(f)


def _check_prompt(prompt: str | None) -> str:
    from streamsep.separators.base import check_prompt_text

    if prompt is None or not prompt.strip():
        raise CliError("--prompt is empty: describe the sound to extract, e.g. -p speech")
    why = check_prompt_text(prompt)
    if why is not None:
        raise CliError(f"-p/--prompt: {why}")
    return prompt.strip()


#: 256 solver steps are 64x the cost of SAM-Audio's live default (4) and 16x its reference (16),
#: already hopeless for live use, and the flow's error stops shrinking long before: more is a typo.
MAX_STEPS = 256
#: The noise hash keys on 64 bits (engine/noise.py); larger or negative seeds would alias.
MAX_SEED = 2**64 - 1
MAX_LATENCY_S = 2.0  # device latency beyond 2 s is no longer live; PortAudio would clamp it
BLOCKSIZE_RANGE = (16, 16384)  # frames per callback: below, callbacks outrun Python; above, 0.3 s


def _check_knobs(k: dict[str, Any]) -> None:
    """Range-check the options every command shares, before anything loads."""
    # Lengths (finite, not negative, W at most MAX_WINDOW_S, H + R + X within W) are checked with
    # SAM-Audio's geometry, so a typo fails fast with the same message for every model.
    WindowPlan.from_seconds(48000, 1920, k["window"], k["hop"], k["lookahead"], k["crossfade"])
    if k["steps"] is not None and k["steps"] < 1:
        raise CliError(f"--steps must be at least 1 (got {k['steps']})")
    if k["steps"] is not None and k["steps"] > MAX_STEPS:
        raise CliError(f"--steps must be at most {MAX_STEPS} (got {k['steps']}); omit it for "
                       "the model's default")
    if not 0 <= k["seed"] <= MAX_SEED:
        raise CliError(f"--seed must be between 0 and 2**64 - 1 (got {k['seed']})")
    _budget_seconds(k["budget"])


def _check_run_options(blocksize: int, latency: str, duration: float | None) -> None:
    """Range-check `run`'s device options: one line naming the option and the accepted range."""
    lo, hi = BLOCKSIZE_RANGE
    if blocksize != 0 and not lo <= blocksize <= hi:
        raise CliError(f"--blocksize must be 0 (PortAudio chooses) or {lo} to {hi} frames "
                       f"(got {blocksize})")
    if latency not in ("low", "high"):
        try:
            v = float(latency)
        except ValueError:
            v = float("nan")
        if not 0 <= v <= MAX_LATENCY_S:  # also refuses nan and inf
            raise CliError(f"--latency must be low, high or seconds between 0 and "
                           f"{MAX_LATENCY_S:g} (got {latency!r})")
    if duration is not None and not 0 < duration < float("inf"):
        raise CliError(f"--duration must be a positive number of seconds (got {duration})")


def _budget_seconds(b: str) -> float | None:
    if str(b).strip().lower() == "auto":
        return None
    try:
        v = float(b)
    except ValueError:
        raise CliError(f"--budget must be 'auto' or seconds (got {b!r})") from None
    if not 0 <= v <= 60 or v != v:
        raise CliError(f"--budget must be between 0 and 60 seconds (got {b!r})")
    return v


def _load(k: dict[str, Any]) -> tuple[Any, WindowPlan]:
    from streamsep.separators.registry import load_separator

    sep = load_separator(k["model"], steps=k["steps"], method=k["method"],
                         prompt_policy=k.get("prompt_policy"))
    if k["model"].split(":")[0] not in ("passthrough", "silence", "bandpass"):
        # Say once which compute backend runs the model: a missing OpenBLAS costs ~20x.
        from streamsep import runtime

        _note(runtime.backend_description())
    try:
        sep.set_prompt(k["prompt"])
    except (ValueError, RuntimeError, OSError) as e:
        raise CliError(f"prompt {k['prompt']!r} rejected by the model: {_one_line(e)}") from None
    except Exception as e:  # a plugin's own bug: name it and where, in one line
        from streamsep.separators.base import exception_summary

        raise CliError(f"the separator's set_prompt({k['prompt']!r}) failed: "
                       f"{exception_summary(e)}") from None
    if getattr(sep, "prompt_note", None):
        _note(sep.prompt_note)
    plan = WindowPlan.from_seconds(sep.sample_rate, sep.frame_hop, k["window"], k["hop"],
                                   k["lookahead"], k["crossfade"],
                                   continuity=k.get("continuity", DEFAULT_CONTINUITY),
                                   crossfade_shape=k.get("crossfade_shape",
                                                         DEFAULT_CROSSFADE_SHAPE))
    if plan.continuity == "inpaint" and not callable(getattr(sep, "separate_continued", None)):
        _note("--continuity inpaint: this model cannot inpaint; it runs as position")
    return sep, plan


def _open_metrics(path: str | None) -> IO[str] | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdout
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"--metrics-json {path}: folder {folder} does not exist; create it first")
    try:
        return open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by the caller)
    except OSError as e:
        raise CliError(f"--metrics-json {path}: {e.strerror}") from None


def _budget_samples(k: dict[str, Any], sep: Any, plan: WindowPlan) -> int:
    from streamsep.engine.engine import auto_budget, warm_up

    b = _budget_seconds(k["budget"])
    if b is not None:
        return int(round(b * plan.sample_rate))
    try:
        c = warm_up(sep, plan)
    except Exception as e:  # the first windows run here; a broken separator must say so clearly
        from streamsep.separators.base import exception_summary

        raise CliError(f"the separator failed on its warm-up window ({exception_summary(e)}): "
                       "fix the model, or give --budget SECONDS to skip the warm-up") from None
    budget = auto_budget(plan, c)
    _note(f"warm-up: {c:.3f} s per window; compute budget {budget / plan.sample_rate:.2f} s")
    if c > plan.seconds(plan.hop):
        _note(f"a window takes longer ({c:.2f} s) than the hop ({plan.seconds(plan.hop):.2f} s):"
              " expect skipped windows; raise --hop or lower --steps/--window")
    return budget


def _is_file(spec: str) -> bool:
    return spec.lower().endswith(AUDIO_EXTS) or os.sep in spec


def _verbosity(f: Callable) -> Callable:
    """-q / -v after the command too (`streamsep file ... -q`), as on the group."""
    f = click.option("-v", "--verbose", is_flag=True, expose_value=False,
                     callback=_set_verbosity(2),
                     help="More detail: per-file window figures, every skipped file.")(f)
    return click.option("-q", "--quiet", is_flag=True, expose_value=False,
                        callback=_set_verbosity(0),
                        help="Only warnings and errors: no notes, no progress bar.")(f)


def _set_verbosity(level: int) -> Callable:
    def callback(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            console.set_verbosity(level)
    return callback


# -- commands --------------------------------------------------------------------------------------
CLI_EXAMPLES = """\b
Examples:
  streamsep devices
  streamsep run -p speech -o "BlackHole 2ch"
  streamsep file talk.wav -p speech -o talk_speech.wav
  streamsep -q file episodes/ -p speech -o separated/
  streamsep batch archive/ separated/ -p speech
  streamsep bench --synthetic 60 --json bench.json

`streamsep COMMAND -h` explains each command, with examples.
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=CLI_EXAMPLES)
@click.version_option(package_name="streamsep", prog_name="streamsep")
@_verbosity
def cli() -> None:
    """Live, text-prompted audio source separation."""


@cli.command(epilog="""\b
Examples:
  streamsep devices
  streamsep run -p speech -i 2 -o 5      # the indexes listed here""")
def devices() -> None:
    """List audio devices (> default input, < default output)."""
    from streamsep.audio import devices as dev

    click.echo(dev.list_devices())


@cli.command(epilog="""\b
Examples:
  streamsep models
  streamsep file talk.wav -p "a dog barking" -o dog.wav --model facebook/sam-audio-small""")
def models() -> None:
    """List the models (--model values) and the prompts each one knows."""
    from streamsep.separators.registry import catalogue

    for spec, what, prompts in catalogue():
        click.echo(f"{spec}\n  {what}")
        for line in prompts:
            click.echo(f"  {line}")


RUN_HELP = """Separate live from an input device to an output device.

\b
While it runs, type on stdin and press Enter:
  TEXT           a new prompt, from the next window
  mix M          the dry/wet mix, 0 to 1, from the next window
  gate on|off    the gate (see --gate)
  gate DB        the gate's threshold in dB (and the gate on)
  prompt TEXT    TEXT as the prompt even if it starts with mix/gate
A prompt the model cannot serve is refused with a note (see --prompt-policy
and `streamsep models`) and the prompt in use keeps running. Ctrl-C stops.

\b
--virtual-mic creates a microphone that other programs (OBS, a browser,
Zoom) list, plays the target into it, and removes it when run ends.
--input monitor takes what the default output plays as the input.
"""


RUN_EXAMPLES = """\b
Examples:
  streamsep run -p speech                          # default input to default output
  streamsep run -p speech -i USB -o "BlackHole 2ch" --residual-out rest.wav
  streamsep run -p speech --virtual-mic --gate     # clean speech as a microphone
  streamsep run -p speech --model passthrough --duration 30   # the set-up's latency
"""


@cli.command(help=RUN_HELP, epilog=RUN_EXAMPLES)
@click.option("-p", "--prompt", required=True, help="The sound to extract, e.g. 'speech'.")
@click.option("-i", "--input-device", "--input", "input_device", default=None,
              help="Input device: index or name part, or 'monitor': what the default output "
                   "plays (PipeWire/PulseAudio: the default sink's monitor; macOS: BlackHole).")
@click.option("-o", "--output-device", default=None,
              help="Output device for the target: index, name part, or 'none'.")
@click.option("--residual-out", default=None, metavar="DEV|FILE",
              help="Send the residual (everything else) to a device or an audio file.")
@click.option("--record-target", default=None, metavar="FILE", help="Also write the target.")
@click.option("--virtual-mic", is_flag=False, flag_value="streamsep", default=None,
              metavar="[NAME]",
              help="Send the target to a virtual microphone NAME (default streamsep) that "
                   "other programs can record from; created now, removed at exit (PipeWire or "
                   "PulseAudio; on macOS the BlackHole device).")
@click.option("--virtual-mic-residual", is_flag=False, flag_value="streamsep-residual",
              default=None, metavar="[NAME]",
              help="Send the residual to a second virtual microphone (default "
                   "streamsep-residual).")
@click.option("--mix", type=float, default=1.0, show_default=True,
              help="Dry/wet: 1 = target only; below 1 blends in the input, aligned to the "
                   "sample (0.7 = 70 % target + 30 % input). Typed 'mix M' changes it.")
@click.option("--gate", is_flag=True,
              help="Fade the target to silence while it holds nothing: opens when the target "
                   "is above --gate-threshold relative to the input (20 ms frames), closes "
                   "after it stayed 6 dB below that for --gate-hold; 10 ms fade in, 100 ms "
                   "fade out. Typed 'gate on|off|DB' changes it.")
@click.option("--gate-threshold", type=float, default=-24.0, show_default=True, metavar="DB",
              help="Gate threshold: target level relative to the input level, -80 to 0 dB.")
@click.option("--gate-hold", type=float, default=0.3, show_default=True, metavar="S",
              help="Seconds the target must stay below the threshold before the gate closes.")
@click.option("--blocksize", type=int, default=0, show_default=True,
              help="Frames per callback; 0 lets PortAudio choose (most robust).")
@click.option("--latency", default="high", show_default=True,
              help="Device latency: low, high, or seconds.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@_prompt_policy
@_knobs
def run(prompt: str, input_device: str | None, output_device: str | None,
        residual_out: str | None, record_target: str | None, virtual_mic: str | None,
        virtual_mic_residual: str | None, mix: float, gate: bool, gate_threshold: float,
        gate_hold: float, blocksize: int, latency: str, duration: float | None,
        **k: Any) -> int:
    from streamsep.audio import devices as dev
    from streamsep.audio import virtual
    from streamsep.audio.files import SafeWriter, check_writable
    from streamsep.engine import live
    from streamsep.engine.engine import Engine, FileSink
    from streamsep.engine.metrics import Metrics
    from streamsep.engine.mixgate import MixGate

    prompt = _check_prompt(prompt)
    _check_knobs(k)
    _check_run_options(blocksize, latency, duration)
    mixgate_args = _check_mix_gate(mix, gate_threshold, gate_hold)
    if virtual_mic is not None and output_device is not None:
        raise CliError("--virtual-mic sends the target to the virtual microphone: drop -o "
                       f"{output_device} (run plays the target to one place)")
    if virtual_mic_residual is not None and residual_out and not _is_file(residual_out):
        raise CliError("--virtual-mic-residual sends the residual to a virtual microphone: drop "
                       f"--residual-out {residual_out} (a residual file may stay)")
    for path in (record_target, residual_out if residual_out and _is_file(residual_out) else None):
        if path:
            check_writable(path)
    monitor = (input_device or "").strip().lower() == "monitor"
    in_idx = out_idx = res_idx = None
    wants_virtual = monitor or virtual_mic is not None or virtual_mic_residual is not None
    if virtual_mic is not None:  # before PortAudio loads: its JACK host API onto PipeWire
        virtual.preload_pipewire_jack("monitor" if monitor else input_device)
    if not monitor and (input_device is not None or not wants_virtual):
        in_idx = dev.resolve(input_device, "input")  # first: its error names the input
    # --input monitor with the default output would record its own output: prepare() refuses
    # that, before a missing default output device could be the error shown.
    out_default = monitor and virtual_mic is None and output_device is None
    if virtual_mic is None and (output_device or "").lower() != "none" and not out_default:
        out_idx = dev.resolve(output_device, "output")
    if residual_out and not _is_file(residual_out):
        res_idx = dev.resolve(residual_out, "output")
    virt = None
    if wants_virtual:
        virt = virtual.prepare(
            "monitor" if monitor else input_device, virtual_mic, virtual_mic_residual,
            output_is_default=out_default or (out_idx is not None and
                                              dev.follows_server_default(out_idx)),
            residual_is_default=res_idx is not None and dev.follows_server_default(res_idx))
        for line in virt.notes:
            _note(line)
        if virt.input_spec is not None and in_idx is None:
            input_device = virt.input_spec
        if virt.target_spec is not None:
            out_idx = dev.resolve(virt.target_spec, "output")
        if virt.residual_spec is not None:
            res_idx = dev.resolve(virt.residual_spec, "output")
    if in_idx is None:
        in_idx = dev.resolve(input_device, "input")
    sep, plan = _load({**k, "prompt": prompt})
    for idx, kind in ((in_idx, "input"), (out_idx, "output"), (res_idx, "output")):
        if idx is not None:
            dev.check_rate(idx, kind, sep.sample_rate)
    budget = _budget_samples(k, sep, plan)
    mfile = _open_metrics(k["metrics_json"])
    writers: list[Any] = []
    # From here on the virtual devices may exist: SIGTERM/SIGHUP must unwind through the
    # `finally` that removes them (the live run handles them itself while it runs).
    with virtual.exit_on_signals():
        try:
            engine = Engine(sep, plan, seed=k["seed"], budget=budget, overload=k["overload"],
                            metrics=Metrics(mfile), model_name=k["model"],
                            adaptive_budget=_budget_seconds(k["budget"]) is None)
            engine.use_mixgate(MixGate(sep.sample_rate, mix=mix, gate=gate, **mixgate_args))
            for which, path in (("target", record_target),
                                ("residual", residual_out if residual_out and
                                 _is_file(residual_out) else None)):
                if path:
                    w = SafeWriter(path, sep.sample_rate)
                    writers.append(w)
                    engine.add_sink(FileSink(w, which))
            if virt is not None:
                in_idx, out_idx, res_idx = virt.create(in_idx, out_idx, res_idx, note=_note)
            streams = live.open_streams(engine, in_idx, out_idx, res_idx, blocksize=blocksize,
                                        latency=latency,
                                        routes=None if virt is None else virt.routes)
            lat = engine.latency()
            _note(f"{plan.describe()}")
            rest = "" if res_idx is None else f", residual {_where(dev, res_idx, virt, 'residual')}"
            _note(f"input {_where(dev, in_idx, virt, 'input')} -> output "
                  f"{_where(dev, out_idx, virt, 'target')}{rest}")
            if virt is not None:
                for mic in virt.mics.values():
                    _note(f"virtual microphone {mic.name!r} is ready: pick {mic.name!r} as the "
                          "microphone in the other program (removed when run ends)")
            _note(f"latency {lat['total_s']:.2f} s = algorithmic {lat['algorithmic_s']:.2f} + "
                  f"compute budget {lat['compute_s']:.2f} + device {lat['device_s']:.3f}; "
                  "Ctrl-C stops; type a prompt, 'mix M' or 'gate on|off' and Enter")
            s = live.run(engine, streams, prompt=prompt, duration=duration)
            _note(_summary_line(s))
        finally:
            if virt is not None:
                virt.remove()
            for w in writers:
                w.close()
            if mfile not in (None, sys.stdout):
                mfile.close()
    if s.get("signal"):
        flushed = "" if s.get("flushed") else " (the separator did not finish the last " \
            "windows in time: the files end where it stopped)"
        _note(f"stopped by {s['signal']}; files finalized{flushed}")
        return int(s["exit_code"])
    return 0


def _where(dev: Any, idx: int | None, virt: Any, which: str) -> str:
    """A stream's device for the notes, naming the PulseAudio node a routed stream reaches."""
    if idx is None:
        return "none"
    route = {} if virt is None else virt.routes.get(which, {})
    node = route.get("PULSE_SINK") or route.get("PULSE_SOURCE")
    mic = None if virt is None else virt.mics.get(which)
    if mic is not None:
        return f"virtual microphone {mic.name!r}"
    return f"{node} (via {dev.name(idx)})" if node else dev.name(idx)


def _check_mix_gate(mix: float, threshold: float, hold: float) -> dict[str, float]:
    """Range-check --mix and the gate's options; the MixGate keywords for the last two."""
    from streamsep.engine.mixgate import check_mix, check_threshold

    try:
        check_mix(mix)
    except ValueError:
        raise CliError(f"--mix must be between 0 (the input) and 1 (the target only) "
                       f"(got {mix:g})") from None
    try:
        check_threshold(threshold)
    except ValueError as e:
        raise CliError(f"--gate-threshold: {e}") from None
    if not 0 <= hold <= 10:  # also refuses nan
        raise CliError(f"--gate-hold must be between 0 and 10 seconds (got {hold:g})")
    return {"threshold_db": threshold, "hold_s": hold}


def _summary_line(s: dict[str, Any]) -> str:
    c = s["counters"]
    rtf = "n/a" if s["rtf_mean"] is None else f"{s['rtf_mean']:.3f}"
    out = (f"{s['windows']} windows, mean RTF {rtf}, dropped {c['dropped_windows']} windows "
           f"({c['dropped_s']:.1f} s), underrun {c['underrun_s']:.2f} s, "
           f"xruns {s['xruns']['events']}")
    if s.get("drift_ppm") is not None:
        out += f", drift {s['drift_ppm']:+.1f} ppm"
    return out


FILE_HELP = """Separate audio files into the target (and the residual).

IN are audio files or folders; a folder gives the audio files below it
(recursively; other files are skipped with a note). OUT is a file for one input
file, else a folder (created when missing): a path that is a folder, ends in /
or has no extension. In a folder each result is named by --name (and the
residual by --residual-name), in the sub-folder its input had, from these fields:

\b
  {stem}    the input's file name without its extension
  {ext}     the input's extension where it can be written, else wav
  {prompt}  the prompt, spaces and path characters as _
  {model}   the --model, as a file name

An input is never overwritten (also not through a link); existing outputs only
with --overwrite. Outputs have the input's sample rate, length and channels
(each channel separated on its own, see --channels) and its sample format where
the output format allows (see --subtype). Outputs are written under hidden
.partial names and renamed at the end, also after Ctrl-C or a full disk.

A progress bar with the time left shows on a terminal (-q: none); the live
status line only with --realtime or --play.
"""

FILE_EXAMPLES = """\b
Examples:
  streamsep file talk.wav -p speech -o talk_speech.wav --residual talk_rest.wav
  streamsep file episodes/ -p speech -o separated/
  streamsep file a.mp3 b.flac -p music -o out/ --name "{stem}.flac" \\
      --residual-name "{stem}_rest.flac"
  streamsep file live.wav -p speech -o voice.wav --subtype PCM_24 --channels mono
  streamsep file model/demo.wav -p speech -o out/speech.wav --play=auto
"""


@cli.command(help=FILE_HELP, epilog=FILE_EXAMPLES)
@click.argument("inputs", metavar="IN...", nargs=-1, required=True)
@click.option("-p", "--prompt", required=True, help="The sound to extract, e.g. 'speech'.")
@click.option("-o", "--output", required=True, metavar="OUT",
              help="Output file (one input file) or folder (created when missing).")
@click.option("--residual", default=None, metavar="FILE",
              help="Residual output file, with -o FILE (in a folder: --residual-name).")
@click.option("--name", default=DEFAULT_NAME, show_default=True, metavar="TEMPLATE",
              help="Name of each target in the output folder (fields above); may hold "
                   "sub-folders, e.g. '{stem}/{prompt}.{ext}'.")
@click.option("--residual-name", default=None, metavar="TEMPLATE",
              help="Also write each residual in the output folder, named so, e.g. "
                   "'{stem}_rest.{ext}'.")
@click.option("--overwrite", is_flag=True,
              help="Replace outputs that exist already (an input never).")
@click.option("--channels", type=click.Choice(CHANNEL_MODES), default="keep",
              show_default=True,
              help="keep: separate each channel on its own and write them all; mono: "
                   "downmix first and write mono; midside: stereo as (L+R)/2 and (L-R)/2, "
                   "better only for a target in the centre over wide sound.")
@click.option("--subtype", default=None, metavar="SUBTYPE",
              help="Sample format of the outputs. WAV, AIFF, CAF, W64: PCM_16, PCM_24, "
                   "PCM_32, FLOAT, DOUBLE; FLAC: PCM_16, PCM_24; OGG: VORBIS, OPUS. Default: "
                   "the input's where the format allows, else FLOAT (FLAC: PCM_24).")
@click.option("--realtime", is_flag=True, help="Pace the input at real time through the live "
              "path (overload policy included; mono).")
@click.option("--play", type=click.Choice(["yes", "auto", "no"]), default="no", is_flag=False,
              flag_value="yes", show_default=True,
              help="Also play the target live while it is separated (implies --realtime; the "
              "output device's clock sets the pace). --play=auto plays where an output device "
              "exists and otherwise only writes the files.")
@click.option("--play-device", default=None, metavar="DEV",
              help="Output device for --play: index or name part (default: the system default).")
@_verbosity
@_prompt_policy
@_knobs
def file(inputs: tuple[str, ...], prompt: str, output: str, residual: str | None, name: str,
         residual_name: str | None, overwrite: bool, channels: str, subtype: str | None,
         realtime: bool, play: str, play_device: str | None, **k: Any) -> int:
    from streamsep.audio import inputs as ins
    from streamsep.audio.files import OutputSpec, check_space, check_writable, output_format
    from streamsep.engine.offline import ChannelLayout

    prompt = _check_prompt(prompt)
    _check_knobs(k)
    folder = ins.is_folder_output(output)
    given = _given(click.get_current_context())
    _check_file_outputs(inputs, output, folder, residual, residual_name, given)
    ins.check_template(name, "--name")
    if residual_name is not None:
        ins.check_template(residual_name, "--residual-name")
    found = ins.find_inputs(inputs, exclude=output if folder else None)
    if not found.inputs:
        other = len(found.other) + len(found.unreadable)
        raise CliError(f"no audio files in {', '.join(inputs)}"
                       + (f" ({other} other files skipped)" if other else "")
                       + ": give audio files (WAV, FLAC, OGG, AIFF, MP3) or folders holding "
                       "them")
    jobs = ins.plan_jobs(found.inputs, output, folder=folder, residual=residual, name=name,
                         residual_name=residual_name, prompt=prompt, model=k["model"])
    ins.check_jobs(jobs, overwrite=overwrite, inputs=found.inputs)
    for job in jobs:  # formats and --subtype, before any folder is created
        for p in (job.target, job.residual):
            if p is not None:
                output_format(p, subtype=subtype)
    if folder:
        _found_notes(found, inputs)
    play_idx = None
    if play != "no" or play_device is not None:
        from streamsep.audio import devices as dev

        try:
            play_idx = dev.resolve(play_device, "output", option="--play-device")
        except dev.DeviceError as e:
            if play != "auto":
                raise
            _note(f"not playing ({_one_line(e)}); writing the files only")
        realtime = realtime or play_idx is not None
    modes = [channels] * len(jobs)
    if realtime and channels != "mono":
        modes = _live_is_mono(jobs)
    ins.make_folders(jobs, note=_note)
    outs = []
    for job, mode in zip(jobs, modes, strict=True):
        info = job.input.info
        nch = ChannelLayout(mode, info.channels).out_channels
        for p in (job.target, job.residual):
            if p is not None:
                check_writable(p, subtype=subtype)
                outs.append(OutputSpec(p, info.declared_frames, nch, subtype, info.subtype))
    # Before the model loads: a run that cannot fit on the disk should not start.
    check_space(outs)
    sep, plan = _load({**k, "prompt": prompt})
    seps = _separators_per_channel(sep, k, prompt, jobs, modes)
    budget = _budget_samples(k, sep, plan) if realtime else 0
    mfile = _open_metrics(k["metrics_json"])
    try:
        return _run_files(jobs, modes, seps, plan, k, prompt=prompt, realtime=realtime,
                          budget=budget, mfile=mfile, play_idx=play_idx, subtype=subtype)
    finally:
        if mfile not in (None, sys.stdout):
            mfile.close()


def _given(ctx: click.Context) -> set[str]:
    """The options given on the command line (not left at their defaults)."""
    return {n for n in ctx.params
            if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)}


def _check_file_outputs(inputs: tuple[str, ...], output: str, folder: bool,
                        residual: str | None, residual_name: str | None,
                        given: set[str]) -> None:
    """-o FILE takes one input file; --residual goes with it, --name/--residual-name with a
    folder."""
    one_file = len(inputs) == 1 and not os.path.isdir(inputs[0])
    if not folder and not one_file:
        what = "the input is a folder" if len(inputs) == 1 else f"{len(inputs)} inputs were given"
        stem = os.path.splitext(output)[0]
        raise CliError(f"-o {output} names one file, but {what}: give an output folder, e.g. "
                       f"-o {stem}/")
    if folder and residual is not None:
        raise CliError("--residual names one file, for -o FILE; in an output folder name the "
                       "residuals with --residual-name, e.g. --residual-name '{stem}_rest.{ext}'")
    if not folder:
        for opt in ("name", "residual_name"):
            if opt in given:
                flag = "--" + opt.replace("_", "-")
                raise CliError(f"{flag} names outputs in an output folder, but -o {output} is a "
                               "file: give a folder as -o, or drop " + flag)
    if residual is not None and os.path.abspath(residual) == os.path.abspath(output):
        raise CliError("--residual and -o name the same file: give two different files")


def _found_notes(found: Any, inputs: tuple[str, ...]) -> None:
    secs = sum(i.info.duration for i in found.inputs)
    _note(f"{len(found.inputs)} audio file{'s' * (len(found.inputs) != 1)} "
          f"({_duration(secs)}) in {', '.join(inputs)}")
    if found.other:
        shown = ", ".join(os.path.basename(p) for p in found.other[:3])
        more = f" and {len(found.other) - 3} more" if len(found.other) > 3 else ""
        _note(f"skipped {len(found.other)} file{'s' * (len(found.other) != 1)} that "
              f"{'are' if len(found.other) != 1 else 'is'} not audio ({shown}{more})")
        for p in found.other:
            console.detail(f"skipped {p}: not an audio file by its extension")
    for p, why in found.unreadable:
        _note(f"skipped {p}: {why}")
    if found.duplicates:
        _note(f"{found.duplicates} file{'s' * (found.duplicates != 1)} given twice, "
              "separated once")


def _duration(s: float) -> str:
    if s >= 3600:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    if s >= 60:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{s:.1f} s"


def _live_is_mono(jobs: list[Any]) -> list[str]:
    """The live path is mono: in real time a multichannel input is downmixed, and says so."""
    multi = [j for j in jobs if j.input.info.channels > 1]
    if multi:
        what = multi[0].input.path if len(jobs) == 1 else \
            f"{len(multi)} of the {len(jobs)} inputs (e.g. {multi[0].input.path})"
        _note(f"--realtime/--play separate the mono downmix of {what} "
              f"({multi[0].input.info.channels} channels) and write it mono (the live path is "
              "mono); without them every channel is kept")
    return ["mono"] * len(jobs)


def _separators_per_channel(sep: Any, k: dict[str, Any], prompt: str, jobs: list[Any],
                            modes: list[str]) -> list[Any]:
    """One separator for all channels, except for a separator with per-stream caches (a
    RegionSeparator: SAM-Audio), of which each channel needs its own copy."""
    from streamsep.engine.offline import ChannelLayout
    from streamsep.separators.base import RegionSeparator

    lanes = max(ChannelLayout(m, j.input.info.channels).lanes for j, m in zip(jobs, modes,
                                                                              strict=True))
    if lanes == 1 or not isinstance(sep, RegionSeparator):
        return [sep]
    from streamsep.separators.registry import load_separator

    _note(f"loading {lanes - 1} more cop{'ies' if lanes > 2 else 'y'} of the model: it keeps "
          "caches per stream, so each channel needs its own (--channels mono needs one)")
    more = []
    for _ in range(lanes - 1):
        s = load_separator(k["model"], steps=k["steps"], method=k["method"],
                           prompt_policy=k.get("prompt_policy"))
        s.set_prompt(prompt)
        more.append(s)
    return [sep, *more]


def _run_files(jobs: list[Any], modes: list[str], seps: list[Any], plan: WindowPlan,
               k: dict[str, Any], *, prompt: str, realtime: bool, budget: int,
               mfile: IO[str] | None, play_idx: int | None, subtype: str | None) -> int:
    """Separate every job in turn. A file that fails is reported and the others go on (a full
    disk stops them all); a signal stops the run after finalizing the current file's outputs."""
    import threading

    from streamsep.audio.files import AudioFileError, DiskFullError
    from streamsep.engine.metrics import Metrics
    from streamsep.engine.offline import run_file
    from streamsep.engine.signals import SIGNALS, stop_on_signals

    sr = seps[0].sample_rate
    stop = threading.Event()
    failed: list[str] = []
    done = 0
    t_all = time.perf_counter()
    seconds = [j.input.info.duration for j in jobs]
    # The live status line means something only in real time (latency, buffer, device).
    live_status = realtime and console.verbosity >= console.NORMAL
    interval = 1.0 if live_status else float("inf")  # warnings still come through
    with stop_on_signals(stop) as caught, \
            console.Progress(seconds, enabled=not realtime and console.bars_wanted()) as bar:
        for i, (job, mode) in enumerate(zip(jobs, modes, strict=True)):
            if stop.is_set():
                break
            info = job.input.info
            player = None
            if play_idx is not None:
                from streamsep.audio import devices as dev
                from streamsep.engine.sinks import DevicePlayer

                dev.check_rate(play_idx, "output", sr)
                player = DevicePlayer(play_idx, sr)
                _note(f"playing the target of {job.input.path} on {dev.name(play_idx)}")
            metrics = Metrics(mfile, status=True if live_status else console.LineStream(),
                              interval_s=interval)
            bar.start(i, os.path.basename(job.input.path))
            t0 = time.perf_counter()
            try:
                s = run_file(seps, plan, job.input.path, job.target, prompt=prompt,
                             residual_path=job.residual, seed=k["seed"], realtime=realtime,
                             budget=budget, overload=k["overload"], metrics=metrics,
                             model_name=k["model"], info=info, player=player, stop=stop,
                             channels=mode, subtype=subtype, progress=bar.update)
            except AudioFileError as e:
                # One bad file of many must not cost the rest; a full disk would fail them too.
                if len(jobs) == 1 or isinstance(e, DiskFullError):
                    raise
                failed.append(job.input.path)
                console.line(f"error: {_one_line(e)}")
                continue
            finally:
                bar.finish(i)
            wall = time.perf_counter() - t0
            names = f"{job.target}{' and ' + job.residual if job.residual else ''}"
            written = s["written"].get(job.target, 0)
            if s.get("signal"):
                kept = (f"{names} finalized with what was separated so far" if written else
                        "nothing was separated yet, so no file was written")
                _note(f"stopped by {s['signal']} after {written / info.sample_rate:.1f} s of "
                      f"{info.duration:.1f} s of {job.input.path}; {kept}"
                      + _not_started(len(jobs) - i - 1))
                return int(s["exit_code"])
            done += 1
            _note(_wrote_line(s, names, written, info, wall, realtime, player, sr,
                              k["overload"]))
        if caught:  # between two files (a signal inside one returned above)
            _note(f"stopped by {_signal_name(caught[0])}"
                  + _not_started(len(jobs) - done - len(failed)))
            return SIGNALS[caught[0]]
    if len(jobs) > 1:
        total = time.perf_counter() - t_all
        audio = sum(seconds)
        _note(f"{done} of {len(jobs)} files separated in {total:.1f} s "
              f"({audio / max(total, 1e-9):.1f}x real time)")
    if failed:
        raise CliError(f"{len(failed)} of {len(jobs)} files failed ({failed[0]}"
                       f"{' and more' if len(failed) > 1 else ''}; see above); the others are "
                       "written")
    return 0


def _signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


def _not_started(n: int) -> str:
    return f"; {n} file{'s' * (n != 1)} not started" if n > 0 else ""


def _wrote_line(s: dict[str, Any], names: str, written: int, info: Any, wall: float,
                realtime: bool, player: Any, sr: int, overload: str) -> str:
    ch = f", {s['channels']} channels" if s.get("channels", 1) > 1 else ""
    line = (f"wrote {names} ({written} samples at {info.sample_rate} Hz{ch}) in {wall:.1f} s "
            f"({written / info.sample_rate / max(wall, 1e-9):.1f}x real time)")
    c = s["counters"]
    bad = c.get("failed_windows", 0) + c.get("invalid_windows", 0) + \
        c.get("nonfinite_windows", 0)
    if realtime or console.verbosity >= console.VERBOSE:
        line += "; " + _summary_line(s)
    elif bad:
        line += (f"; {bad} of {s['windows']} windows failed and hold the "
                 f"{'dry input' if overload == 'dry' else 'silence'}")
    if player is not None:
        line += (f"; played {player.pos / sr:.1f} s, device underrun "
                 f"{player.underrun / sr:.2f} s, device xruns {player.xruns}")
    return line


BATCH_HELP = """Separate an archive: every audio file below IN_DIR into OUT_DIR.

Files are named as by `streamsep file` (--name, --residual-name, in the
sub-folder their input had) and separated by a pool of worker processes, one
model each (--workers, default one per CPU), or with --ray ADDRESS by actors on
a Ray cluster (pip install 'streamsep[cluster]'; IN_DIR and OUT_DIR must be the
same paths on every node). Files longer than --segment are split into segments
that run in parallel and are joined to exactly what one pass writes.

Resumable: OUT_DIR/streamsep-batch.jsonl records every file started and
finished (input size and mtime, settings, outputs, seconds). Run the same
command again and finished files are skipped; interrupted, failed and changed
ones are separated again. A worker that dies mid-file is replaced and the file
retried (--retries). Ctrl-C or SIGTERM stops: running files are finalized and
recorded as interrupted, nothing new starts.
"""

BATCH_EXAMPLES = """\b
Examples:
  streamsep batch podcasts/ separated/ -p speech
  streamsep batch archive/ out/ -p speech --residual-name "{stem}_rest.flac" --workers 4
  streamsep batch /nfs/archive /nfs/out -p music --ray 10.0.0.5:6379
"""


def _batch_knobs(f: Callable) -> Callable:
    """The model and window options of every command, less the live-only --budget and the
    per-window --metrics-json (workers run in other processes)."""
    f = _knobs(f)
    f.__click_params__ = [p for p in f.__click_params__  # type: ignore[attr-defined]
                          if p.name not in ("budget", "metrics_json")]
    return f


@cli.command(help=BATCH_HELP, epilog=BATCH_EXAMPLES)
@click.argument("in_dir", metavar="IN_DIR")
@click.argument("out_dir", metavar="OUT_DIR")
@click.option("-p", "--prompt", required=True, help="The sound to extract, e.g. 'speech'.")
@click.option("--name", default=DEFAULT_NAME, show_default=True, metavar="TEMPLATE",
              help="Name of each target in OUT_DIR (fields as for `streamsep file`).")
@click.option("--residual-name", default=None, metavar="TEMPLATE",
              help="Also write each residual, named so, e.g. '{stem}_rest.{ext}'.")
@click.option("--channels", type=click.Choice(CHANNEL_MODES), default="keep",
              show_default=True, help="As for `streamsep file`.")
@click.option("--subtype", default=None, metavar="SUBTYPE",
              help="Sample format of the outputs, as for `streamsep file`.")
@click.option("--workers", type=int, default=None,
              help="Worker processes (or Ray actors), one model each; default one per CPU "
                   "(on Ray: per CPU of the cluster).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run on the Ray cluster at ADDRESS (host:port, or 'auto').")
@click.option("--retries", type=int, default=2, show_default=True,
              help="Times a file is given to a new worker after its worker died on it.")
@click.option("--overwrite", is_flag=True,
              help="Replace outputs in OUT_DIR that the manifest does not know of.")
@click.option("--segment", "segment_s", type=float, default=300.0, show_default=True,
              metavar="SECONDS",
              help="Split files longer than this into segments run in parallel and joined "
                   "(exactly what one pass writes; built-in models, 48 kHz WAV/FLAC/AIFF "
                   "inputs); 0: never.")
@_verbosity
@_batch_knobs
def batch(in_dir: str, out_dir: str, prompt: str, name: str, residual_name: str | None,
          channels: str, subtype: str | None, workers: int | None, ray_address: str | None,
          retries: int, overwrite: bool, segment_s: float, **k: Any) -> int:
    from streamsep.batch import Settings, run_batch

    prompt = _check_prompt(prompt)
    _check_knobs({**k, "budget": "auto"})
    if workers is not None and not 1 <= workers <= 1024:
        raise CliError(f"--workers must be between 1 and 1024 (got {workers})")
    if not 0 <= retries <= 100:
        raise CliError(f"--retries must be between 0 and 100 (got {retries})")
    if not 0 <= segment_s < float("inf"):
        raise CliError(f"--segment must be 0 (never split) or seconds (got {segment_s})")
    settings = Settings(prompt=prompt, model=k["model"], steps=k["steps"], method=k["method"],
                        seed=k["seed"], window=k["window"], hop=k["hop"],
                        lookahead=k["lookahead"], crossfade=k["crossfade"],
                        overload=k["overload"], channels=channels, subtype=subtype, name=name,
                        residual_name=residual_name)
    return run_batch(in_dir, out_dir, settings, workers=workers, ray_address=ray_address,
                     retries=retries, overwrite=overwrite, segment_s=segment_s or None)


#: streamsep.bench_compare.BENCH_PRESETS, spelled out: importing that module loads MLX.
COMPARE_PRESETS = ("tiny", "small", "base", "large", "reduced", "micro")


BENCH_EXAMPLES = """\b
Examples:
  streamsep bench                                   # 30 s of synthetic input
  streamsep bench talk.wav --steps 2 --json bench.json
  streamsep bench --synthetic 60 --hop 1 --json -  # the JSON on stdout
"""


@cli.command(epilog=BENCH_EXAMPLES)
@click.argument("input_path", metavar="[IN]", required=False)
@click.option("--synthetic", type=float, default=None,
              help="Seconds of synthetic input instead of IN (default 30 when IN is absent).")
@click.option("-p", "--prompt", default="speech", show_default=True)
@click.option("--json", "json_path", default=None, metavar="PATH|-",
              help="Also write the results as JSON to PATH (- for stdout, the table then "
                   "goes to stderr); without it only the table is printed.")
@click.option("--compare", type=click.Choice(["mlx-audio"]), default=None,
              help="Instead: SAM-Audio against mlx-audio's, same random weights, input and "
                   "steps (--steps, default 4 euler); needs mlx-audio, installed without "
                   "torch: pip install --no-deps mlx-audio==0.6.2 sentencepiece (or a pip "
                   "--target folder in STREAMSEP_MLX_AUDIO_PATH). More options: "
                   "tools/bench_vs_mlx_audio.py.")
@click.option("--preset", type=click.Choice(COMPARE_PRESETS), default="small",
              show_default=True,
              help="With --compare: the model size (reduced = the small DiT on a codec at "
                   "encoder 16 / decoder 384 channels, a quick run).")
@_verbosity
@_knobs
def bench(input_path: str | None, synthetic: float | None, prompt: str, json_path: str | None,
          compare: str | None, preset: str, **k: Any) -> None:
    """Measure compute per window, RTF and the latency to expect live."""
    from streamsep.audio.files import check_finite, probe, read_audio
    from streamsep.engine.offline import bench as run_bench

    prompt = _check_prompt(prompt)
    _check_knobs(k)
    if compare is not None:
        ctx = click.get_current_context()
        given = {n for n in ("json_path", "model")
                 if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT}
        _bench_compare(input_path, synthetic, json_path if "json_path" in given else None,
                       preset, "model" in given, k)
        return
    if input_path is not None and synthetic is not None:
        raise CliError("give either IN or --synthetic, not both")
    if synthetic is not None and not 0 < synthetic <= 3600:
        raise CliError(f"--synthetic must be between 0 and 3600 seconds (got {synthetic})")
    if input_path is not None:
        check_finite(input_path, probe(input_path))
    if json_path not in (None, "-"):
        folder = os.path.dirname(os.path.abspath(json_path))
        if not os.path.isdir(folder):
            raise CliError(f"--json {json_path}: folder {folder} does not exist")
    sep, plan = _load({**k, "prompt": prompt})
    if input_path is not None:
        audio = read_audio(input_path, sep.sample_rate)
        source = input_path
    else:
        secs = synthetic or 30.0
        audio = _synthetic(secs, sep.sample_rate)
        source = f"synthetic {secs:g} s"
    from streamsep.engine.engine import warm_up

    t_warm = warm_up(sep, plan, runs=1)
    res = run_bench(sep, plan, audio, prompt=prompt, seed=k["seed"], model_name=k["model"])
    res.update({"model": k["model"], "source": source, "prompt": prompt,
                "steps": k["steps"], "method": k["method"], "first_call_s": t_warm,
                "plan": {"window_s": plan.seconds(plan.window), "hop_s": plan.seconds(plan.hop),
                         "lookahead_s": plan.seconds(plan.lookahead),
                         "crossfade_s": plan.seconds(plan.crossfade)}})
    click.echo(_bench_table(res), err=json_path == "-")
    if json_path is None:
        return  # only where --json says: nothing lands in the current folder uninvited
    text = json.dumps(res, indent=2)
    if json_path == "-":
        click.echo(text)
    else:
        with open(json_path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        _note(f"wrote {json_path}")


def _bench_compare(input_path: str | None, synthetic: float | None, json_path: str | None,
                   preset: str, model_given: bool, k: dict[str, Any]) -> None:
    """``bench --compare mlx-audio``: streamsep.bench_compare's run, table, optional JSON."""
    if model_given:
        raise CliError("--compare builds both models from --preset with random weights: drop "
                       "--model")
    if input_path is not None and synthetic is not None:
        raise CliError("give either IN or --synthetic, not both")
    if synthetic is not None and not 0 < synthetic <= 3600:
        raise CliError(f"--synthetic must be between 0 and 3600 seconds (got {synthetic})")
    from streamsep import bench_compare as bc

    argv = ["--preset", preset, "--seconds", str(synthetic or 30.0),
            "--steps", str(k["steps"] or 4), "--method", k["method"] or "euler",
            "--plan", *(str(k[n]) for n in ("window", "hop", "lookahead", "crossfade"))]
    if input_path is not None:
        argv.append(input_path)
    if json_path is not None:
        argv += ["--json", json_path]
    args = bc.parser().parse_args(argv)
    bad = bc.check_args(args)
    if bad:
        raise CliError(bad)
    try:
        report = bc.run(args, log=_note)
    except (bc.MlxAudioMissing, bc.Mismatch) as e:
        raise CliError(str(e)) from None
    click.echo(bc.summary(report), err=json_path == "-")
    if json_path is not None:
        bc.write_json(report, json_path)
        if json_path != "-":
            _note(f"wrote {json_path}")


def _synthetic(seconds: float, sr: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.1 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * (200 + 50 * t) * t)
    return x.astype(np.float32)


def _bench_table(r: dict[str, Any]) -> str:
    p = r["plan"]
    rows = [("model", f"{r['model']} (steps {r['steps'] or 'default'}, "
                      f"method {r['method'] or 'default'})"),
            ("input", f"{r['source']} ({r['audio_s']:.1f} s), prompt {r['prompt']!r}"),
            ("plan", f"window {p['window_s']:.2f} s, hop {p['hop_s']:.2f} s, lookahead "
                     f"{p['lookahead_s']:.2f} s, crossfade {p['crossfade_s']:.2f} s"),
            ("windows", str(r["windows"])),
            ("first call", f"{r['first_call_s']:.3f} s (compilation, excluded)")]
    if r["windows"]:
        speed = r["speed"]
        rows += [
            ("compute/window", f"mean {r['compute_mean_s']:.3f} s, p50 {r['compute_p50_s']:.3f}, "
                               f"p95 {r['compute_p95_s']:.3f}, max {r['compute_max_s']:.3f}"),
            ("RTF (compute/hop)", f"{r['rtf']:.3f}" + (f"  (speed {speed:.1f}x)" if speed
                                                         else "")),
            ("real time", "yes" if r["realtime_ok"] else "NO: p95 compute exceeds the hop; "
                                                         "raise --hop or lower --steps"),
            ("latency", f"{r['expected_latency_s']:.2f} s = algorithmic "
                        f"{r['algorithmic_latency_s']:.2f} + budget {r['budget_auto_s']:.2f} "
                        "(+ device)"),
        ]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


EVAL_HELP = """Score separation quality: SI-SDR per prompt class on held-out mixtures.

\b
Without --corpus it scores the 20 held-out mixtures that ship with streamsep
(10 s each, 16 kHz: synthetic and recorded speech over music and noise the
embedded model never trained on; licences in streamsep/data/eval/LICENSES.md).
The table has the model with trained and held-out wordings of each prompt, the
wrong prompt, the unprocessed mixture and a spectral-gating baseline; --engine
adds the streaming engine at --window/--hop/--lookahead/--crossfade.

\b
A corpus folder (--corpus DIR) holds either
  mixtures.json and one mono 16 kHz file per source (the mixture is their
  sum): what --make-corpus DIR writes, the way to add mixtures of your own, or
  test_mixtures.json + test_mixtures.npz from tools/make_corpus.py (the full
  60-mixture set; it needs Debian's TTS and MIDI packages).
"""

EVAL_EXAMPLES = """\b
Examples:
  streamsep eval                                   # the bundled held-out set
  streamsep eval --engine --window 4 --hop 0.5 --lookahead 0.25 --crossfade 0.1
  streamsep eval --seams --engine-limit 4          # how the window seams score
  streamsep eval --model passthrough --limit 5 --json -
  streamsep eval --make-corpus my_corpus/          # the bundled set as files, to extend
  streamsep eval --corpus my_corpus/ --json eval.json
"""


@cli.command(help=EVAL_HELP, epilog=EVAL_EXAMPLES)
@click.option("--corpus", default=None, metavar="DIR",
              help="Corpus folder (see above); default: the held-out set shipped with "
                   "streamsep.")
@click.option("--make-corpus", "make_dir", default=None, metavar="DIR",
              help="Instead of scoring: write the corpus's mixtures (with --limit, the first "
                   "N) into DIR as 16-bit FLAC files and mixtures.json.")
@click.option("--model", default=None,
              help="Separator to score, as for the other commands (default: embedded).")
@click.option("--steps", type=int, default=None, help="Flow steps (default: the model's).")
@click.option("--limit", type=int, default=None, help="Only the first N mixtures.")
@click.option("--engine", is_flag=True, help="Also score through the streaming engine.")
@click.option("--engine-limit", type=int, default=10, show_default=True,
              help="Mixtures for the engine pass.")
@click.option("--seams", is_flag=True,
              help="With the engine pass: how the seams between windows score (SI-SDR near "
                   "them vs elsewhere, a discontinuity ratio, window disagreement; see the "
                   "README's 'Seams between windows'). Implies --engine.")
@click.option("--window", type=float, default=DEFAULT_WINDOW_S, show_default=True,
              help="Engine window W, seconds.")
@click.option("--hop", type=float, default=DEFAULT_HOP_S, show_default=True,
              help="Engine hop H, seconds.")
@click.option("--lookahead", type=float, default=DEFAULT_LOOKAHEAD_S, show_default=True,
              help="Engine lookahead R, seconds.")
@click.option("--crossfade", type=float, default=DEFAULT_CROSSFADE_S, show_default=True,
              help="Engine crossfade X, seconds.")
@click.option("--json", "json_path", default=None, metavar="PATH|-",
              help="Also write the full result (every mixture's row) as JSON to PATH (- for "
                   "stdout; the table then goes to stderr).")
@_verbosity
def eval(corpus: str | None, make_dir: str | None, model: str | None,  # noqa: A001
         steps: int | None, limit: int | None, engine: bool, engine_limit: int, seams: bool,
         window: float, hop: float, lookahead: float, crossfade: float,
         json_path: str | None) -> int:
    from pathlib import Path

    try:
        import streamsep.evaluation as ev
    except ModuleNotFoundError as e:
        raise CliError(f"streamsep eval needs the package '{e.name}': pip install {e.name}") \
            from None
    for name, v, low in (("--limit", limit, 1), ("--engine-limit", engine_limit, 1),
                         ("--steps", steps, 1)):
        if v is not None and v < low:
            raise CliError(f"{name} must be at least {low} (got {v})")
    if steps is not None and steps > MAX_STEPS:
        raise CliError(f"--steps must be at most {MAX_STEPS} (got {steps})")
    WindowPlan.from_seconds(48000, 1920, window, hop, lookahead, crossfade)
    src = Path(corpus) if corpus is not None else ev.BUNDLED_CORPUS
    if corpus is not None and not src.is_dir():
        raise CliError(f"--corpus {corpus} is not a folder: give a corpus folder, or omit "
                       "--corpus for the bundled set")
    if json_path not in (None, "-"):
        folder = os.path.dirname(os.path.abspath(json_path))
        if not os.path.isdir(folder):
            raise CliError(f"--json {json_path}: folder {folder} does not exist")
    try:
        if make_dir is not None:
            out = Path(make_dir)
            if out.resolve() == src.resolve():
                raise CliError(f"--make-corpus {make_dir} is the corpus being read: give "
                               "another folder")
            files = ev.make_corpus(src, out, limit)
            _note(f"wrote mixtures.json and {len(files) - 1} FLAC sources to {make_dir}; "
                  f"score them with: streamsep eval --corpus {make_dir}")
            return 0
        result = ev.run(src, model=model, steps=steps, limit=limit, engine=engine or seams,
                        engine_limit=engine_limit, window=window, hop=hop, lookahead=lookahead,
                        crossfade=crossfade, seams=seams)
    except ev.EvalError as e:
        click.echo(f"error: {_one_line(e)}", err=True)
        return 2
    click.echo(ev.format_table(result), err=json_path == "-")
    if json_path is not None:
        text = json.dumps(result, indent=1)
        if json_path == "-":
            click.echo(text)
        else:
            with open(json_path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            _note(f"wrote {json_path}")
    return 0


# -- entry point -----------------------------------------------------------------------------------
def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[0].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    from streamsep.audio.devices import DeviceError
    from streamsep.audio.files import AudioFileError
    from streamsep.engine.plan import PlanError
    from streamsep.separators.registry import ModelError

    debug = os.environ.get("STREAMSEP_DEBUG") == "1"
    code = 0
    console.set_verbosity(console.NORMAL)  # -q / -v hold for this call only (tests call again)
    try:
        rv = cli.main(args=argv, prog_name="streamsep", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        code = 130
    except click.ClickException as e:
        cmd = e.ctx.command_path if getattr(e, "ctx", None) is not None else "streamsep"
        click.echo(f"error: {_one_line(click.unstyle(e.format_message()))} "
                   f"(see `{cmd} --help`)", err=True)
        code = e.exit_code or 2
    except (CliError, PlanError, AudioFileError, DeviceError, ModelError) as e:
        if debug:
            raise
        click.echo(f"error: {_one_line(e)}", err=True)
        code = 1
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        code = 130
    except Exception as e:
        if debug:
            raise
        click.echo(f"error: {type(e).__name__}: {_one_line(e)} (unexpected; rerun with "
                   "STREAMSEP_DEBUG=1 for the traceback and report it)", err=True)
        code = 1
    _exit(code)


def _exit(code: int) -> None:
    live = sys.modules.get("streamsep.engine.live")
    if live is not None and live.StreamsAbandoned.abandoned:
        # PortAudio still holds a stream it could not stop (its sound server is gone); its
        # exit handler would hang on it, so leave without running exit handlers. Everything
        # of ours is already closed and flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
