"""Benchmark of `streamsep batch`: a long file and an archive, on the process pool and on Ray.

Inputs are model/demo.wav (12 s of speech over music and hum, 48 kHz 16-bit) tiled, each file
rotated by a different offset: a 10-minute file and an archive of 12 x 5 minutes (1 hour). Each
run is a fresh `streamsep batch` process with the embedded model; the figures are times real
time (audio seconds / wall seconds, start-up and model loading included) and the peak resident
memory of everything the run used, sampled every 0.25 s: the batch process and its workers, and
for Ray also the cluster's processes (a private head on 127.0.0.1 started here).

    python tools/bench_batch.py [--long-minutes 10] [--files 12] [--file-minutes 5]
        [--configs pool1,pool2,ray] [--json out/bench_batch.json]

Prints a table and writes the JSON; the machine's load average before and after each run is in
both, since other work on the machine changes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "model" / "demo.wav"
PAGE = os.sysconf("SC_PAGE_SIZE")


def tiled(path: Path, seconds: float, offset_s: float) -> None:
    """``seconds`` of the demo, rotated by ``offset_s``, written block by block (16-bit)."""
    x, sr = sf.read(DEMO, dtype="float32")
    x = np.roll(x, -int(offset_s * sr))
    n = int(seconds * sr)
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:
        done = 0
        while done < n:
            k = min(len(x), n - done)
            f.write(x[:k])
            done += k


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, rss bytes, command line) of every process readable."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        out[int(d)] = (int(fields[1]), int(fields[21]) * PAGE, cmd)
    return out


def _tree(root: int, procs: dict[int, tuple[int, int, str]]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        p = todo.pop()
        if p in procs and p not in seen:
            seen.add(p)
            todo += kids.get(p, [])
    return seen


class RssSampler:
    """Peak summed RSS of a process tree (and, with ``ray``, of Ray's processes)."""

    def __init__(self, pid: int, ray: bool):
        self.pid, self.ray = pid, ray
        self.peak = self.peak_workers = self.peak_ray_system = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            procs = _procs()
            mine = _tree(self.pid, procs)
            workers = {p for p in mine if p != self.pid}
            system: set[int] = set()
            if self.ray:
                actors = {p for p, (_, _, c) in procs.items() if c.startswith("ray::")}
                workers |= actors
                system = {p for p, (_, _, c) in procs.items()
                          if ("/ray/" in c or "raylet" in c or "gcs_server" in c)
                          and p not in actors and p not in mine}
            total = sum(procs[p][1] for p in mine | workers | system if p in procs)
            self.peak = max(self.peak, total)
            self.peak_workers = max(self.peak_workers,
                                    sum(procs[p][1] for p in workers if p in procs))
            self.peak_ray_system = max(self.peak_ray_system,
                                       sum(procs[p][1] for p in system if p in procs))
            self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def run_batch(in_dir: Path, out_dir: Path, extra: list[str], ray: bool) -> dict[str, Any]:
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "streamsep", "-q", "batch", str(in_dir), str(out_dir), "-p",
           "speech", *extra]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    sampler = RssSampler(p.pid, ray)
    err = p.communicate()[1]
    wall = time.perf_counter() - t0
    sampler.stop()
    if p.returncode != 0:
        raise SystemExit(f"streamsep batch failed ({p.returncode}): {err.strip()}")
    audio = sum(sf.info(f).duration for f in in_dir.rglob("*.wav"))
    return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 2), "audio_s": round(audio, 1),
            "x_real_time": round(audio / wall, 2),
            "peak_rss_mb": round(sampler.peak / 1e6, 1),
            "peak_rss_workers_mb": round(sampler.peak_workers / 1e6, 1),
            "peak_rss_ray_system_mb": round(sampler.peak_ray_system / 1e6, 1) if ray else None,
            "load_before": [round(v, 2) for v in load0],
            "load_after": [round(v, 2) for v in os.getloadavg()]}


class RayHead:
    """A private head on 127.0.0.1 in its own process group (`ray stop` would stop every Ray
    on the machine)."""

    def __init__(self, cpus: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        ray = os.path.join(os.path.dirname(sys.executable), "ray")
        self.p = subprocess.Popen(
            [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port",
             str(self.port), "--num-cpus", str(cpus), "--include-dashboard", "false",
             "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the Ray head did not start")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        os.killpg(self.p.pid, signal.SIGTERM)  # --block: the head stops what it started
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long-minutes", type=float, default=10.0)
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--file-minutes", type=float, default=5.0)
    ap.add_argument("--configs", default="pool1,pool2,ray",
                    help="comma-separated: pool1, pool2 (local workers), ray (2 actors)")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--segment", type=float, default=None,
                    help="streamsep batch --segment (default: its own, 300 s)")
    ap.add_argument("--work", type=Path, default=None, help="folder for inputs and outputs")
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench_batch.json")
    a = ap.parse_args(argv)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in ("pool1", "pool2", "ray")]
    if bad:
        ap.error(f"unknown config {bad[0]}: use pool1, pool2, ray")
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_batch_"))
    long_dir, arch_dir = work / "long", work / "archive"
    for d in (long_dir, arch_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    tiled(long_dir / "lecture.wav", a.long_minutes * 60, 0.0)
    for i in range(a.files):
        tiled(arch_dir / f"episode{i + 1:02d}.wav", a.file_minutes * 60, 1.3 * i)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "uname": os.uname().release},
                               "model": a.model, "runs": []}
    head = RayHead(2) if "ray" in configs else None
    try:
        for name, folder in (("long file", long_dir), ("archive", arch_dir)):
            for c in configs:
                extra = ["--model", a.model]
                if a.segment is not None:
                    extra += ["--segment", str(a.segment)]
                extra += ["--ray", head.address] if c == "ray" and head else \
                    ["--workers", c[-1]]
                print(f"{name}, {c} ...", file=sys.stderr, flush=True)
                r = run_batch(folder, work / f"out_{c}", extra, ray=c == "ray")
                r.update(input=name, config=c)
                results["runs"].append(r)
                print(f"  {r['x_real_time']}x real time, peak RSS {r['peak_rss_mb']} MB "
                      f"(load {r['load_before'][0]} -> {r['load_after'][0]})", file=sys.stderr)
                _write(a.json, results)  # after every run: an interrupted bench keeps its runs
    finally:
        if head is not None:
            head.stop()
    lines = [f"{'input':<10} {'config':<6} {'audio':>8} {'wall':>8} {'x RT':>6} "
             f"{'peak RSS':>9} {'workers':>8} {'ray sys':>8} {'load':>10}"]
    for r in results["runs"]:
        ray_sys = f"{r['peak_rss_ray_system_mb']:.0f}" if r["peak_rss_ray_system_mb"] else "-"
        lines.append(f"{r['input']:<10} {r['config']:<6} {r['audio_s']:>7.0f}s "
                     f"{r['wall_s']:>7.1f}s {r['x_real_time']:>6.1f} "
                     f"{r['peak_rss_mb']:>7.0f}MB {r['peak_rss_workers_mb']:>6.0f}MB "
                     f"{ray_sys:>6}MB {r['load_before'][0]:>4.1f}-{r['load_after'][0]:<4.1f}")
    print("\n".join(lines))
    _write(a.json, results)
    print(f"wrote {a.json}", file=sys.stderr)
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
