"""Remote sources for the campaign (issue 23): each ``remote`` case serves its (mutated) file from a loopback HTTP
server of ``tests/range_server.py``, honest or lying, and the CLI is given the URL.

The servers run as threads of the campaign process; each case's child is forked from it and only talks to them
over the socket. ``CKPTSURGEON_CONNECT_TIMEOUT`` and ``CKPTSURGEON_READ_TIMEOUT`` are set small (``TIMEOUT``) so
that a stalling server costs a case a second or two, well inside the harness's time limit.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable

from ..range_server import LyingServer, RangeServer

__all__ = ["RemoteRig", "MODES", "TIMEOUT"]

TIMEOUT = "1"  # seconds, for both CKPTSURGEON_CONNECT_TIMEOUT and CKPTSURGEON_READ_TIMEOUT

# mode -> weight. "honest": RangeServer serving the case's folder; "drop": the same, every ranged answer cut short
# after a few bytes; the rest are LyingServer's lies (see its docstring), by the first path segment.
MODES: dict[str, int] = {  # the order of the first cases (CI runs the first few): one of each kind of lie early
    "honest": 30, "drop": 6, "silent": 4, "oversized": 4, "gzip": 4, "away": 3, "good": 6, "getonly": 6, "moved": 4,
    "trickle": 4, "nohead": 3, "slowhead": 3, "endless": 4, "busy": 3, "loop": 3, "chain": 3,
}


def set_timeouts() -> None:
    """``TIMEOUT`` unless the caller's environment says otherwise (CI uses half a second)."""
    os.environ.setdefault("CKPTSURGEON_CONNECT_TIMEOUT", TIMEOUT)
    os.environ.setdefault("CKPTSURGEON_READ_TIMEOUT", TIMEOUT)


class RemoteRig:
    """An honest server and two lying ones (the second is the other origin ``/away`` redirects to); a context manager.

    ``serve(mode, folder, name)`` makes ``folder/name`` (the case's input) the answer and returns its URL."""

    def __init__(self) -> None:
        self.honest = RangeServer("/nonexistent")
        self.lying = LyingServer(b"")
        self.other = LyingServer(b"")

    def __enter__(self) -> RemoteRig:
        for server in (self.honest, self.lying, self.other):
            server.__enter__()
        self.lying.away_to = self.other.url("good/model.bin")
        return self

    def __exit__(self, *exc) -> None:
        for server in (self.honest, self.lying, self.other):
            server.__exit__(*exc)

    @staticmethod
    def pick(rng: random.Random) -> str:
        modes = list(MODES)
        return rng.choices(modes, weights=[MODES[m] for m in modes])[0]

    def serving(self, mode: str, name: str) -> Callable[[Path], str]:
        """``serve`` for one case, as ``harness.run_case`` calls it: input folder -> URL."""
        return lambda folder: self.serve(mode, folder, name)

    def serve(self, mode: str, folder: Path, name: str) -> str:
        if mode in ("honest", "drop"):
            self.honest.root = str(folder)
            self.honest.drop_after = None if mode == "honest" else 7
            return self.honest.url(name)
        body = (folder / name).read_bytes()
        self.lying.body = self.other.body = body
        if mode == "chain":
            return self.lying.url(f"chain/0/{name}")
        return self.lying.url(f"{mode}/{name}")
