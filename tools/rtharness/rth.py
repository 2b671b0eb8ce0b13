"""Python side of the C JACK harness (``rtharness``): build it, run a private JACK dummy server,
wire `streamsep run` into the harness, rebuild the played signal and check recordings.

Used by tools/xrun_bench.py, tools/soak.py and tests/test_soak.py. Import it with
``sys.path.insert(0, "tools/rtharness")``; it needs numpy and nothing from streamsep.

Timeline conventions (see rtharness.c): signal sample p is ``src[p % L] + marker[p % P]`` (the
marker only for ``p % P < M``), recording frame p was captured in the JACK cycle whose first
frame is the start frame + p, and in that cycle the harness played signal sample p, or p + d
where the summary's ``content_offsets`` say so (a callback that read the next cycle's frame
played a period ahead). ``PlayedSignal.get`` gives what was played, offsets applied. A device
under test with a constant delay D puts what was played at frame p at recording frame p + D; a
lost or repeated sample changes D from then on.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "rtharness.c"
BINARY = HERE / "rtharness"
SR = 48000
PERIOD = 256


class HarnessError(RuntimeError):
    """The harness, jackd or streamsep could not be set up or did not behave."""


# -- build ----------------------------------------------------------------------------------------
def build(force: bool = False) -> Path:
    """Compile rtharness (``make -C tools/rtharness``) unless the binary is newer than its
    source."""
    if not force and BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    if not Path("/usr/include/jack/jack.h").exists() and not os.environ.get("CPATH"):
        raise HarnessError("JACK headers are missing: apt-get install libjack-jackd2-dev")
    cc = os.environ.get("CC", "cc")
    if shutil.which("make"):
        cmd = ["make", "-s", "-C", str(HERE)] + (["-B"] if force else [])
    else:
        cmd = [cc, "-O2", "-g", "-Wall", "-std=c11", "-pthread", "-o", str(BINARY), str(SOURCE),
               "-ljack", "-lm", "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not BINARY.exists():
        raise HarnessError(f"building rtharness failed ({' '.join(cmd)}):\n{r.stdout}{r.stderr}")
    return BINARY


def have_jackd() -> bool:
    return all(shutil.which(t) for t in ("jackd", "jack_lsp"))


def split_passthrough(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(the tool's own arguments, those after ``--`` that go to `streamsep run`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


# -- JACK server ----------------------------------------------------------------------------------
_XRUN_CLIENT = re.compile(r"JackEngine::XRun: client = (.+?) was not finished")


class JackServer:
    """A private ``jackd -d dummy`` (like tools/jack_ci.sh), stopped by PID.

    ``env`` is the environment for every client of this server (JACK_DEFAULT_SERVER set)."""

    def __init__(self, name: str | None = None, rate: int = SR, period: int = PERIOD,
                 log_dir: str | os.PathLike | None = None):
        self.name = name or f"rth_{os.getpid()}_{int(time.time() * 1000) % 100000}"
        self.rate, self.period = rate, period
        self.log = Path(log_dir or tempfile.gettempdir()) / f"jackd_{self.name}.log"
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_AUDIO_RESERVATION="1")
        self.proc: subprocess.Popen | None = None

    @classmethod
    def attach(cls, name: str, log: str | os.PathLike) -> JackServer:
        """A server that is already running (e.g. tools/jack_ci.sh's), read through its log;
        it is left running."""
        server = cls(name=name)
        server.log = Path(log)
        if not server.running():
            raise HarnessError(f"no JACK server {name!r} is running")
        return server

    def start(self) -> JackServer:
        if not have_jackd():
            raise HarnessError("jackd is not installed (apt-get install jackd2)")
        rt = [] if os.geteuid() == 0 else ["--no-realtime"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(["jackd", *rt, "-n", self.name, "-d", "dummy", "-r",
                                      str(self.rate), "-p", str(self.period)],
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, env=self.env)
        for _ in range(200):
            if self.running():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise HarnessError(f"jackd did not come up; log:\n{self.log.read_text()}")

    def running(self) -> bool:
        return subprocess.run(["jack_lsp"], capture_output=True, env=self.env).returncode == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_logf", None):
            self._logf.close()
            self._logf = None

    def __enter__(self) -> JackServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def log_lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def ports(self) -> list[str]:
        r = subprocess.run(["jack_lsp"], capture_output=True, text=True, env=self.env)
        return r.stdout.split("\n") if r.returncode == 0 else []

    def connections(self) -> dict[str, list[str]]:
        r = subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, env=self.env)
        out: dict[str, list[str]] = {}
        cur = None
        for line in r.stdout.splitlines():
            if not line.strip():
                continue
            if line.startswith((" ", "\t")):
                if cur is not None:
                    out[cur].append(line.strip())
            else:
                cur = line.strip()
                out[cur] = []
        return out


def xrun_counts(lines: list[str]) -> dict[str, Any]:
    """xrun events in a jackd log. One event is the run of lines up to jackd's "Process error"
    (the graph was not finished in time, so the server skipped a cycle for every client); its
    late clients are the lines "client = X was not finished". ``clients`` counts the events each
    client was late in, ``only`` the events in which it was the only late client (a client
    downstream of a late one is late too), ``driver`` the driver's own timer xruns."""
    clients: collections.Counter[str] = collections.Counter()
    only: collections.Counter[str] = collections.Counter()
    machine: collections.Counter[str] = collections.Counter()
    driver = events = 0
    late: set[str] = set()
    timer_late = False

    def close() -> None:
        nonlocal events, timer_late
        if late:
            events += 1
            clients.update(late)
            if len(late) == 1:
                only.update(late)
            if timer_late:  # the whole graph woke late: the machine stalled, not a client
                machine.update(late)
        late.clear()
        timer_late = False

    for line in lines:
        m = _XRUN_CLIENT.search(line)
        if m:
            late.add(m.group(1))
        elif "Driver::Process XRun" in line:
            driver += 1
            timer_late = True
        elif "Process error" in line:
            close()
    close()
    return {"events": events, "clients": dict(clients), "only": dict(only), "driver": driver,
            "machine": dict(machine)}


# -- harness process ------------------------------------------------------------------------------
@dataclass
class HarnessRun:
    """One rtharness process; ``files`` holds its recording, dumps and summary paths."""

    proc: subprocess.Popen
    workdir: Path
    inputs: int
    name: str
    summary: dict[str, Any] | None = None
    stderr: str = ""

    @property
    def record_path(self) -> Path:
        return self.workdir / "record.f32"

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            _, err = self.proc.communicate(timeout=15)
        self.stderr = err or ""
        path = self.workdir / "summary.json"
        if not path.exists() or not path.read_text().strip():
            raise HarnessError(f"rtharness wrote no summary (rc {self.proc.returncode}): "
                               f"{self.stderr.strip()}")
        self.summary = json.loads(path.read_text())
        self.summary["rc"] = self.proc.returncode
        return self.summary

    def recording(self, mmap: bool = True) -> np.ndarray:
        """(frames, inputs) float32; a read-only memory map by default."""
        if mmap:
            x = np.memmap(self.record_path, dtype=np.float32, mode="r")
        else:
            x = np.fromfile(self.record_path, dtype=np.float32)
        return x.reshape(-1, self.inputs)

    def signal(self) -> PlayedSignal:
        assert self.summary is not None
        return PlayedSignal.from_dumps(self.workdir, self.summary)


def start_harness(workdir: str | os.PathLike, *, env: dict[str, str] | None = None,
                  name: str = "rtharness", duration: float = 10.0, play: str | None = None,
                  gen: str | None = None, inputs: int = 1, to: list[str] = (),
                  frm: list[str] = (), frm2: list[str] = (), exclusive: bool = True,
                  marker_period: float = 1.0, marker_len: int = 1024, marker_amp: float = 0.25,
                  once: bool = False, gain: float = 1.0, played: bool = False,
                  wait_ports: float = 20.0, extra: list[str] = ()) -> HarnessRun:
    """Start rtharness (built if needed) writing into ``workdir``; returns at once."""
    binary = build()
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), "-n", name, "-d", f"{duration:.6f}", "-i", str(inputs),
           "-r", str(wd / "record.f32"), "-j", str(wd / "summary.json"),
           "--dump-source", str(wd / "source.f32"), "--dump-marker", str(wd / "marker.f32"),
           "--marker-period", repr(marker_period), "--marker-len", str(marker_len),
           "--marker-amp", repr(marker_amp), "--gain", repr(gain),
           "--wait-ports", repr(wait_ports)]
    if play:
        cmd += ["-p", str(play)]
    elif gen:
        cmd += ["-g", gen]
    if once:
        cmd.append("--once")
    if played:
        cmd += ["--played", str(wd / "played.f32")]
    if exclusive:
        cmd.append("--exclusive")
    for p in to:
        cmd += ["--to", p]
    for p in frm:
        cmd += ["--from", p]
    for p in frm2:
        cmd += ["--from2", p]
    cmd += list(extra)
    (wd / "summary.json").unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    return HarnessRun(proc=proc, workdir=wd, inputs=inputs, name=name)


# -- the played signal ----------------------------------------------------------------------------
@dataclass
class PlayedSignal:
    """Rebuilds, bit for bit, what rtharness played (from its --dump-source/--dump-marker)."""

    src: np.ndarray
    marker: np.ndarray
    period: int
    loop: bool = True
    #: (k, 2) rows [frame, d]: from that frame on, signal sample frame + d was played
    offsets: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    @classmethod
    def from_dumps(cls, workdir: Path, summary: dict[str, Any]) -> PlayedSignal:
        src = np.fromfile(workdir / "source.f32", dtype=np.float32)
        marker = np.fromfile(workdir / "marker.f32", dtype=np.float32)
        offsets = np.array(summary.get("content_offsets", []), np.int64).reshape(-1, 2)
        return cls(src, marker, int(summary["marker"]["period"]), bool(summary["source"]["loop"]),
                   offsets)

    def get(self, start: int, n: int) -> np.ndarray:
        """What was played at frames [start, start + n); zeros before 0."""
        p = np.arange(start, start + n, dtype=np.int64)
        if len(self.offsets):
            k = np.searchsorted(self.offsets[:, 0], p, side="right") - 1
            p = p + np.where(k >= 0, self.offsets[np.maximum(k, 0), 1], 0)
        out = np.zeros(n, np.float32)
        ok = p >= 0
        if len(self.src):
            if self.loop:
                out[ok] = self.src[p[ok] % len(self.src)]
            else:
                inside = ok & (p < len(self.src))
                out[inside] = self.src[p[inside]]
        if self.period and len(self.marker):
            m = p % self.period
            on = ok & (m < len(self.marker))
            out[on] = out[on] + self.marker[m[on]]  # float32 + float32, as in C
        return out


# -- checks ---------------------------------------------------------------------------------------
def _segment(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """x[start:start+n] with zeros outside x."""
    out = np.zeros(n, np.float32)
    a, b = max(start, 0), min(start + n, len(x))
    if b > a:
        out[a - start : b - start] = x[a:b]
    return out


def locate(rec: np.ndarray, ref: np.ndarray, expected: int, search: int) -> tuple[int, float]:
    """Where ``ref`` sits in ``rec`` near ``expected``: (offset from expected, normalized
    correlation at the peak, -1..1)."""
    n = len(ref)
    seg = _segment(rec, expected - search, 2 * search + n).astype(np.float64)
    nfft = 1 << int(np.ceil(np.log2(len(seg) + n)))
    c = np.fft.irfft(np.fft.rfft(seg, nfft) * np.conj(np.fft.rfft(ref.astype(np.float64), nfft)),
                     nfft)[: 2 * search + 1]
    e = np.concatenate([[0.0], np.cumsum(seg * seg)])
    energy = e[n : n + 2 * search + 1] - e[: 2 * search + 1]
    score = c / (np.sqrt(np.maximum(energy, 1e-20)) * (np.linalg.norm(ref) + 1e-20))
    score[energy < 1e-12 * n] = 0.0
    i = int(np.argmax(score))
    return i - search, float(score[i])


def align(rec: np.ndarray, sig: PlayedSignal, lag_guess: int, *, chunk: int | None = None,
          first_search: int | None = None, search: int = 4800, threshold: float = 0.3,
          start_k: int = 0, lag: int | None = None) -> dict[str, Any]:
    """Sample-exact alignment, once per marker period: the played stretch that starts with
    marker k (``chunk`` samples, default half a period) is located in the recording around
    k*P + lag. The lag is ``lag_guess`` if one of the first stretches (searched
    +-``first_search`` around it) sits exactly there, else the one they agree on, unless given.
    Returns the lag, every stretch's offset from it and score, and the misaligned ones (a
    confident offset != 0: samples were lost or repeated)."""
    period = sig.period or SR
    chunk = chunk or period // 2
    n_rec = len(rec)
    ks = range(start_k, max(start_k, (n_rec - chunk - 1 - (lag or lag_guess)) // period + 1))
    if lag is None:
        first_search = first_search or period // 2
        found = []
        for k in ks[:12]:
            off, sc = locate(rec, sig.get(k * period, chunk), k * period + lag_guess,
                             first_search)
            if sc >= threshold:
                found.append(lag_guess + off)
        if not found:
            return {"lag": None, "chunks": [], "misaligned": [], "missing": len(ks),
                    "checked": 0, "offsets": {}}
        # The reported latency when a stretch sits exactly there: a cycle JACK skipped delays
        # the samples in flight by a period, so after each xrun the output is shifted for one
        # latency's time, and early stretches may all be shifted. Else the first value two
        # confident stretches agree on, else the most common one.
        if lag_guess in found:
            lag = lag_guess
        else:
            lag = next((a for a, b in zip(found, found[1:], strict=False) if a == b),
                       collections.Counter(found).most_common(1)[0][0])
    rows, misaligned, missing = [], [], 0
    for k in ks:
        pos = k * period
        if pos + lag + chunk > n_rec:
            break
        off, sc = locate(rec, sig.get(pos, chunk), pos + lag, search)
        ok = sc >= threshold
        rows.append((k, off if ok else None, round(sc, 4)))
        if not ok:
            missing += 1
        elif off != 0:
            misaligned.append({"k": k, "played_s": pos / SR, "offset": off, "score": round(sc, 4)})
    offsets = collections.Counter(r[1] for r in rows if r[1] is not None)
    return {"lag": lag, "chunks": rows, "misaligned": misaligned, "missing": missing,
            "checked": len(rows), "offsets": {str(k): v for k, v in sorted(offsets.items())}}


def compare_exact(rec: np.ndarray, sig: PlayedSignal, lag: int, *, block: int = PERIOD,
                  start: int = 0, step: int = 1 << 20, tol: float = 0.0) -> dict[str, Any]:
    """Recording vs the played signal delayed by ``lag``, from recording frame max(lag, start)
    on: differing samples, blocks of ``block`` frames (in recording time) with a difference,
    and the first few bad blocks' times."""
    n = len(rec)
    a = max(lag, start)
    wrong = 0
    bad_blocks: list[int] = []
    for s in range(a, n, step):
        e = min(n, s + step)
        got = np.asarray(rec[s:e], dtype=np.float32)
        ref = sig.get(s - lag, e - s)
        bad = np.abs(got - ref) > tol if tol else got != ref
        if bad.any():
            idx = np.nonzero(bad)[0] + s
            wrong += len(idx)
            bad_blocks.extend(np.unique(idx // block).tolist())
    bad_blocks = sorted(set(bad_blocks))
    return {"lag": lag, "compared": max(0, n - a), "wrong_samples": int(wrong),
            "wrong_blocks": len(bad_blocks),
            "first_bad_s": [round(b * block / SR, 4) for b in bad_blocks[:10]]}


# -- streamsep wiring -----------------------------------------------------------------------------
def streamsep_command(repo: str | os.PathLike | None = None,
                      streamsep: str | None = None) -> list[str]:
    """The command that runs streamsep: ``streamsep`` if given, else REPO/.venv/bin/streamsep
    (this checkout by default), else ``python -m streamsep`` with this interpreter."""
    if streamsep:
        return streamsep.split()
    root = Path(repo) if repo else HERE.parent.parent
    exe = root / ".venv" / "bin" / "streamsep"
    if exe.exists():
        return [str(exe)]
    if repo:
        raise HarnessError(f"{exe} does not exist (run tools/setup.sh in {repo})")
    return [sys.executable, "-m", "streamsep"]


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete JSON lines of a file being written (a torn last line is skipped)."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    with contextlib.suppress(json.JSONDecodeError):
                        out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


class JsonlTail:
    """Reads the records appended to a JSON lines file since the last call."""

    def __init__(self, path: str | os.PathLike):
        self.path, self.pos, self.buf = Path(path), 0, ""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self.pos)
                data = f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            return []
        self.buf += data
        *lines, self.buf = self.buf.split("\n")
        out = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def steal_seconds() -> float | None:
    """CPU time the hypervisor gave to other guests (``steal`` in /proc/stat), all CPUs.

    On a virtual machine a real-time thread can be held off its CPU by the host, which no
    scheduling priority inside the guest prevents; comparing xruns with the steal time during a
    run tells the machine's glitches from the program's."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def start_load(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy (a pure-Python busy loop).

    Each ends by itself once its parent is gone, so a benchmark killed before its cleanup
    does not leave a core busy under the next measurement."""
    loop = ("import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n"
            "    for _ in range(200000):\n        pass\n")
    return [subprocess.Popen([sys.executable, "-c", loop],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(n)]


def stop_procs(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclass
class Session:
    """`streamsep run` on a private JACK dummy server, its ports wired to a running harness."""

    jack: JackServer
    proc: subprocess.Popen
    client: str
    metrics: Path
    harness: HarnessRun
    workdir: Path
    log_mark: int = 0          # jackd log lines before the measurement started
    t_start: float = 0.0       # monotonic time the harness was started
    start_record: dict[str, Any] = field(default_factory=dict)
    load: list[subprocess.Popen] = field(default_factory=list)
    stderr_path: Path | None = None
    stopped: dict[str, Any] = field(default_factory=dict)

    def stop_streamsep(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM (SIGINT would stay ignored when this runs as a background job); returns rc,
        whether it had to be killed, and its stderr tail."""
        if self.stopped:
            return self.stopped
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.proc.kill()
                self.proc.wait()
        err = self.stderr_path.read_text(errors="replace") if self.stderr_path else ""
        self.stopped = {"rc": self.proc.returncode, "killed": killed,
                        "stderr_tail": "\n".join(err.strip().splitlines()[-8:])}
        return self.stopped


def _wait_client(jack: JackServer, before: set[str], proc: subprocess.Popen, timeout: float,
                 need_residual: bool, stderr_path: Path) -> tuple[str, dict[str, list[str]]]:
    """The new JACK client's name once its input port is connected (its stream started)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise HarnessError(f"streamsep exited (rc {proc.returncode}) before its stream "
                               f"started:\n{stderr_path.read_text(errors='replace')[-3000:]}")
        conns = jack.connections()
        new = [p for p in conns if p not in before and re.search(r":in_\d+$", p)]
        for p in new:
            client = p.rsplit(":", 1)[0]
            outs = [q for q in conns if q.startswith(client + ":out_")]
            if conns.get(f"{client}:in_0") and outs and (not need_residual or len(outs) > 2):
                return client, conns
        time.sleep(0.1)
    raise HarnessError(f"streamsep's JACK ports did not come up within {timeout:.0f} s:\n"
                       f"{stderr_path.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def live_session(workdir: str | os.PathLike, *, duration: float, model: str = "embedded",
                 prompt: str = "speech", knobs: list[str] = (), residual: bool = False,
                 play: str | None = None, gen: str | None = None, load: int = 0,
                 marker_period: float = 1.0, repo: str | None = None,
                 streamsep: str | None = None, jack: JackServer | None = None,
                 startup_timeout: float = 180.0) -> Iterator[Session]:
    """Start jackd (unless given), `streamsep run -p PROMPT -i system -o system --model MODEL
    KNOBS --metrics-json ...` (plus ``--residual-out system``), wait until its stream runs,
    start the CPU load, then the harness (rewiring streamsep's in_0 / out_0 [/ residual out]
    from system:* to the harness) for ``duration`` seconds. Yields the Session; on exit stops
    streamsep (SIGTERM), the load and jackd, in that order."""
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    own_jack = jack is None
    jack = jack or JackServer(log_dir=wd).start()
    proc = None
    loadp: list[subprocess.Popen] = []
    session = None
    try:
        metrics = wd / "metrics.jsonl"
        metrics.unlink(missing_ok=True)
        cmd = [*streamsep_command(repo, streamsep), "run", "-p", prompt, "-i", "system", "-o",
               "system", "--model", model, *knobs, "--metrics-json", str(metrics)]
        if residual:
            cmd += ["--residual-out", "system"]
        before = set(jack.connections())
        stderr_path = wd / "streamsep.stderr"
        with open(stderr_path, "w") as errf:
            # cwd: the workdir, so that `python -m` never imports a checkout from the cwd
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=errf, env=jack.env, cwd=wd)
        client, conns = _wait_client(jack, before, proc, startup_timeout, residual, stderr_path)
        n_play = sum(1 for p in conns if p.startswith("system:playback_")) or 2
        start_rec = next((r for r in read_jsonl(metrics) if r.get("type") == "start"), {})
        loadp = start_load(load)
        log_mark = len(jack.log_lines())
        h = start_harness(wd / "harness", env=jack.env, name="rtharness", duration=duration,
                          play=play, gen=gen, inputs=2 if residual else 1,
                          to=[f"{client}:in_0"], frm=[f"{client}:out_0"],
                          frm2=[f"{client}:out_{n_play}"] if residual else [],
                          marker_period=marker_period)
        session = Session(jack=jack, proc=proc, client=client, metrics=metrics, harness=h,
                          workdir=wd, log_mark=log_mark, t_start=time.monotonic(),
                          start_record=start_rec, load=loadp, stderr_path=stderr_path)
        session.command = cmd  # type: ignore[attr-defined]
        yield session
    finally:
        if session is not None and session.harness.proc.poll() is None:
            session.harness.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                session.harness.proc.wait(15)
        if session is not None:
            session.stop_streamsep()
        elif proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stop_procs(loadp)
        if own_jack:
            jack.stop()  # only after every PortAudio client has exited
