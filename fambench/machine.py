"""What the machine's CPUs are doing: usable cores, CPU-time samples, contention.

A wall-clock time is only worth comparing when the run had the cores it asked for. The load
average lags by a minute and counts our own threads, so contention is decided from CPU time
instead: between two samples, the busy time of the cores this process may use, less this
process's own CPU time, is what *other* processes took. A run is contended when, over some
measured interval (or on average), others used more cores than its own threads left free, plus
a quarter core for background noise: two 2-thread runs on 2 cores are contended, two 1-thread
runs are not, and three 1-thread runs are (each gets 2/3 of a core: others take 1.33 > 1.25).
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass

import psutil

#: Cores others may use beyond those our threads leave free before a run counts as contended.
CONTENTION_TOLERANCE_CORES = 0.25
#: Intervals shorter than this are summed into the means but not judged on their own.
MIN_JUDGED_INTERVAL_S = 2.0
# Busy CPU time: psutil's fields minus idle and iowait (guest time is already in user).
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity set where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _usable_core_ids() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None


def load_average() -> float | None:
    """The 1-minute load average, None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


@dataclass(frozen=True)
class CpuSample:
    """CPU clocks at one moment: wall (monotonic), this process's CPU time (all its threads),
    and the busy time of the cores it may use (all processes)."""

    wall_s: float
    own_cpu_s: float
    busy_cpu_s: float


def sample_cpu() -> CpuSample:
    """The clocks now."""
    per_core = psutil.cpu_times(percpu=True)
    ids = _usable_core_ids()
    cores = [per_core[i] for i in ids if i < len(per_core)] if ids is not None else per_core
    busy = sum(getattr(c, f, 0.0) for c in cores for f in _BUSY_FIELDS)
    return CpuSample(time.monotonic(), time.process_time(), busy)


@dataclass(frozen=True)
class CpuInterval:
    """What happened between two samples: wall seconds, our CPU seconds, others' CPU seconds."""

    wall_s: float
    own_cpu_s: float
    others_cpu_s: float

    @classmethod
    def between(cls, start: CpuSample, end: CpuSample) -> CpuInterval:
        wall = max(0.0, end.wall_s - start.wall_s)
        own = max(0.0, end.own_cpu_s - start.own_cpu_s)
        others = max(0.0, (end.busy_cpu_s - start.busy_cpu_s) - own)
        return cls(wall, own, others)

    @property
    def others_cores(self) -> float:
        """Cores others kept busy on average (NaN for an empty interval)."""
        return self.others_cpu_s / self.wall_s if self.wall_s > 0 else math.nan


def is_contended(others_cores: float, threads: int, cores: int) -> bool:
    """Whether others took more cores than ``threads`` of ``cores`` left them (+ tolerance)."""
    free = max(0, cores - threads)
    return math.isfinite(others_cores) and others_cores > free + CONTENTION_TOLERANCE_CORES


@functools.cache
def cpu_has_bf16_dot_products() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512_BF16 or AMX): where it does not,
    bf16 matrix products are emulated and slower than fp32. Asked once per process (the
    training step asks every step)."""
    import torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
