"""Processes under test: start them on loopback ports, wait until they serve, measure them, stop them.

Memory and CPU come from ``/proc`` (summed over the process tree), so nothing here needs psutil.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Proc",
    "RssSampler",
    "free_port",
    "http_call",
    "rss_mb",
    "start",
    "tree_cpu_s",
    "tree_pids",
]

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    started_at: float  # perf_counter just before the spawn
    log_path: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the process group we created, then SIGKILL it if it lingers."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=8)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


def start(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
    log_dir: Path,
    port: int = 0,
) -> Proc:
    """Spawn ``argv`` in its own process group (so stop() ends its children too), logs to a file.

    ``env`` is laid over this process's environment; a value of None removes that variable."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    log = log_path.open("wb")
    started = time.perf_counter()
    popen = subprocess.Popen(
        list(argv),
        env=full_env,
        cwd=str(cwd or ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return Proc(name, popen, started, log_path, port, {k: v for k, v in (env or {}).items() if v is not None})


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """A blocking one-shot HTTP/1.1 request to 127.0.0.1 (Connection: close). Raises OSError."""
    lines = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{port}", "connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, rest = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        raise ConnectionError("not an HTTP response")
    return int(head.split(b" ", 2)[1]), rest


def wait_until_serving(
    proc: Proc,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
    poll_s: float = 0.005,
) -> float:
    """Poll until the request returns 200; the seconds since spawn. Raises if it dies or times out."""
    deadline = time.perf_counter() + timeout_s
    last = "no answer"
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            status, content = http_call(proc.port, method, path, body, headers, timeout=max(1.0, timeout_s))
        except OSError as exc:
            last = type(exc).__name__
            time.sleep(poll_s)
            continue
        if status == 200:
            return time.perf_counter() - proc.started_at
        last = f"HTTP {status}: {content[:200]!r}"
        time.sleep(max(poll_s, 0.05))
    raise TimeoutError(
        f"{proc.name} did not serve {path} within {timeout_s:.0f}s ({last}):\n{proc.log_tail()}"
    )


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(root: int, pids: Sequence[int] | None = None) -> float:
    """Resident set size of the process tree, in MB (MiB)."""
    return sum(_status_kb(p, "VmRSS:") for p in (pids or tree_pids(root))) / 1024


def hwm_mb(root: int) -> float:
    """Peak RSS (VmHWM) summed over the tree, in MB."""
    return sum(_status_kb(p, "VmHWM:") for p in tree_pids(root)) / 1024


def tree_cpu_s(root: int, pids: Sequence[int] | None = None) -> float:
    """User + system CPU seconds of the tree (clock-tick resolution)."""
    total = 0
    for pid in pids or tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


class RssSampler:
    """Samples the tree's RSS every ``interval_s`` in a thread; ``peak`` is the largest seen."""

    def __init__(self, root: int, interval_s: float = 0.05) -> None:
        self.root = root
        self.interval_s = interval_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._pids = tree_pids(root)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.root, self._pids))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.root, self._pids))


def machine_busy_s() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, of which steal) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK, steal / _TICK


def own_cpu_s(roots: Sequence[int]) -> float:
    """CPU seconds of this process, its waited-for children, and the trees under ``roots``."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total + sum(tree_cpu_s(root) for root in roots)
