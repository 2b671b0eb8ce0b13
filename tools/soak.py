#!/usr/bin/env python3
"""soak: the live engine for a long time on a JACK dummy server, fed real audio by the C harness.

    python tools/soak.py                          # 3600 s, embedded model, default knobs
    python tools/soak.py --duration 120           # the CI variant (tests/test_soak.py)
    python tools/soak.py --low-latency --json out/soak.json
    python tools/soak.py --model passthrough --duration 300   # output must stay bit-exact

Runs ``streamsep run -p speech -i system -o system --model MODEL [knobs] --metrics-json ...`` on a
private ``jackd -d dummy -r 48000 -p 256``; tools/rtharness (a real-time-safe C client) plays
model/demo.wav (48 kHz mono speech + music) in a loop with a pseudo-random marker burst every
second into streamsep's input and records its output. ``--low-latency`` uses ``--window 4 --hop
0.5 --lookahead 0.25 --crossfade 0.1``.

Every ``--interval`` (10) seconds it samples: the latency (window records' latency.total_s), the
ring fill (ring.input_s, ring.playback_s), the streamsep process's RSS (/proc/PID/status VmRSS),
the longest GC pause (``gc_pause_max_ms`` in the window records; n/a when the engine does not
report it), JACK's xruns for the streamsep client (from jackd's log), streamsep's own xruns and
its counters. At the end it checks the recording: every marker period's stretch must sit at
exactly its played position + one constant offset (no lost or repeated samples); with
``--model passthrough`` every sample must also be bit-identical.

Writes the samples and a verdict as JSON (``--json``, default soak.json in the work folder) and
exits 1 on any xrun (a cycle JACK skipped because a client was late, or streamsep's own report),
underrun or dropped window, a latency change, RSS growth > ``--rss-limit-mb`` (10) after the
warm-up (the larger of 60 s and 10 % of the duration, at most half of it), or lost/duplicated
samples; 2 when it could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "rtharness"))

import rth  # noqa: E402

LOW_LATENCY = ["--window", "4", "--hop", "0.5", "--lookahead", "0.25", "--crossfade", "0.1"]


def _xruns_reported(flags: dict[str, int]) -> int:
    if "events" in flags:
        return int(flags["events"])
    return int(sum(flags.values()))


def _sample(s: rth.Session, t: float, recs: list[dict[str, Any]], last: dict[str, Any] | None,
            log_from: int) -> dict[str, Any]:
    """One periodic sample from the window records since the previous one."""
    win = [r for r in recs if r.get("type") == "window"]
    cur = win[-1] if win else last
    rss = rth.rss_kb(s.proc.pid)
    gc = [r["gc_pause_max_ms"] for r in win if r.get("gc_pause_max_ms") is not None]
    lat = [r["latency"]["total_s"] for r in win]
    xr = rth.xrun_counts(s.jack.log_lines()[log_from:])
    out: dict[str, Any] = {
        "t": round(t, 2),
        "windows": len(win),
        "rss_mb": None if rss is None else round(rss / 1024, 2),
        "gc_pause_max_ms": max(gc) if gc else None,
        "jack_xruns_streamsep": xr["clients"].get(s.client, 0),
        "jack_xrun_events": xr["events"],
        "steal_s_total": rth.steal_seconds(),
    }
    if cur is not None:
        out.update({
            "window": cur.get("window"),
            "latency_s": cur["latency"]["total_s"],
            "latency_min_s": min(lat) if lat else cur["latency"]["total_s"],
            "latency_max_s": max(lat) if lat else cur["latency"]["total_s"],
            "ring_input_s": cur["ring"]["input_s"],
            "ring_playback_s": cur["ring"]["playback_s"],
            "ring_input_max_s": max((r["ring"]["input_s"] for r in win),
                                    default=cur["ring"]["input_s"]),
            "ring_playback_max_s": max((r["ring"]["playback_s"] for r in win),
                                       default=cur["ring"]["playback_s"]),
            "compute_max_s": max((r["compute_s"] for r in win), default=None),
            "xruns": _xruns_reported(cur.get("xruns") or {}),
            "counters": cur.get("counters"),
        })
    return out


def _shifts(chunks: list[tuple[int, int | None, float]]) -> dict[str, Any]:
    """Offsets of the stretches: a shift is a nonzero offset that holds for two stretches in a
    row or more (samples lost/repeated); a lone deviating stretch is an outlier."""
    events, outliers = [], []
    conf = [(k, off) for k, off, _ in chunks if off is not None]
    i = 0
    while i < len(conf):
        k, off = conf[i]
        if off != 0:
            j = i
            while j + 1 < len(conf) and conf[j + 1][1] == off:
                j += 1
            if j > i or i == len(conf) - 1:
                events.append({"from_k": k, "to_k": conf[j][0], "offset": off})
            else:
                outliers.append({"k": k, "offset": off})
            i = j + 1
        else:
            i += 1
    final = conf[-1][1] if conf else None
    return {"events": events, "outliers": outliers, "final_offset": final}


def run(args: argparse.Namespace, knobs: list[str]) -> dict[str, Any]:
    wd = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="soak_"))
    warmup = args.warmup if args.warmup is not None else min(max(60.0, 0.1 * args.duration),
                                                             args.duration / 2)
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    steal0 = rth.steal_seconds()
    jack = rth.JackServer.attach(args.server, args.server_log) if args.server else None
    with rth.live_session(wd, duration=args.duration, model=args.model, prompt=args.prompt,
                          knobs=knobs, residual=args.residual, play=args.play, load=args.load,
                          repo=args.repo, streamsep=args.streamsep, jack=jack) as s:
        tail = rth.JsonlTail(s.metrics)
        last = None
        next_t = args.interval
        while s.harness.proc.poll() is None:
            if s.proc.poll() is not None:
                break  # streamsep died: the harness runs on, but there is nothing to watch
            t = time.monotonic() - s.t_start
            if t >= next_t:
                recs = tail.read()
                smp = _sample(s, t, recs, last, s.log_mark)
                last = next((r for r in reversed(recs) if r.get("type") == "window"), last)
                samples.append(smp)
                next_t += args.interval
                if not args.quiet:
                    print(f"soak t={t:6.0f}s latency {smp.get('latency_s')} ring in "
                          f"{smp.get('ring_input_s')} out {smp.get('ring_playback_s')} rss "
                          f"{smp['rss_mb']} MB gc {smp['gc_pause_max_ms']} xruns jack "
                          f"{smp['jack_xruns_streamsep']} own {smp.get('xruns')}",
                          file=sys.stderr, flush=True)
            time.sleep(0.2)
        died = s.proc.poll() is not None
        summary = s.harness.wait(timeout=args.duration + 60)
        lines = s.jack.log_lines()
        stopped = s.stop_streamsep()
        records = rth.read_jsonl(s.metrics)
        rec = s.harness.recording()
        sig = s.harness.signal()
        client, log_mark, start_rec, command = s.client, s.log_mark, s.start_record, s.command
    wall = time.monotonic() - t0
    steal1 = rth.steal_seconds()
    windows = [r for r in records if r.get("type") == "window"]
    end = next((r for r in records if r.get("type") == "end"), None)
    start_rec = start_rec or next((r for r in records if r.get("type") == "start"), {})
    reported_s = (start_rec.get("latency") or {}).get("total_s") or 0.0
    lag_guess = int(round(reported_s * rth.SR))
    xr = rth.xrun_counts(lines[log_mark:])

    # alignment and content
    checks: dict[str, Any] = {}
    for name, ch in [("target", 0)] + ([("residual", 1)] if args.residual else []):
        a = rth.align(rec[:, ch], sig, lag_guess)
        chunks = a.pop("chunks")
        a.update(_shifts(chunks))
        if a["lag"] is not None:
            a["lag_minus_reported"] = a["lag"] - lag_guess
        a["confident_fraction"] = round((a["checked"] - a["missing"]) / max(1, a["checked"]), 3)
        a["stretches"] = [[k, off, sc] for k, off, sc in chunks] if args.keep_stretches else None
        checks[name] = a
    exact = None
    if args.model == "passthrough" and checks["target"]["lag"] is not None:
        exact = rth.compare_exact(rec[:, 0], sig, checks["target"]["lag"])

    # verdict
    fails: list[str] = []
    final = end or (windows[-1] if windows else {})
    own_xruns = _xruns_reported(final.get("xruns") or {})
    counters = final.get("counters") or {}
    jack_stream = xr["clients"].get(client, 0)
    machine = xr["machine"].get(client, 0) if args.allow_machine_xruns else 0
    if xr["events"] - machine:
        fails.append(f"JACK xruns: {xr['events']} cycles skipped, {jack_stream} of them with "
                     f"{client} late ({summary['server_xruns']} xrun callbacks server-wide, "
                     f"{xr['driver']} late timer wake-ups of the dummy driver"
                     + (f", {machine} allowed as machine stalls)" if machine else ")"))
    if own_xruns > machine:
        fails.append(f"streamsep reported {own_xruns} xruns")
    for key in ("underrun_s", "overrun_s", "dropped_windows"):
        if counters.get(key):
            fails.append(f"streamsep {key} = {counters[key]}")
    harness_only = xr["only"].get(summary["client"], 0)
    if summary["own_xruns"] or harness_only:
        fails.append(f"the harness itself glitched ({summary['overrun_cycles']} callback "
                     f"overruns, {summary['ring_overflows']} ring overflows, {harness_only} "
                     "xruns with only the harness late): the run is not conclusive")
    lat_values = sorted({round(w["latency"]["total_s"], 9) for w in windows})
    if len(lat_values) > 1:
        fails.append(f"latency changed: {lat_values[:6]}")
    if not windows:
        fails.append("no window records")
    rss_after = [x["rss_mb"] for x in samples if x["rss_mb"] is not None and x["t"] >= warmup]
    rss_base = rss_after[0] if rss_after else None
    rss_growth = (max(rss_after) - rss_base) if rss_after else None
    if rss_growth is not None and rss_growth > args.rss_limit_mb:
        fails.append(f"RSS grew {rss_growth:.1f} MB after the warm-up ({warmup:.0f} s)")
    for name, a in checks.items():
        if a["lag"] is None:
            fails.append(f"{name}: the marker was not found near the reported latency")
            continue
        if a["events"]:
            fails.append(f"{name}: lost/duplicated samples: offset changes {a['events'][:5]}")
        if a["confident_fraction"] < 0.5:
            fails.append(f"{name}: only {a['confident_fraction']:.0%} of the stretches could be "
                         "located")
    lags = [a["lag"] for a in checks.values() if a["lag"] is not None]
    if len(lags) == 2 and lags[0] != lags[1]:
        fails.append(f"target and residual play {lags[0] - lags[1]} samples apart (target "
                     "+ residual is not the input)")
    if exact is not None and exact["wrong_samples"]:
        fails.append(f"passthrough output differs from the input in {exact['wrong_samples']} "
                     f"samples ({exact['wrong_blocks']} blocks), first at {exact['first_bad_s']}")
    if summary.get("error") or summary["frames_recorded"] < summary["total_frames"]:
        fails.append(f"the harness stopped after {summary['frames_recorded'] / rth.SR:.1f} s: "
                     f"{summary.get('error')}")
    if died:
        fails.append(f"streamsep exited during the soak (rc {stopped['rc']}): "
                     f"{stopped['stderr_tail']}")
    elif end is None:
        fails.append(f"streamsep wrote no end record (rc {stopped['rc']}, "
                     f"killed {stopped['killed']})")
    gc_all = [w["gc_pause_max_ms"] for w in windows if w.get("gc_pause_max_ms") is not None]
    result = {
        "verdict": "fail" if fails else "pass",
        "reasons": fails,
        "command": command, "model": args.model, "knobs": knobs, "duration_s": args.duration,
        "load": args.load, "warmup_s": warmup, "wall_s": round(wall, 1), "workdir": str(wd),
        "steal_s": None if steal0 is None or steal1 is None else round(steal1 - steal0, 2),
        "latency": {"reported_s": reported_s, "values_s": lat_values},
        "rss_mb": {"at_warmup": rss_base, "max_after_warmup": max(rss_after, default=None),
                   "growth": None if rss_growth is None else round(rss_growth, 2),
                   "limit": args.rss_limit_mb},
        "gc_pause_max_ms": max(gc_all) if gc_all else "n/a",
        "xruns": {"jack_events": xr["events"], "jack_streamsep": jack_stream,
                  "jack_machine_stalls": xr["machine"].get(client, 0),
                  "jack_by_client": xr["clients"], "jack_only_client": xr["only"],
                  "jack_driver": xr["driver"], "server_wide_callbacks": summary["server_xruns"],
                  "xrun_positions_s": [None if p is None else round(p / rth.SR, 3)
                                       for p in summary["xrun_positions"]],
                  "streamsep_reported": own_xruns, "streamsep_flags": final.get("xruns")},
        "counters": counters,
        "harness": {k: summary[k] for k in ("realtime", "frames_played", "frames_recorded",
                                            "gap_cycles", "gap_frames", "late_reads", "late_cycles",
                                            "overrun_cycles", "ring_overflows",
                                            "max_callback_us", "start_frame", "rc")},
        "alignment": checks,
        "exact": exact,
        "streamsep_exit": stopped,
        "samples": samples,
    }
    if not args.keep:
        for f in (wd / "harness" / "record.f32",):
            f.unlink(missing_ok=True)
    return result


def main(argv: list[str] | None = None) -> int:
    argv, passthru = rth.split_passthrough(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Unknown options (or everything after --) go to "
                                        "`streamsep run`.")
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds (3600)")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("-p", "--prompt", default="speech")
    ap.add_argument("--low-latency", action="store_true", help=" ".join(LOW_LATENCY))
    ap.add_argument("--interval", type=float, default=10.0, help="sampling interval, s (10)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before RSS growth counts (max(60, 10%% of duration), <= half)")
    ap.add_argument("--rss-limit-mb", type=float, default=10.0)
    ap.add_argument("--residual", action="store_true",
                    help="also record the residual (--residual-out system) and check it")
    ap.add_argument("--load", type=int, default=0, help="busy-loop processes (0)")
    ap.add_argument("--play", default=str(ROOT / "model" / "demo.wav"))
    ap.add_argument("--repo", default=None, help="checkout whose .venv/bin/streamsep runs")
    ap.add_argument("--streamsep", default=None, help="command that runs streamsep instead")
    ap.add_argument("--allow-machine-xruns", action="store_true",
                    help="do not fail on xruns in cycles whose timer woke late (the machine "
                         "stalled every client; CI on shared virtual machines)")
    ap.add_argument("--server", default=None,
                    help="use this running JACK server (with --server-log) instead of a private "
                         "one, e.g. tools/jack_ci.sh's")
    ap.add_argument("--server-log", default=None, help="that server's log file")
    ap.add_argument("--json", default=None, help="result JSON (default WORKDIR/soak.json)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the recording")
    ap.add_argument("--keep-stretches", action="store_true",
                    help="list every stretch's offset and score in the JSON")
    ap.add_argument("-q", "--quiet", action="store_true")
    args, unknown = ap.parse_known_args(argv)
    knobs = (LOW_LATENCY if args.low_latency else []) + unknown + passthru
    if not rth.have_jackd():
        print("error: jackd is not installed (apt-get install jackd2)", file=sys.stderr)
        return 2
    try:
        result = run(args, knobs)
    except rth.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = Path(args.json) if args.json else Path(result["workdir"]) / "soak.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    a = result["alignment"]["target"]
    print(f"soak {result['verdict']}: {args.model} {' '.join(knobs) or '(default knobs)'}, "
          f"{args.duration:g} s; latency {result['latency']['values_s']}; lag "
          f"{a.get('lag')} (reported {result['latency']['reported_s']}); RSS growth "
          f"{result['rss_mb']['growth']} MB; gc max {result['gc_pause_max_ms']} ms; xruns JACK "
          f"{result['xruns']['jack_streamsep']} / callbacks "
          f"{result['xruns']['server_wide_callbacks']} / streamsep "
          f"{result['xruns']['streamsep_reported']}; CPU stolen by the host "
          f"{result['steal_s']} s; JSON {path}")
    for r in result["reasons"]:
        print(f"  - {r}")
    return 1 if result["reasons"] else 0


if __name__ == "__main__":
    sys.exit(main())
