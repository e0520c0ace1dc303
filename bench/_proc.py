"""Process memory and machine facts for the bench scripts (Linux /proc; no psutil).

* ``status_kib(field)``: a ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM`` = peak RSS).
* ``reset_peak()``: resets VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``), so the next
  ``status_kib("VmHWM")`` is the peak of the code run in between. Returns False where the kernel refuses.
* ``RssSampler``: a daemon thread that samples the RSS of this process and of its child processes (joblib/loky
  workers) every ``interval`` seconds, for peaks over time windows (per Dagster step).
* ``machine()``: CPU model, cores, RAM, Python and library versions.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

MIB = 1024.0


def status_kib(field: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rusage_peaks_mib() -> dict[str, float]:
    """ru_maxrss (KiB on Linux) of this process and of its waited-for children, in MiB."""
    return {"self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MIB,
            "children_maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / MIB}


def child_pids(pid: int | str = "self") -> list[int]:
    """Direct and indirect children (via /proc/<pid>/task/*/children)."""
    out: list[int] = []
    todo = [str(os.getpid()) if pid == "self" else str(pid)]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                if int(k) not in out:
                    out.append(int(k))
                    todo.append(k)
    return out


class RssSampler(threading.Thread):
    """Samples (epoch seconds, self RSS KiB, children RSS KiB) every ``interval`` seconds until ``stop()``."""

    def __init__(self, interval: float = 0.05, children_every: int = 10):
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.children_every = children_every
        self.samples: list[tuple[float, int, int]] = []
        self._stop_evt = threading.Event()

    def run(self) -> None:
        i, kids = 0, 0
        while not self._stop_evt.is_set():
            own = status_kib("VmRSS") or 0
            if i % self.children_every == 0:  # walking /proc for children costs more; do it less often
                kids = sum(status_kib("VmRSS", c) or 0 for c in child_pids())
            self.samples.append((time.time(), own, kids))
            i += 1
            self._stop_evt.wait(self.interval)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=2)

    def peak_mib(self, start: float | None = None, end: float | None = None) -> dict[str, float | None]:
        sel = [s for s in self.samples if (start is None or s[0] >= start) and (end is None or s[0] <= end)]
        if not sel:
            return {"self": None, "children": None, "total": None}
        return {"self": max(s[1] for s in sel) / MIB, "children": max(s[2] for s in sel) / MIB,
                "total": max(s[1] + s[2] for s in sel) / MIB}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - not installed
        return "-"


def machine() -> dict[str, object]:
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "versions": {m: _version(m) for m in ("polars", "dagster", "duckdb", "numpy", "pandas", "scikit-learn",
                                              "lightgbm")},
        "polars_max_threads": os.environ.get("POLARS_MAX_THREADS") or "default",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "default",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_busy_share(seconds: float = 2.0) -> float | None:
    """Share of all cores' time spent busy (user+nice+system+irq+steal) over ``seconds``, from /proc/stat:
    how much of the machine other work takes while nothing of ours runs."""
    def read():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v[:8]), idle

    try:
        t0, i0 = read()
        time.sleep(seconds)
        t1, i1 = read()
    except OSError:
        return None
    return None if t1 == t0 else 1.0 - (i1 - i0) / (t1 - t0)


_OMP_PROBE = """
import time, numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
rng = np.random.default_rng(0)
X, y = rng.normal(size=(2000, 60)), rng.integers(0, 3, 2000)
HistGradientBoostingClassifier(max_iter=2).fit(X[:200], y[:200])  # warm up imports and the thread pool
t = time.perf_counter()
HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=15, random_state=0).fit(X, y)
print(time.perf_counter() - t)
"""


def omp_probe(timeout: float = 120.0) -> dict[str, float | None]:
    """Seconds of one small HistGradientBoosting fit (OpenMP) with the default thread count and with
    OMP_NUM_THREADS=1, each in a fresh interpreter. On a machine whose cores are taken by other work, OpenMP
    threads spin-wait at barriers and the default can be many times slower than one thread."""
    import subprocess

    out: dict[str, float | None] = {}
    for name, extra in (("default_threads_s", {}), ("one_thread_s", {"OMP_NUM_THREADS": "1"})):
        try:
            r = subprocess.run([sys.executable, "-c", _OMP_PROBE], env={**os.environ, **extra},
                               capture_output=True, text=True, timeout=timeout)
            out[name] = float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            out[name] = None
    return out
