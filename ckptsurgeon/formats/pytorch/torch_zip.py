"""PyTorch zip checkpoints (``torch.save`` since 1.6): ``<root>/data.pkl`` + ``<root>/data/<key>``; TorchScript
archives (``torch.jit.save``) are the same zip plus ``code/`` and ``constants.pkl`` (``torchscript``)."""
from __future__ import annotations

from collections.abc import Sequence

from ...errors import FormatError, UnsafeCheckpointError
from ...index import CheckpointIndex, lazy_range_sha256, lazy_sha256
from . import torchscript
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
        script = torchscript.is_torchscript(zf.names(), root)
        storages: dict[str, StorageBytes] = {}
        for name, member in zf.members.items():
            folder = "data/" if name.startswith(root + "data/") else "constants/" if script and name.startswith(
                root + "constants/") else None
            if folder is not None:
                if not member.stored:
                    raise UnsafeCheckpointError(
                        f"{path}: storage {name!r} is compressed ({member.compressed_size} -> {member.size} bytes); "
                        "torch.save never compresses storages, refusing a possible zip bomb"
                    )
                key = name[len(root + "data/"):] if folder == "data/" else name[len(root):]
                storages[key] = StorageBytes(path, member.data_offset, member.size)
        pickled = zf.read(root + "data.pkl")
        pkl = zf.members[root + "data.pkl"]
        header_sha256 = lazy_range_sha256(path, pkl.data_offset, pkl.size) if pkl.stored else lazy_sha256(pickled)
        constants = zf.read(root + "constants.pkl") if script and root + "constants.pkl" in zf.members else None
    finally:
        zf.close()  # before unpickling: a 100,000-member archive's tables are freed first
    if script:
        return _read_script(path, root, pickled, constants, storages, byteorder, allow_globals)
    obj = safe_load(pickled, f"{path}:{root}data.pkl", storage_from_pid, allow_globals)
    size = len(pickled)
    del pickled  # freed before the index is built beside the unpickled objects (the digest re-reads it)
    return build_torch_index(obj, storages, file=path, format=FORMAT, byteorder=byteorder,
                             header_sha256=header_sha256, pickle_bytes=size)


def _read_script(path: str, root: str, pickled: bytes, constants: bytes | None, storages: dict[str, StorageBytes],
                 byteorder: str, allow_globals: Sequence[str]) -> CheckpointIndex:
    """A TorchScript archive: its module tree (and tensor constants) as data; ``code/`` is never read."""
    extra = torchscript.script_globals(pickled, constants or b"")
    where = f"{path}:{root}data.pkl"
    dropped: list[str] = []
    tree = torchscript.module_tree(safe_load(pickled, where, storage_from_pid, allow_globals, extra), where, dropped)
    if constants is not None:
        where = f"{path}:{root}constants.pkl"
        consts = safe_load(constants, where, torchscript.constants_pid("constants/"), allow_globals, extra)
        tree = torchscript.with_constants(tree, torchscript.module_tree(consts, where))
    index = build_torch_index(tree, storages, file=path, format=torchscript.FORMAT, byteorder=byteorder,
                              header_sha256=lazy_sha256(pickled), pickle_bytes=len(pickled) + len(constants or b""))
    index.notes.append("TorchScript archive: modules read as their attributes (parameters, buffers, other values); "
                       "its code/ is never read or run")
    if dropped:
        index.notes.append(f"left out {', '.join(dropped[:4])}{' ...' if len(dropped) > 4 else ''}: lists repeating "
                           "their module's own tensors (the same objects)")
    return index
