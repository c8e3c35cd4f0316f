"""PyTorch zip checkpoints (``torch.save`` since 1.6): ``<root>/data.pkl`` + ``<root>/data/<key>``."""
from __future__ import annotations

from collections.abc import Sequence

from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex, lazy_sha256
from .safepickle import safe_load, storage_from_pid
from .torch_common import StorageBytes, build_torch_index
from ..zipsafe import SafeZip

__all__ = ["sniff_names", "read"]

FORMAT = "pytorch"


def sniff_names(names: Sequence[str]) -> bool:
    return any(n.endswith("data.pkl") and n.count("/") == 1 for n in names)


def read(path: str, *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:
    zf = SafeZip(path)
    try:
        roots = [n[: -len("data.pkl")] for n in zf.names() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(roots) != 1:
            raise FormatError(f"{path}: expected one '<root>/data.pkl' in the PyTorch zip, found {len(roots)}")
        root = roots[0]
        stray = [n for n in zf.names() if not n.startswith(root)]
        if stray:
            raise UnsafeCheckpointError(f"{path}: zip member {stray[0]!r} lies outside the archive root {root!r}")
        byteorder = "<"
        if root + "byteorder" in zf.members:
            order = zf.read(root + "byteorder", limit=16).decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise FormatError(f"{path}: unknown byteorder {order!r}")
            byteorder = "<" if order == "little" else ">"
        storages: dict[str, StorageBytes] = {}
        for name, member in zf.members.items():
            if name.startswith(root + "data/"):
                if not member.stored:
                    raise UnsafeCheckpointError(
                        f"{path}: storage {name!r} is compressed ({member.compressed_size} -> {member.size} bytes); "
                        "torch.save never compresses storages, refusing a possible zip bomb"
                    )
                storages[name[len(root + "data/"):]] = StorageBytes(path, member.data_offset, member.size)
        pickled = zf.read(root + "data.pkl")
    finally:
        zf.close()  # before unpickling: a 100,000-member archive's tables are freed first
    obj = safe_load(pickled, f"{path}:{root}data.pkl", storage_from_pid, allow_globals)
    index = build_torch_index(obj, storages, file=path, format=FORMAT, byteorder=byteorder,
                              header_sha256=lazy_sha256(pickled), pickle_bytes=len(pickled))
    return index
