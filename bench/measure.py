"""Whole-process measurements: wall time, CPU time and peak RSS of a command, alternated with an anchor.

Each run is a fresh process started with ``posix_spawn`` (standard streams to /dev/null) and reaped
with ``wait4``, whose resource usage gives that child's user and system seconds and its peak RSS.
Pairs run in turn (A B A B ...) after one warm-up each, so a drift of the machine's speed hits both
sides alike; the ratio is taken pair by pair and its median reported. The measuring process imports
nothing heavy, so the peak it can leak into a child (a spawned child starts from its parent's
memory) stays near the floor printed in the results.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

__all__ = ["Run", "Series", "run_once", "compare", "floor_mib"]


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    peak_mib: float
    code: int


@dataclass
class Series:
    argv: list[str]
    runs: list[Run] = field(default_factory=list)

    def stat(self, attr: str) -> tuple[float, float, float]:
        values = [getattr(r, attr) for r in self.runs]
        return min(values), statistics.median(values), max(values)

    @property
    def failed(self) -> list[int]:
        return [r.code for r in self.runs if r.code]


def run_once(argv: list[str], env: dict[str, str] | None = None) -> Run:
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
        start = time.perf_counter()
        pid = os.posix_spawnp(argv[0], argv, env if env is not None else os.environ, file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - start
    finally:
        os.close(devnull)
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status))


def compare(a: list[str], b: list[str] | None, runs: int, *, warmup: int = 1, env: dict[str, str] | None = None,
            between: object = None) -> tuple[Series, Series | None, list[float]]:
    """Run A (and B) ``runs`` times in turn after ``warmup`` runs; returns both series and A/B wall ratios.

    ``between`` (a callable) runs after every command, e.g. to delete an output so each run writes anew.
    """
    sa, sb, ratios = Series(a), Series(b) if b else None, []
    for i in range(warmup + runs):
        ra = run_once(a, env)
        if callable(between):
            between()
        rb = None
        if b:
            rb = run_once(b, env)
            if callable(between):
                between()
        if i >= warmup:
            sa.runs.append(ra)
            if rb is not None and sb is not None:
                sb.runs.append(rb)
                ratios.append(ra.wall / rb.wall if rb.wall else float("inf"))
    return sa, sb, ratios


def floor_mib() -> float:
    """Peak RSS of ``true``: the least any child can show when started from this process."""
    return run_once(["true"]).peak_mib
