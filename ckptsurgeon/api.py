"""The public Python API: open, save, extract."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from .errors import CheckpointError, CheckpointIsADirectoryError, FormatError, OutputError, SelectionError
from .formats import WRITERS, no_cycle_collection, open_checkpoint, writer_for
from .index import CheckpointIndex, IndexBuilder, TensorRef, rename_path
from .scopes import as_patterns, as_renames
from .source import CHUNK, open_source

if TYPE_CHECKING:
    import numpy as np

    from .formats.sharded.hf_shards import ShardedOutput
else:
    from .lazy import numpy as np

__all__ = ["open", "save", "save_sharded", "extract", "ExtractResult", "file_sha256", "provenance", "Progress", "as_maps"]

Tensors = Union[CheckpointIndex, Mapping[str, Union["np.ndarray", TensorRef]]]
Progress = Callable[[int, int], None]  # progress(bytes just done, total bytes of the operation)


def open(path: str | os.PathLike[str], *, allow_globals: Sequence[str] = ()) -> CheckpointIndex:  # noqa: A001
    """Open a checkpoint lazily: returns its scope-path index, no tensor bytes are read.

    ``allow_globals`` admits extra plain data classes (``module.ClassName``) found in a pickle; they
    are recorded by name, never imported or called. A missing path raises ``CheckpointNotFoundError`` (a
    ``FileNotFoundError``), a folder that holds no checkpoint ``CheckpointIsADirectoryError`` (an ``IsADirectoryError``).

    >>> import ckptsurgeon
    >>> index = ckptsurgeon.open("model.pt")
    >>> index.format, len(index), index["encoder/rnn/weight_ih_l0"].shape
    ('pytorch', 23, (64, 8))
    >>> ckptsurgeon.open("no-such.pt")
    Traceback (most recent call last):
    ckptsurgeon.errors.CheckpointNotFoundError: no-such.pt: no such file or directory
    """
    name = os.fspath(path)
    try:
        return open_checkpoint(name, allow_globals=as_patterns(allow_globals, "allow_globals"))
    except FormatError as exc:
        # the readers say "is a directory" for a folder that is no checkpoint folder: raise it as one for Python code
        if type(exc) is FormatError and str(exc).startswith(f"{name}: is a directory") and os.path.isdir(name):
            raise CheckpointIsADirectoryError(str(exc)) from None
        raise


def as_maps(value: str | Sequence[str | tuple[str, str]] | None) -> tuple[str, ...]:
    """``map=`` as ``SRC=DST`` strings (what ``parse_map`` reads): strings as the CLI takes them, or
    (src, dst) pairs, one or several, the forms ``rename=`` takes.

    >>> as_maps([("encoder/rnn", "lstm"), "head=out"])
    ('encoder/rnn=lstm', 'head=out')
    """
    if value is None:
        return ()
    out = []
    for item in [value] if isinstance(value, str) else list(value):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
            if "=" in item[0]:
                raise SelectionError(f"map {tuple(item)!r}: a source pattern cannot hold '='")
            out.append(f"{item[0]}={item[1]}")
        else:
            raise SelectionError(f"map {item!r}: expected 'SRC=DST' or a (src, dst) pair of strings")
    return tuple(out)


def file_sha256(path: str, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of a whole file or URL, read in ``CHUNK``-sized ranges."""
    import hashlib  # here: reading commands never hash a whole file (start-up stays lean)

    src = open_source(path)
    digest = hashlib.sha256()
    for offset in range(0, src.size, CHUNK):
        n = min(CHUNK, src.size - offset)
        digest.update(src.read(offset, n))
        if progress is not None:
            progress(n)
    return digest.hexdigest()


def provenance(index: CheckpointIndex, *, source_sha256: bool = False,
               progress: Callable[[int], None] | None = None) -> dict[str, str]:
    """Where an output came from, without reading one unselected byte: the source's name, its identity
    (size and mtime; for a URL the URL without credentials and the store's ETag or the Hub's LFS sha256),
    the sha256 of the header or index its reader parsed, its format. A folder (DCP, shards) is identified
    by its index file. ``source_sha256`` hashes the whole source too (reads all of it)."""
    from . import location

    src = index.files[0]
    meta = {"source": location.basename(src.rstrip("/")) or src}
    target, identity = src, {}
    for name in index.files[:2]:
        try:
            identity, target = open_source(name).identity(), name
            break
        except CheckpointError:  # a folder, or an index built in memory
            continue
    if "url" in identity:
        meta["source"] = str(identity.pop("url"))
    meta.update({f"source_{k}": str(v) for k, v in identity.items()})
    if index.header_sha256:
        meta["source_header_sha256"] = index.header_sha256
    if source_sha256 and "source_sha256" not in meta:
        meta["source_sha256"] = file_sha256(target, progress)
    meta["source_format"] = index.format
    return meta


def _materialize(tensors: Tensors) -> dict[str, np.ndarray | TensorRef]:
    """Output key -> array or TensorRef; an index writes each tensor under its key."""
    if isinstance(tensors, CheckpointIndex):
        return {ref.key: ref for ref in tensors.values()}  # type: ignore[misc]
    return dict(tensors)  # type: ignore[arg-type]


class _LazyArrays(Mapping[str, "np.ndarray"]):
    """Reads each tensor when the writer asks for it, so one tensor is in memory at a time."""

    def __init__(self, items: Mapping[str, np.ndarray | TensorRef], progress: Callable[[int], None] | None = None) -> None:
        self._items = items
        self._progress = progress

    def __getitem__(self, key: str) -> np.ndarray:
        value = self._items[key]
        arr = value.numpy() if isinstance(value, TensorRef) else np.asarray(value)
        if self._progress is not None:
            self._progress(arr.nbytes)
        return arr

    def spec(self, key: str) -> tuple[np.dtype, tuple[int, ...]]:
        """dtype and shape without reading the tensor (writers size their headers with it)."""
        value = self._items[key]
        if not isinstance(value, TensorRef):
            value = np.asarray(value)
        return value.dtype, tuple(value.shape)

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _spec(items: Mapping, key: str) -> tuple[np.dtype, tuple[int, ...]]:
    spec = getattr(items, "spec", None)
    return spec(key) if spec is not None else _LazyArrays(items).spec(key)


def save_sharded(
    tensors: Tensors,
    folder: str | os.PathLike[str],
    *,
    max_shard_size: int | str,
    format: str | None = None,
    metadata: Mapping[str, str] | None = None,
    force: bool = False,
    inputs: Sequence[str] = (),
) -> ShardedOutput:
    """Write tensors into ``folder`` as Hugging Face shards of at most ``max_shard_size`` ("5GB" or bytes).

    Names, index and split follow huggingface_hub (``model-00001-of-00003.safetensors`` +
    ``model.safetensors.index.json``; ``format="pt"`` writes ``pytorch_model-*.bin``). All files are
    written atomically together; tensors are read one at a time.
    """
    from .formats.sharded.hf_shards import parse_size, write_sharded

    folder = os.fspath(folder)
    items = tensors if not isinstance(tensors, CheckpointIndex) else _materialize(tensors)
    sources = list(inputs) + (list(tensors.files) if isinstance(tensors, CheckpointIndex) else [])
    if os.path.splitext(folder)[1].lower() in (".safetensors", ".bin", ".pt", ".npz", ".h5"):
        raise OutputError(f"{folder}: with --max-shard-size the output is a folder (shards are named like "
                          "huggingface_hub names them); give a folder name")
    lazy = items if hasattr(items, "spec") else _LazyArrays(items)  # type: ignore[arg-type]
    for value in (items.values() if isinstance(items, dict) else ()):  # refused before a byte is written
        if isinstance(value, TensorRef):
            value.check_expansion()

    def nbytes(key: str) -> int:
        dtype, shape = _spec(lazy, key)
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    writer = WRITERS.get(format or "safetensors") or writer_for(folder, format)  # the latter names the choices
    # a streaming writer takes the TensorRefs themselves (kernel copies); others read arrays one at a time
    feed = items if writer.streams and not hasattr(items, "spec") else lazy
    with no_cycle_collection():
        return write_sharded(feed, nbytes, folder, max_bytes=parse_size(max_shard_size), writer=writer,
                             metadata=dict(metadata or {}), force=force, inputs=sources)


def save(
    tensors: Tensors,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    metadata: Mapping[str, str] | None = None,
    force: bool = False,
    inputs: Sequence[str] = (),
    progress: Progress | None = None,
    to: str | None = None,
    max_shard_size: int | None = None,
) -> str:
    """Write tensors atomically to ``path`` (format from ``format`` or the suffix); returns the path.

    ``inputs`` are files this output must never replace; an index's own files are always included.
    ``progress(n, total)`` is called as tensor bytes are written. ``format="tensorflow"`` writes a
    name-based TensorFlow checkpoint: ``path`` is its prefix (``PREFIX.index``, ``PREFIX.data-*``, and a
    ``checkpoint`` state file when the folder has none); ``max_shard_size`` (bytes) splits its data
    into ``data-0000k-of-0000n`` shards. ``to`` (a conversion target) settles an ambiguous suffix:
    ``tf1`` makes ``.ckpt`` or a bare prefix a TensorFlow checkpoint.
    """
    path = os.fspath(path)
    items = _materialize(tensors)
    step: Callable[[int], None] | None = None
    if progress is not None:
        total = sum(v.nbytes for v in items.values() if isinstance(v, (TensorRef, np.ndarray)))
        step = lambda n: progress(n, total)  # noqa: E731

    from .atomic import atomic_output, check_output  # writers only: listing commands never load it

    sources = list(inputs) + (list(tensors.files) if isinstance(tensors, CheckpointIndex) else [])
    writer = writer_for(path, format, to)
    if not writer.files:
        check_output(path, sources, force)
    for value in items.values():  # refused before a byte is written
        if isinstance(value, TensorRef):
            value.check_expansion()
    if writer.files:  # a set of files named from ``path`` (a TensorFlow prefix), committed together
        with no_cycle_collection():
            writer.write(items, path, dict(metadata or {}), force=force, inputs=sources, progress=step,
                         max_shard_size=max_shard_size)
        return path
    if max_shard_size is not None:
        raise OutputError(f"{path}: {writer.name} output is one file; --max-shard-size writes a folder of shards")
    with atomic_output(path) as fh, no_cycle_collection():
        if writer.streams:  # copies TensorRefs' bytes itself (kernel copies, batched reads)
            writer.write(items, fh, dict(metadata or {}), progress=step)
        else:
            writer.write(_LazyArrays(items, step), fh, dict(metadata or {}))
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
    files: list[str] = field(default_factory=list)  # every file written (the shards and their index)


def _out_scope(scope: str, rename: Sequence[tuple[str, str]], rules: Sequence = ()) -> str:
    """A group scope after ``rename`` (prefix rules) and remap ``rules``, for its ``rnn:<scope>`` metadata key."""
    new = rename_path(scope + "/\0" if scope else "\0", rename)
    scope = scope if new is None else new.removesuffix("\0").rstrip("/")
    if rules:
        from .graft import render_scope

        mapped = render_scope(scope, rules)
        scope = scope if mapped is None else mapped
    return scope


def _convert(kept: CheckpointIndex, to: str, options, rename, verify_atol: float | None, rules: Sequence = ()):
    """The converted selection as an index (renamed), the group reports, and the verification rows.

    Each converted group is read back from its own tensors and self-description and run against the
    source before anything is written; the output's metadata gets every group's ``rnn:<scope>``.
    """
    from .rnn.convert import TARGETS
    from .rnn.stream import Lazy, stream_index

    # groups stream cell by cell where they can: a converted tensor is computed (and its cell verified) when the
    # writer reads it, and a cell that differs aborts the write (the temporary output is removed: nothing written)
    rows, done, checks = stream_index(kept, to, options, verify_atol, stream=not rules)
    if not done:
        raise SelectionError(f"{kept.files[0]}: no recurrent group in the selection to convert to {to} "
                             "(see `ckptsurgeon rnn`); drop --to to extract the tensors as they are")
    sep = TARGETS[to].sep
    builder = IndexBuilder(kept.files[0])
    matrices = [path for path, _, value in rows if isinstance(value, TensorRef) and len(value.shape) >= 2]
    for path, key, value in rows:
        passthrough = isinstance(value, TensorRef)
        new = rename_path(path, rename)
        if new is not None:
            path, key = new, new.replace("/", kept.key_sep if passthrough else sep)
        if passthrough:
            builder.add(value.with_path(path, key))
        elif isinstance(value, Lazy):
            builder.add(TensorRef(path, key, value.dtype, value.shape, kept.files[0], loader=value.load))
        else:
            arr = np.asarray(value)
            builder.add(TensorRef(path, key, arr.dtype, tuple(arr.shape), kept.files[0], loader=lambda a=arr: a))
    stated: dict[str, str] = {}
    for c in done:
        stated.update(c.stated(_out_scope(c.group.scope, rename, rules)))
    result = CheckpointIndex(builder.refs, format=to, files=[kept.files[0]], key_sep=sep,
                             metadata={"__metadata__": stated})
    reports = [{**c.group.describe(), "target": to, "tensors": list(c.tensors), "notes": c.notes,
                "output": c.metadata} for c in done]
    notes = []
    if matrices:  # a torch Linear's (out, in) weight is not a Keras/Flax Dense kernel (in, out): only groups convert
        shown = ", ".join(matrices[:3]) + (f" and {len(matrices) - 3} more" if len(matrices) > 3 else "")
        notes.append(f"{len(matrices)} {'matrix' if len(matrices) == 1 else 'matrices'} outside recurrent groups passed through as stored, "
                     f"in the source framework's names and layout, not {to}'s ({shown}); a framework whose dense "
                     "layers store (in, out) where the source's store (out, in), or the reverse, needs them transposed")
    return result, reports, checks, notes


def extract(
    source: str | os.PathLike[str] | CheckpointIndex,
    out: str | os.PathLike[str],
    *,
    scope: Sequence[str] = (),
    exclude: Sequence[str] = (),
    regex: bool = False,
    rename: str | Sequence[str | tuple[str, str]] = (),
    format: str | None = None,
    include_optimizer: bool = False,
    force: bool = False,
    allow_globals: Sequence[str] = (),
    to: str | None = None,
    options: object | None = None,
    verify_atol: float | None = 1e-5,
    map: str | Sequence[str | tuple[str, str]] = (),  # noqa: A002
    max_shard_size: int | str | None = None,
    source_sha256: bool = False,
    progress: Progress | None = None,
) -> ExtractResult:
    """Select tensors by scope, optionally convert recurrent groups (``to``), rename scope prefixes,
    and write them to ``out``.

    Mirrors ``ckptsurgeon extract``. Optimizer state is left out unless ``include_optimizer``.
    ``to`` is one of torch, torch-cell, keras, tf1, onnx, flax, paddle, gates (``options``: a ``ConvertOptions``);
    the converted groups are read back and run against the source before anything is written, and
    nothing is written above ``verify_atol`` (``None`` skips the check).
    Provenance (``provenance()``: the source's name, identity and header digest, the selection; the
    whole source's sha256 only with ``source_sha256``) goes into the output's metadata, and safetensors
    outputs record the sha256 of each tensor whose bytes passed through memory. ``progress(n, total)``
    is called as bytes are hashed and written. ``max_shard_size`` ("5GB") writes Hugging Face shards
    into the folder ``out`` instead of one file. ``rename`` and ``map`` take ``"OLD=NEW"`` strings or a
    list of them or of (old, new) pairs.

    >>> import ckptsurgeon
    >>> result = ckptsurgeon.extract("model.pt", "enc.npz", scope="encoder", rename=[("encoder/", "")])
    >>> result.format, len(result.written), result.written[0]
    ('npz', 16, 'rnn.weight_ih_l0')
    """
    scope, exclude, map = as_patterns(scope, "scope"), as_patterns(exclude, "exclude"), as_maps(map)  # noqa: A001
    rename = as_renames(rename)
    index = source if isinstance(source, CheckpointIndex) else open(source, allow_globals=allow_globals)
    if index.format in ("onnx", "tflite") and scope:
        from .rnn.onnx_graph import expand_scopes

        scope = expand_scopes(index, scope, regex, always=to is not None)  # a node's scope selects what it reads
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
    notes: list[str] = []
    if to:
        from .rnn.convert import ConvertOptions

        from .remap import parse_map

        if scope or exclude:  # a selection that cuts a group's cells would convert a layer the source never had
            from .rnn.convert import cut_groups

            cuts = cut_groups(index, kept, options)
            if cuts:
                raise SelectionError("; ".join(cuts))
        kept, reports, checks, notes = _convert(kept, to, options or ConvertOptions(), rename, verify_atol, parse_map(map))
    elif rename:
        kept = kept.renamed(rename)
    grand = kept.nbytes
    if source_sha256:
        with contextlib.suppress(CheckpointError):  # a folder: its index file is hashed, not counted here
            grand += open_source(index.files[0]).size
    step = (lambda n: progress(n, grand)) if progress is not None else None
    metadata: dict[str, str] | None = provenance(index, source_sha256=source_sha256, progress=step)
    metadata["selection"] = " ".join(scope) or "**"
    if exclude:
        metadata["exclude"] = " ".join(exclude)
    if rename:
        metadata["rename"] = " ".join(f"{a}={b}" for a, b in rename)
    if to:
        metadata["converted_to"] = to
        metadata.update(kept.metadata.get("__metadata__", {}))
    writer = WRITERS[format] if format in WRITERS else None if max_shard_size is not None else writer_for(os.fspath(out), format, to)
    if writer is not None and writer.name == "npz" and not to:
        metadata = None  # npz has no hidden place for metadata: a member is written only when a conversion needs one
    if map:
        from .remap import Remap, parse_map

        plan = Remap(parse_map(map)).plan(kept)
        if metadata is not None:
            metadata["map"] = " ".join(map)
        tensors, written = plan.lazy(), [r.target for r in plan.mapped]
    else:
        tensors, written = kept, [r.key for r in kept.values()]
    if max_shard_size is not None and writer is not None and writer.files:
        from .formats.sharded.hf_shards import parse_size

        path = save(tensors, out, format=writer.name, metadata=metadata, force=force, inputs=index.files,
                    progress=step and (lambda n, _total: step(n)), max_shard_size=parse_size(max_shard_size))
        files = _bundle_outputs(path)
        return ExtractResult(_prefix(path), written, kept.nbytes, skipped, writer.name, converted=reports, checks=checks,
                             files=files, notes=notes)
    if max_shard_size is not None:
        res = save_sharded(tensors, out, max_shard_size=max_shard_size, format=format, metadata=metadata,
                           force=force, inputs=index.files)
        return ExtractResult(res.index or res.files[0], written, kept.nbytes, skipped, format or "safetensors",
                             converted=reports, checks=checks, files=res.files, notes=notes)
    try:
        path = save(tensors, out, format=format, metadata=metadata, force=force, inputs=index.files,
                    progress=step and (lambda n, _total: step(n)), to=to)
    except OutputError as exc:  # a writer's refusal names the tensor; say which checkpoint it came from
        if index.files[0] in str(exc) or str(exc).startswith(os.fspath(out)):
            raise
        raise OutputError(f"{index.files[0]}: {exc}") from None
    assert writer is not None
    files = _bundle_outputs(path) if writer.files else [path]
    return ExtractResult(_prefix(path) if writer.files else path, written, kept.nbytes, skipped, writer.name,
                         converted=reports, checks=checks, files=files, notes=notes)


def _prefix(path: str) -> str:
    from .formats.tensorflow.writer import prefix_of

    return prefix_of(path)


def _bundle_outputs(path: str) -> list[str]:
    """The files of the TensorFlow bundle just written at ``path`` (data shards, then the index)."""
    from .formats.tensorflow.writer import DATA_NAME

    folder, base = os.path.split(_prefix(path))
    shards = sorted(n for n in os.listdir(folder or ".") if n.startswith(base) and DATA_NAME.fullmatch(n[len(base):]))
    return [os.path.join(folder, n) for n in shards] + [_prefix(path) + ".index"]
