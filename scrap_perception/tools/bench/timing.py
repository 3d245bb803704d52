"""Timers for the benchmark: wall-clock samples with device synchronisation, time spent inside the
models during a pipeline call (to separate model compute from our overhead), and peak memory.

On CUDA every timer synchronises the device before reading the clock, so queued kernels are counted
where they were launched; on the CPU synchronisation is a no-op.
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch


class Clock:
    """perf_counter with the device synchronised before each reading."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()


@dataclass
class Samples:
    """Seconds of each timed repeat (warm-up runs excluded), what each repeat reported (``extras``) and,
    when memory was watched, the highest peak of any repeat (``peak``)."""

    seconds: list[float] = field(default_factory=list)
    extras: list[Any] = field(default_factory=list)
    peak: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "samples_s": list(self.seconds)}


def measure(fn: Callable[[], Any], clock: Clock, repeats: int, warmup: int = 0, min_repeats: Optional[int] = None,
            budget_s: float = float("inf")) -> Samples:
    """Calls ``fn`` ``warmup`` times untimed, then times it ``repeats`` times, or fewer when one more call
    would take the timed calls past ``budget_s`` seconds: not fewer than ``min_repeats`` unless the first
    call alone took longer than the budget (then once). What ``fn`` returns is kept in ``extras``."""
    return measure_interleaved({"fn": fn}, clock, repeats, warmup, min_repeats, budget_s)["fn"]


def measure_interleaved(fns: Mapping[str, Callable[[], Any]], clock: Clock, repeats: int, warmup: int = 0,
                        min_repeats: Optional[int] = None, budget_s: float = float("inf"),
                        memory: Optional["PeakMemory"] = None) -> dict[str, Samples]:
    """``measure`` for several callables at once, in rounds: each round calls every one once, in the
    given order and reversed the next round, so slow drifts of a shared machine (load, clock speed) fall
    on all of them alike. The budget and repeat bounds apply to rounds (``budget_s`` per callable).
    memory: read around every timed call, the highest peak kept per callable."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out = {name: Samples() for name in names}
    least = repeats if min_repeats is None else min(min_repeats, repeats)
    rounds: list[float] = []
    while len(rounds) < repeats:
        if rounds and sum(rounds) + statistics.median(rounds) > budget_s * len(names):
            if len(rounds) >= least or rounds[0] > budget_s * len(names):
                break
        for name in names if len(rounds) % 2 == 0 else names[::-1]:
            if memory is not None:
                memory.reset()
            t0 = clock.now()
            extra = fns[name]()
            out[name].seconds.append(clock.now() - t0)
            out[name].extras.append(extra)
            if memory is not None:
                for k, v in memory.read().items():
                    out[name].peak[k] = max(out[name].peak.get(k, v), v)
        rounds.append(sum(out[name].seconds[-1] for name in names))
    return out


class ModelTime:
    """Accumulates the wall time spent in chosen model methods, by key, while installed.

    ``wrap(obj, "forward", "sam.image_encoder")`` replaces the method on that instance (an instance
    attribute shadows the class's method; nn.Module.__call__ looks ``forward`` up on the instance).
    Nested wrapped calls count once, in the outermost key. ``restore()`` removes every wrapper.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0
        self._wrapped: list[tuple[Any, str]] = []

    def wrap(self, obj: Any, method: str, key: str) -> None:
        if method in vars(obj):
            raise RuntimeError(f"{key}: {method} is already wrapped")
        original = getattr(obj, method)

        def timed(*args, **kwargs):
            if self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            t0 = self.clock.now()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[key] += self.clock.now() - t0
                self.calls[key] += 1
                self._depth -= 1

        object.__setattr__(obj, method, timed)
        self._wrapped.append((obj, method))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def restore(self) -> None:
        for obj, method in self._wrapped:
            object.__delattr__(obj, method)
        self._wrapped.clear()

    def __enter__(self) -> "ModelTime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


class PeakMemory:
    """Peak resident memory of this process (Linux VmHWM, reset through /proc/self/clear_refs) and, on
    CUDA, torch's peak allocated device memory. MiB; NaN where the system does not tell."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:  # not Linux, or not permitted: the peak then covers the whole process life
            pass
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, float]:
        out = {"peak_rss_mb": status_mb("VmHWM"), "rss_mb": status_mb("VmRSS")}
        if self.device.type == "cuda":
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out


def status_mb(key: str, pid: int | str = "self") -> float:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in MiB; NaN when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
