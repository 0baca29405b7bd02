"""CPU and memory of a process, sampled with psutil while a load runs, and the load
generator's own CPU (to tell when the generator, not the connector, is the limit).

CPU % is reported two ways: relative to **one core** (`psutil.Process.cpu_percent`:
100 = one core fully busy; a multi-threaded process can exceed 100) and relative to the
**whole machine** (the same divided by the number of logical CPUs: 100 = every core).

Memory is RSS as the kernel counts it, sampled throughout, and PSS once at the end.  RSS
counts a shared-memory page once per mapping, and a ring is mapped by its creator and
again by each thread's handle: the connector's ledger ring is mapped three times, and
counted three times in RSS.  PSS divides a shared page among its mappings, so it counts
each ring once (docs/performance-tuning.md#memory).
"""

from __future__ import annotations

import os
import statistics
import threading
import urllib.request

import psutil

CPU_COUNT = psutil.cpu_count() or 1


class ProcessSampler:
    """Samples a PID's CPU % and RSS every `interval` seconds on a daemon thread."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.process = psutil.Process(pid)
        self.interval = interval
        self.cpu: list[float] = []
        self.rss: list[int] = []
        self.machine_cpu: list[float] = []
        self.pss_mb_last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)

    def __enter__(self) -> "ProcessSampler":
        self.process.cpu_percent(None)  # the first call only sets the baseline
        psutil.cpu_percent(None)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()  # the tail since the last tick
        self.pss_mb_last = proportional_set_mb(self.process)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        try:
            self.cpu.append(self.process.cpu_percent(None))
            self.rss.append(self.process.memory_info().rss)
            self.machine_cpu.append(psutil.cpu_percent(None))
        except psutil.Error:
            pass  # the process is gone; the caller sees it exit

    def summary(self) -> dict:
        cpu = self.cpu or [0.0]
        rss = self.rss or [0]
        machine = self.machine_cpu or [0.0]
        return {
            "pid": self.process.pid,
            "samples": len(self.cpu),
            "cpu_percent_of_one_core": {"mean": round(statistics.fmean(cpu), 1), "max": round(max(cpu), 1)},
            "cpu_percent_of_machine": {"mean": round(statistics.fmean(cpu) / CPU_COUNT, 1),
                                       "max": round(max(cpu) / CPU_COUNT, 1)},
            "rss_mb": {"max": round(max(rss) / 2**20, 1), "last": round(rss[-1] / 2**20, 1)},
            "pss_mb_last": self.pss_mb_last,
            "machine_cpu_percent_all_processes": {"mean": round(statistics.fmean(machine), 1),
                                                  "max": round(max(machine), 1)},
            "logical_cpus": CPU_COUNT,
        }


def proportional_set_mb(process: psutil.Process) -> float | None:
    """PSS in MB, or None if the process is gone.  Read from smaps_rollup, which walks the
    process's page tables under its memory map lock (about 15 ms for the connector), so
    it is taken once at the end of a run rather than with every sample."""
    try:
        return round(process.memory_full_info().pss / 2**20, 1)
    except psutil.Error:
        return None


def process_cpu_seconds() -> float:
    """CPU seconds this process has used so far (all threads)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name of a process, from /proc (Linux).
    The connector names its OS threads (io-0, worker-N, ledger-batch-wr, telemetry)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                text = stat.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def thread_affinity(pid: int) -> dict[str, str]:
    """Each named thread's allowed CPUs (`Cpus_allowed_list`), to show pinning took effect."""
    result: dict[str, str] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as comm:
                name = comm.read().strip()
            with open(f"/proc/{pid}/task/{task}/status") as status:
                allowed = next(line.split(":", 1)[1].strip() for line in status if line.startswith("Cpus_allowed_list"))
        except (OSError, StopIteration):
            continue
        result[name] = allowed
    return result


def metrics_series(port: int, wanted=lambda name: True) -> dict[str, float]:
    """The connector's /metrics as {'name{labels}': value}, for the series `wanted` keeps."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    series = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        if wanted(name):
            series[name] = float(value)
    return series
