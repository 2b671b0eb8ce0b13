#!/usr/bin/env python3
"""xrun_bench: count glitches of `streamsep run` on a JACK dummy server, fed by the C harness.

    python tools/xrun_bench.py --model passthrough --duration 30
    python tools/xrun_bench.py --model embedded --load 1 --json out/xruns.json
    python tools/xrun_bench.py --repo /path/to/old/checkout --repo . --duration 30   # side by side
    python tools/xrun_bench.py --model embedded -- --window 4 --hop 0.5   # knobs after --

For each checkout (``--repo DIR`` runs DIR/.venv/bin/streamsep; default: this checkout) it starts a
private ``jackd -d dummy -r 48000 -p 256``, runs ``streamsep run -p PROMPT -i system -o system
--model MODEL KNOBS --metrics-json ...``, rewires streamsep's PortAudio ports from system:* to
tools/rtharness (a real-time-safe C client: it plays model/demo.wav looped with a marker burst
every second and records streamsep's output), optionally keeps ``--load N`` cores busy, stops
streamsep with SIGTERM after ``--duration`` seconds and reports:

* JACK's xruns: the events jackd logs for the streamsep client ("client = PortAudio was not
  finished"), for the harness and for the driver, and the server-wide xrun callbacks the harness
  received; the harness's own missed/late cycles (expected 0: it is the reference).
* streamsep's own report: the sum of the xrun flags in its metrics 'end' record (PortAudio status
  flags, which may double count), underruns, dropped windows.
* wrong samples: the recording against the played signal delayed by the latency streamsep
  reported (or, if no marker sits exactly there, the lag the first markers agree on). With
  ``--model passthrough`` every sample must be bit-identical; for other models each marker
  period's first half second (marker + program) is located sample-exactly in the target and
  misaligned stretches are counted (stretches whose target is too unlike the input to locate,
  e.g. music-only passages under a speech prompt, are counted apart). A JACK xrun (a skipped
  cycle) typically shifts the output by one period for one latency's time.

``--server-pauses N`` stops jackd (SIGSTOP, then SIGCONT 3 to 40 ms later) N times a minute at
random moments: the server is late, as when the host steals its CPU or its timer wakes late,
but every client still gets every cycle, so nothing may be filled in or shifted.

Prints a table and writes everything to ``--json PATH``. Exit status 0 unless a run failed to
start; the numbers are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "rtharness"))

import rth  # noqa: E402

LOW_LATENCY = ["--window", "4", "--hop", "0.5", "--lookahead", "0.25", "--crossfade", "0.1"]


class ServerPauser(threading.Thread):
    """Stops the JACK server for 3 to 40 ms, ``per_minute`` times a minute at random moments."""

    def __init__(self, pid: int, per_minute: float, seed: int = 1):
        super().__init__(daemon=True)
        self.pid, self.per_minute, self.rnd = pid, per_minute, random.Random(seed)
        self.pauses_ms: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        mean_gap = 60.0 / self.per_minute
        while not self.halt.wait(self.rnd.uniform(0.4, 1.6) * mean_gap):
            ms = self.rnd.uniform(3.0, 40.0)
            os.kill(self.pid, signal.SIGSTOP)
            try:
                time.sleep(ms / 1000)
            finally:
                os.kill(self.pid, signal.SIGCONT)
            self.pauses_ms.append(round(ms, 1))

    def stop(self) -> list[float]:
        self.halt.set()
        self.join()
        return self.pauses_ms


def measure(*, repo: str | None, streamsep: str | None, model: str, prompt: str,
            knobs: list[str], duration: float, load: int, residual: bool, play: str | None,
            gen: str | None, workdir: Path, server_pauses: float = 0.0) -> dict[str, Any]:
    t0 = time.monotonic()
    steal0 = rth.steal_seconds()
    with rth.live_session(workdir, duration=duration, model=model, prompt=prompt, knobs=knobs,
                          residual=residual, play=play, gen=gen, load=load, repo=repo,
                          streamsep=streamsep) as s:
        pauser = ServerPauser(s.jack.proc.pid, server_pauses) if server_pauses > 0 else None
        if pauser is not None:
            pauser.start()
        try:
            summary = s.harness.wait(timeout=duration + 60)
        finally:
            pauses = pauser.stop() if pauser is not None else []
        if summary.get("error"):
            raise rth.HarnessError(f"the harness stopped after {summary['frames_recorded']} "
                                   f"frames: {summary['error']} (jackd log {s.jack.log})")
        lines = s.jack.log_lines()
        stopped = s.stop_streamsep()
        client = s.client
        command = s.command
        start_rec = s.start_record
        rec = s.harness.recording()
        sig = s.harness.signal()
        log_mark = s.log_mark
        lines_all = s.jack.log_lines()
    steal1 = rth.steal_seconds()
    during = rth.xrun_counts(lines[log_mark:])
    total = rth.xrun_counts(lines_all)
    records = rth.read_jsonl(workdir / "metrics.jsonl")
    windows = [r for r in records if r.get("type") == "window"]
    end = next((r for r in records if r.get("type") == "end"), None)
    start_rec = start_rec or next((r for r in records if r.get("type") == "start"), {})
    reported_s = (start_rec.get("latency") or {}).get("total_s")
    lat_values = sorted({round(w["latency"]["total_s"], 9) for w in windows
                         if "latency" in w})
    xr_flags = (end or (windows[-1] if windows else {})).get("xruns") or {}
    counters = (end or (windows[-1] if windows else {})).get("counters") or {}
    lag_guess = int(round((reported_s or 0.0) * rth.SR))
    align: dict[str, Any] = {}
    channels = [("target", 0)] + ([("residual", 1)] if residual else [])
    for name, ch in channels:
        a = rth.align(rec[:, ch], sig, lag_guess)
        a.pop("chunks")
        if a["lag"] is not None:
            a["lag_minus_reported"] = a["lag"] - lag_guess
        align[name] = a
    exact = None
    if model == "passthrough" and align["target"]["lag"] is not None:
        exact = rth.compare_exact(rec[:, 0], sig, align["target"]["lag"])
    out = {
        "repo": repo or str(ROOT), "command": command, "model": model, "knobs": knobs,
        "duration_s": duration, "load": load, "wall_s": round(time.monotonic() - t0, 1),
        "server_pauses_ms": pauses,
        "steal_s": None if steal0 is None or steal1 is None else round(steal1 - steal0, 2),
        "jack": {
            "client": client,
            "xrun_events": during["events"],
            "xruns_streamsep": during["clients"].get(client, 0),
            "xruns_harness_only": during["only"].get(summary["client"], 0),
            "xruns_driver": during["driver"],
            "xruns_by_client": during["clients"],
            "xruns_only_client": during["only"],
            "xruns_streamsep_whole_run": total["clients"].get(client, 0),
            "xrun_callbacks": summary["server_xruns"],
        },
        "harness": {k: summary[k] for k in ("realtime", "frames_played", "frames_recorded",
                                            "gap_cycles", "late_reads", "late_cycles",
                                            "overrun_cycles", "own_xruns", "ring_overflows",
                                            "max_callback_us", "start_frame",
                                            "xrun_positions", "rc")},
        "streamsep": {
            "rc": stopped["rc"], "killed": stopped["killed"], "clean_end": end is not None,
            "windows": len(windows), "xruns_reported": reported_xruns(xr_flags),
            "xrun_flags": xr_flags, "counters": counters,
            "latency_reported_s": reported_s, "latency_values_s": lat_values,
            "stderr_tail": stopped["stderr_tail"] if stopped["rc"] not in (0, None) else "",
        },
        "alignment": align,
        "exact": exact,
    }
    out["wrong"] = _wrong(out)
    return out


def baseline(*, duration: float, load: int, play: str | None, gen: str | None,
             workdir: Path, keep: bool = False) -> dict[str, Any]:
    """The harness alone, its output wired to its own input, under the same load: the xruns and
    wrong samples this machine produces without streamsep (the floor for the numbers above)."""
    t0 = time.monotonic()
    steal0 = rth.steal_seconds()
    with rth.JackServer(log_dir=workdir) as jack:
        loadp = rth.start_load(load)
        try:
            h = rth.start_harness(workdir / "harness", env=jack.env, name="rtharness",
                                  duration=duration, play=play, gen=gen,
                                  to=["rtharness:in_1"])
            summary = h.wait(timeout=duration + 60)
            if summary.get("error"):
                raise rth.HarnessError(f"the harness stopped: {summary['error']}")
        finally:
            rth.stop_procs(loadp)
        xr = rth.xrun_counts(jack.log_lines())
    steal1 = rth.steal_seconds()
    rec, sig = h.recording()[:, 0], h.signal()
    a = rth.align(rec, sig, summary["buffer_size"], first_search=4096)
    a.pop("chunks")
    exact = rth.compare_exact(rec, sig, a["lag"]) if a["lag"] is not None else None
    out = {
        "repo": "(harness alone)", "command": ["rtharness", "loopback"], "model": "loopback",
        "knobs": [], "duration_s": duration, "load": load,
        "wall_s": round(time.monotonic() - t0, 1),
        "steal_s": None if steal0 is None or steal1 is None else round(steal1 - steal0, 2),
        "jack": {"client": None, "xrun_events": xr["events"], "xruns_streamsep": 0,
                 "xruns_harness_only": xr["only"].get(summary["client"], 0),
                 "xruns_driver": xr["driver"], "xruns_by_client": xr["clients"],
                 "xruns_only_client": xr["only"], "xrun_callbacks": summary["server_xruns"]},
        "harness": {k: summary[k] for k in ("realtime", "frames_played", "frames_recorded",
                                            "gap_cycles", "late_reads", "late_cycles",
                                            "overrun_cycles", "own_xruns", "ring_overflows",
                                            "max_callback_us", "start_frame",
                                            "xrun_positions", "rc")},
        "streamsep": {"rc": None, "killed": False, "clean_end": None, "windows": 0,
                      "xruns_reported": None, "xrun_flags": {}, "counters": {},
                      "latency_reported_s": None, "latency_values_s": [], "stderr_tail": ""},
        "alignment": {"target": {**a, "lag_minus_reported": None}},
        "exact": exact,
    }
    out["wrong"] = _wrong(out)
    if not keep:
        h.record_path.unlink(missing_ok=True)
    return out


def reported_xruns(flags: dict[str, int]) -> int:
    """streamsep's own xrun count: its ``events`` field where it has one (callbacks that carried
    any flag), else the sum of the PortAudio flags (which counts one glitch up to twice)."""
    if "events" in flags:
        return int(flags["events"])
    return int(sum(flags.values()))


def _wrong(r: dict[str, Any]) -> dict[str, Any]:
    """One line of the damage: wrong samples (passthrough) or bad marker stretches."""
    a = r["alignment"]["target"]
    if r["exact"] is not None:
        return {"kind": "samples", "count": r["exact"]["wrong_samples"],
                "blocks": r["exact"]["wrong_blocks"], "of": r["exact"]["compared"]}
    if a["lag"] is None:
        return {"kind": "markers", "count": None, "of": a["checked"]}
    return {"kind": "markers", "count": len(a["misaligned"]), "misaligned": len(a["misaligned"]),
            "missing": a["missing"], "of": a["checked"]}


def _ctr(r: dict[str, Any], key: str) -> float:
    return r["streamsep"]["counters"].get(key, 0)


def _filled(r: dict[str, Any]) -> str:
    f = r["streamsep"]["xrun_flags"]
    return f"{f.get('missed_cycles')} ({f.get('missed_frames')})"


def table(results: list[dict[str, Any]]) -> str:
    def wrong(r):
        w = r["wrong"]
        if w["count"] is None:
            return "no lag found"
        if w["kind"] == "samples":
            return f"{w['count']} samples ({w['blocks']} blocks) of {w['of']}"
        return (f"{w['misaligned']} of {w['of']} stretches misaligned ({w['missing']} too "
                f"unlike the input to locate)")

    rows = [
        ("checkout", lambda r: r["repo"] if r["repo"].startswith("(") else
                               (Path(r["repo"]).name or r["repo"])),
        ("model / load", lambda r: f"{r['model']} / {r['load']} busy"),
        ("duration s", lambda r: f"{r['duration_s']:g}"),
        ("CPU stolen by the host s", lambda r: r.get("steal_s")),
        ("server paused (times, ms)", lambda r: f"{len(r.get('server_pauses_ms') or [])}, "
                                                f"{sum(r.get('server_pauses_ms') or []):.0f}"),
        ("filled-in cycles (frames)", _filled),
        ("JACK xruns (skipped cycles)", lambda r: r["jack"]["xrun_events"]),
        ("  with streamsep late", lambda r: r["jack"]["xruns_streamsep"]),
        ("  harness alone / driver timer", lambda r: f"{r['jack']['xruns_harness_only']} / "
                                                     f"{r['jack']['xruns_driver']}"),
        ("xrun callbacks (server-wide)", lambda r: r["jack"]["xrun_callbacks"]),
        ("harness overruns / ring overflows", lambda r: f"{r['harness']['overrun_cycles']} / "
                                                        f"{r['harness']['ring_overflows']}"),
        ("harness late reads (placed exactly)", lambda r: r["harness"]["late_reads"]),
        ("streamsep reported xruns", lambda r: r["streamsep"]["xruns_reported"]),
        ("underrun s / dropped windows", lambda r: f"{_ctr(r, 'underrun_s'):.2f} / "
                                                   f"{_ctr(r, 'dropped_windows')}"),
        ("latency reported s", lambda r: r["streamsep"]["latency_reported_s"]),
        ("measured lag - reported", lambda r: r["alignment"]["target"].get("lag_minus_reported")),
        ("wrong", wrong),
        ("streamsep exit", lambda r: "-" if r["streamsep"]["rc"] is None else
                                     f"rc {r['streamsep']['rc']}"
                                     f"{' (killed)' if r['streamsep']['killed'] else ''}"),
    ]
    cells = [[name] + [str(f(r)) for r in results] for name, f in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def main(argv: list[str] | None = None) -> int:
    argv, passthru = rth.split_passthrough(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Unknown options (or everything after --) go to "
                                        "`streamsep run` (knobs: --window, --hop, --budget ...).")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("-p", "--prompt", default="speech")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds measured (30)")
    ap.add_argument("--load", type=int, default=0, help="busy-loop processes (0)")
    ap.add_argument("--repo", action="append", default=None,
                    help="checkout whose .venv/bin/streamsep runs (repeat to compare)")
    ap.add_argument("--streamsep", default=None, help="command that runs streamsep instead")
    ap.add_argument("--residual", action="store_true",
                    help="also record the residual (--residual-out system) on harness in_2")
    ap.add_argument("--low-latency", action="store_true", help=f"add {' '.join(LOW_LATENCY)}")
    ap.add_argument("--play", default=str(ROOT / "model" / "demo.wav"),
                    help="mono 48 kHz WAV or raw float32 to loop (model/demo.wav)")
    ap.add_argument("--gen", default=None, help="generated source instead: sine:F, noise:A")
    ap.add_argument("--baseline", action="store_true",
                    help="also run the harness alone (output looped to its input) under the "
                         "same load: the machine's own xrun floor")
    ap.add_argument("--server-pauses", type=float, default=0.0, metavar="N",
                    help="stop jackd for 3-40 ms N times a minute (a late server: nothing is "
                         "missed)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--workdir", default=None, help="keep recordings and logs here")
    args, unknown = ap.parse_known_args(argv)
    knobs = (LOW_LATENCY if args.low_latency else []) + unknown + passthru
    repos = args.repo or [None]
    results = []
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="xrun_bench_"))
    for i, repo in enumerate(repos):
        wd = base / f"run{i}"
        print(f"[{i + 1}/{len(repos)}] {repo or ROOT}: {args.model}, {args.duration:g} s, "
              f"load {args.load} ...", file=sys.stderr, flush=True)
        try:
            r = measure(repo=repo, streamsep=args.streamsep, model=args.model,
                        prompt=args.prompt, knobs=knobs, duration=args.duration, load=args.load,
                        residual=args.residual, play=None if args.gen else args.play,
                        gen=args.gen, workdir=wd, server_pauses=args.server_pauses)
        except rth.HarnessError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        results.append(r)
        if not args.workdir:
            for f in (wd / "harness" / "record.f32",):
                f.unlink(missing_ok=True)
    if args.baseline:
        print(f"[baseline] harness alone, {args.duration:g} s, load {args.load} ...",
              file=sys.stderr, flush=True)
        results.append(baseline(duration=args.duration, load=args.load,
                                play=None if args.gen else args.play, gen=args.gen,
                                workdir=base / "baseline", keep=bool(args.workdir)))
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"runs": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
