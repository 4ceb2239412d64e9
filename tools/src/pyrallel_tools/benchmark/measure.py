"""One contender process of ``pyrallel bench``: started in its own session, watched from /proc, ended by its pid.

Peak RSS is the largest sum of ``VmRSS`` over the contender and all its descendants (worker processes, a JVM's
one process) seen by a sampler every 50 ms, or the contender's own ``VmHWM`` if larger. CPU time covers the span
from the contender's first handled record to its last, so start-up, group join and shutdown are left out as they
are for throughput: a single-process contender measures it itself (``getrusage``, all threads); for a process
tree it is the sum of user and system time of every process in it (reaped children included through
``cutime``/``cstime``) sampled at the same moments as RSS and interpolated at both ends of the span.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pyrallel_tools.benchmark.results import ResultError, parse_result_line

log = logging.getLogger(__name__)

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (via /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    todo.extend(int(child) for child in fh.read().split())
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and of its children it has reaped; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After "pid (comm)": state is fields[0], so utime, stime, cutime, cstime are fields[11:15].
    return sum(int(v) for v in fields[11:15]) / _TICKS_PER_S


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def hwm_kb(pid: int) -> int:
    """The process's own peak RSS (VmHWM) in kB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples (time, CPU seconds, RSS) of a process tree until :meth:`stop`."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        super().__init__(name=f"sampler-{pid}", daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.rss_kb: list[int] = []
        """The tree's RSS at each sample (``times``): the backlog curve of ``--suite scale`` plots it."""
        self.peak_rss_kb = 0
        self.most_processes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def sample(self) -> None:
        tree = descendants(self.pid)
        self.most_processes = max(self.most_processes, len(tree))
        now = time.time()
        cpu = sum(cpu_seconds(p) for p in tree)
        if self.cpu and cpu < self.cpu[-1]:
            cpu = self.cpu[-1]  # a child exited before its parent reaped it: its time reappears later
        rss = sum(rss_kb(p) for p in tree)
        self.times.append(now)
        self.cpu.append(cpu)
        self.rss_kb.append(rss)
        self.peak_rss_kb = max(self.peak_rss_kb, rss, hwm_kb(self.pid))

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(5)

    def cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds the tree used between two wall-clock times, interpolated (clamped to the sampled span:
        the first sample is taken right at the start, the last after the exit); None without samples."""
        if len(self.times) < 2 or end <= start:
            return None
        start, end = max(start, self.times[0]), min(end, self.times[-1])
        return max(0.0, self._cpu_at(end) - self._cpu_at(start))

    def _cpu_at(self, t: float) -> float:
        i = min(max(bisect.bisect_left(self.times, t), 1), len(self.times) - 1)
        t0, t1 = self.times[i - 1], self.times[i]
        c0, c1 = self.cpu[i - 1], self.cpu[i]
        return c0 if t1 <= t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)


@dataclass(slots=True)
class Outcome:
    result: dict[str, Any]
    """The contender's JSON result; carries ``error`` when it failed or printed none."""
    peak_rss_mb: float | None
    cpu_s: float | None
    """CPU seconds of the process tree between its first and last handled record."""
    exit_code: int | None


class ContenderProcess:
    """A contender subprocess in a new session (so it and its workers can be killed by process group id)."""

    def __init__(self, cmd: Sequence[str], env: Mapping[str, str], stderr_path: Path, cwd: Path) -> None:
        self.cmd = list(cmd)
        stderr_path.parent.mkdir(parents=True, exist_ok=True)
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] = stderr_path.open("wb")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr, env=dict(env), cwd=cwd,
                                     start_new_session=True, text=True, bufsize=1)
        self.sampler = TreeSampler(self.proc.pid)
        self.sampler.start()
        self.stdout: deque[str] = deque(maxlen=200)
        self.result_line = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"stdout-{self.proc.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.proc.stdout
        if stream is None:
            return
        for line in stream:
            self.stdout.append(line)
            if line.startswith("PYRALLEL_BENCH_RESULT "):
                self.result_line.set()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the contender's whole process group (it leads its own session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def finish(self, grace_s: float) -> int | None:
        """Wait up to ``grace_s`` for the exit, then SIGKILL the group; stop sampling; the exit code."""
        try:
            code: int | None = self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            code = self.proc.wait(30)
        self.kill(signal.SIGKILL)  # workers it may have left behind
        self.sampler.stop()
        self._reader.join(5)
        self._stderr.close()
        return code

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def run_to_result(cmd: Sequence[str], env: Mapping[str, str], stderr_path: Path, cwd: Path, timeout_s: float,
                  exit_grace_s: float = 20.0) -> Outcome:
    """Run a contender until it prints its result (or ``timeout_s``), let it exit, measure it."""
    try:
        proc = ContenderProcess(cmd, env, stderr_path, cwd)
    except OSError as exc:
        return Outcome({"error": f"could not start {cmd[0]}: {exc}"}, None, None, None)
    return wait_outcome(proc, timeout_s, exit_grace_s)


def wait_outcome(proc: ContenderProcess, timeout_s: float, exit_grace_s: float = 20.0) -> Outcome:
    """Wait until a started contender prints its result (or ``timeout_s``), let it exit, measure it: for runners
    that start several contenders at once or signal them (``--suite scale``), and for :func:`run_to_result`."""
    cmd = proc.cmd
    deadline = time.monotonic() + timeout_s
    try:
        while not proc.result_line.wait(0.1):
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                break
    except BaseException:  # interrupted: never leave a contender running
        proc.kill()
        proc.finish(0.0)
        raise
    timed_out = not proc.result_line.is_set() and proc.proc.poll() is None
    code = proc.finish(0.0 if timed_out else exit_grace_s)
    try:
        result = parse_result_line("".join(proc.stdout))
    except ResultError as exc:
        reason = f"timed out after {timeout_s:.0f} s" if timed_out else f"exit code {code}"
        result = {"error": f"{exc} ({reason}); stderr: {proc.stderr_tail()}"}
    if result.get("error") and "stderr" not in str(result["error"]):
        log.warning("%s failed: %s; stderr: %s", " ".join(cmd[:3]), result["error"], proc.stderr_tail())
    cpu = None
    first, last, own = result.get("first_ts"), result.get("last_ts"), result.get("cpu_self_s")
    if isinstance(own, int | float) and proc.sampler.most_processes <= 1:
        cpu = float(own)  # measured in the process itself, to the microsecond: no child to add
    elif isinstance(first, int | float) and isinstance(last, int | float):
        cpu = proc.sampler.cpu_between(float(first), float(last))
    peak = proc.sampler.peak_rss_kb / 1024 if proc.sampler.peak_rss_kb else None
    return Outcome(result, None if peak is None else round(peak, 1), cpu, code)
