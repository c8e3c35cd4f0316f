"""The public Python API: open, save, extract."""
from __future__ import annotations

import builtins
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from .atomic import atomic_output, check_output
from .errors import OutputError, SelectionError
from .formats import open_checkpoint, writer_for
from .index import CheckpointIndex, IndexBuilder, TensorRef, rename_path

__all__ = ["open", "save", "extract", "ExtractResult", "file_sha256"]

Tensors = Union[CheckpointIndex, Mapping[str, Union[np.ndarray, TensorRef]]]


def open(path: str | os.PathLike[str], *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:  # noqa: A001
    """Open a checkpoint lazily: returns its scope-path index, no tensor bytes are read.

    ``allow_globals`` admits extra plain data classes (``module.ClassName``) found in a pickle; they
    are recorded by name, never imported or called.
    """
    return open_checkpoint(os.fspath(path), allow_globals=allow_globals)


def file_sha256(path: str) -> str:
    """sha256 of a whole file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with builtins.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _materialize(tensors: Tensors) -> dict[str, np.ndarray]:
    """Output key -> array; an index writes each tensor under its key."""
    if isinstance(tensors, CheckpointIndex):
        return {ref.key: ref for ref in tensors.values()}  # type: ignore[misc]
    return dict(tensors)  # type: ignore[arg-type]


class _LazyArrays(Mapping[str, np.ndarray]):
    """Reads each tensor when the writer asks for it, so one tensor is in memory at a time."""

    def __init__(self, items: Mapping[str, np.ndarray | TensorRef]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> np.ndarray:
        value = self._items[key]
        return value.numpy() if isinstance(value, TensorRef) else np.asarray(value)

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def save(
    tensors: Tensors,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    metadata: Mapping[str, str] | None = None,
    force: bool = False,
    inputs: Sequence[str] = (),
) -> str:
    """Write tensors atomically to ``path`` (format from ``format`` or the suffix); returns the path.

    ``inputs`` are files this output must never replace; an index's own files are always included.
    """
    path = os.fspath(path)
    items = _materialize(tensors)
    sources = list(inputs) + (list(tensors.files) if isinstance(tensors, CheckpointIndex) else [])
    check_output(path, sources, force)
    writer = writer_for(path, format)
    for value in items.values():  # refused before a byte is written
        if isinstance(value, TensorRef):
            value.check_expansion()
    with atomic_output(path) as fh:
        writer.write(_LazyArrays(items), fh, dict(metadata or {}))
    return path


@dataclass
class ExtractResult:
    """What ``extract`` wrote: output path, tensors written, optimizer tensors left out, conversions."""

    path: str
    written: list[str]
    nbytes: int
    skipped_optimizer: int = 0
    format: str = ""
    notes: list[str] = field(default_factory=list)
    converted: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)


def _convert(kept: CheckpointIndex, to: str, options, rename, verify_atol: float | None):
    """The converted selection as an index (renamed), the group reports, and the verification rows."""
    from .rnn.convert import TARGETS, convert_index
    from .rnn.verify import verify

    rows, done = convert_index(kept, to, options)
    sep = TARGETS[to][0]
    builder = IndexBuilder(kept.files[0])
    for path, key, value in rows:
        passthrough = isinstance(value, TensorRef)
        new = rename_path(path, rename)
        if new is not None:
            path, key = new, new.replace("/", kept.key_sep if passthrough else sep)
        if passthrough:
            builder.add(value.with_path(path, key))
        else:
            arr = np.asarray(value)
            builder.add(TensorRef(path, key, arr.dtype, tuple(arr.shape), kept.files[0], loader=lambda a=arr: a))
    # The GRU family is an ONNX operator attribute, not a weight: the output's metadata keeps it.
    family = {f"onnx_linear_before_reset:{c.group.scope}": "1" if c.group.reset_after else "0"
              for c in done if to == "onnx" and c.group.kind == "gru"}
    result = CheckpointIndex(builder.refs, format=to, files=[kept.files[0]], key_sep=sep,
                             metadata={"__metadata__": family})
    checks = []
    if verify_atol is not None and done:
        found = verify(kept, result, atol=verify_atol, options_a=options)
        checks = [r.as_dict() for r in found]
        bad = [r for r in found if not r.ok]
        if bad:
            raise SelectionError("; ".join(f"{r.source}: converted outputs differ by {r.max_abs_diff:.3g} (> {verify_atol:g})"
                                           for r in bad) + "; nothing written")
    reports = [{**c.group.describe(), "target": to, "tensors": list(c.tensors), "notes": c.notes} for c in done]
    return result, reports, checks


def extract(
    source: str | os.PathLike[str] | CheckpointIndex,
    out: str | os.PathLike[str],
    *,
    scope: Sequence[str] = (),
    exclude: Sequence[str] = (),
    regex: bool = False,
    rename: Sequence[tuple[str, str]] = (),
    format: str | None = None,
    include_optimizer: bool = False,
    force: bool = False,
    allow_globals: Sequence[str] = (),
    to: str | None = None,
    options: object | None = None,
    verify_atol: float | None = None,
    map: Sequence[str] = (),  # noqa: A002
) -> ExtractResult:
    """Select tensors by scope, optionally convert recurrent groups (``to``), rename scope prefixes,
    and write them to ``out``.

    Mirrors ``ckptsurgeon extract``. Optimizer state is left out unless ``include_optimizer``.
    ``to`` is one of torch, torch-cell, keras, tf1, onnx, gates (``options``: a ``ConvertOptions``);
    with ``verify_atol`` the converted groups are run against the source before anything is written.
    Provenance (source name, its sha256, the selection) goes into the output's metadata.
    """
    index = source if isinstance(source, CheckpointIndex) else open(source, allow_globals=allow_globals)
    chosen = index.select(*scope, exclude=exclude, regex=regex)
    kept = chosen if include_optimizer else chosen.select(include_optimizer=False) if len(chosen) else chosen
    skipped = len(chosen) - len(kept)
    if not len(kept):
        raise SelectionError(
            f"{index.files[0]}: the selection holds only optimizer state ({skipped} tensors); "
            "pass --include-optimizer to extract it"
        )
    reports: list[dict] = []
    checks: list[dict] = []
    if to:
        from .rnn.convert import ConvertOptions

        kept, reports, checks = _convert(kept, to, options or ConvertOptions(), rename, verify_atol)
    elif rename:
        kept = kept.renamed(rename)
    src = index.files[0]
    metadata = {
        "source": os.path.basename(src),
        "source_sha256": file_sha256(src) if os.path.isfile(src) else "",
        "source_format": index.format,
        "selection": " ".join(scope) or "**",
    }
    if exclude:
        metadata["exclude"] = " ".join(exclude)
    if rename:
        metadata["rename"] = " ".join(f"{a}={b}" for a, b in rename)
    if to:
        metadata["converted_to"] = to
        metadata.update(kept.metadata.get("__metadata__", {}))
    if map:
        from .remap import Remap, parse_map

        plan = Remap(parse_map(map)).plan(kept)
        metadata["map"] = " ".join(map)
        path = save(plan.lazy(), out, format=format, metadata=metadata, force=force, inputs=index.files)
        return ExtractResult(path, [r.target for r in plan.mapped], kept.nbytes,
                             skipped, writer_for(path, format).name, converted=reports, checks=checks)
    try:
        path = save(kept, out, format=format, metadata=metadata, force=force, inputs=index.files)
    except OutputError as exc:  # a writer's refusal names the tensor; say which checkpoint it came from
        if src in str(exc):
            raise
        raise OutputError(f"{src}: {exc}") from None
    return ExtractResult(path, [r.key for r in kept.values()], kept.nbytes, skipped, writer_for(path, format).name,
                         converted=reports, checks=checks)
