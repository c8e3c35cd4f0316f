"""The core model: lazy tensor references and the scope-path index of a checkpoint."""
from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence, ValuesView
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .dtype_lite import LiteDtype
from .errors import FormatError, SelectionError, TensorNotFoundError, UnsafeCheckpointError
from .scopes import as_patterns, closest_scopes, compile_glob, compile_regex, matches
from .lazy import is_np_integer
from .source import read_exact

if TYPE_CHECKING:
    import numpy as np
else:
    from .lazy import numpy as np

__all__ = ["TensorRef", "CheckpointIndex", "IndexBuilder", "rename_path", "memory_index", "allow_expanded_views",
           "EXPAND_RATIO", "EXPAND_MIN", "lazy_sha256"]

# A strided view (stride 0: ``expand``) may stand for far more bytes than it stores. Materializing one
# above both limits is refused unless ``allow_expanded_views()`` (CLI: --allow-expanded) says otherwise.
EXPAND_RATIO = 100
EXPAND_MIN = 16 << 20
_ALLOW_EXPANDED: ContextVar[bool] = ContextVar("ckptsurgeon_allow_expanded", default=False)


@contextlib.contextmanager
def allow_expanded_views(allow: bool = True) -> Iterator[None]:
    """Within this block, views whose expanded size is far above their stored bytes are materialized."""
    token = _ALLOW_EXPANDED.set(allow)
    try:
        yield
    finally:
        _ALLOW_EXPANDED.reset(token)


class TensorRef:
    """A lazy reference to one tensor: where its bytes are and how to read them.

    ``dtype`` is the stored dtype, byte order included. ``stride`` (in elements) is ``None`` for
    C-contiguous data. ``loader`` replaces the plain file read for data that is not one byte range
    (a compressed zip member, a partitioned TF variable).

    A reader may give the dtype as a ``LiteDtype`` (``dtype_lite``): ``dtype`` makes the numpy dtype on first
    use, so a listing or a scan imports no numpy; ``nbytes``, ``span``, ``dtype_name`` and ``dtype_spec`` ask
    nothing of numpy. Treated as immutable (``with_path``, ``replace`` or ``dataclasses.replace`` make changed
    copies). Written by hand (its ``dtype`` is a property) but it passes for the dataclass it was: ``dataclasses.fields``,
    ``replace``, ``asdict`` and ``match`` see its fields. Not a frozen dataclass: a frozen dataclass's ``__init__`` sets
    each field through ``object.__setattr__``, 7x slower, 0.1 s of listing 100,000 tensors. Hash and equality are a
    frozen one's, the loader left out.
    """

    __slots__ = ("path", "key", "_dtype", "shape", "file", "offset", "stride", "optimizer", "loader", "raw")

    def __init__(self, path: str, key: str, dtype: np.dtype | LiteDtype, shape: tuple[int, ...], file: str,
                 offset: int = 0, stride: tuple[int, ...] | None = None, optimizer: bool = False,
                 loader: Callable[[], np.ndarray] | None = None, raw: bool | None = None) -> None:
        self.path, self.key, self._dtype, self.shape, self.file = path, key, dtype, shape, file
        self.offset, self.stride, self.optimizer = offset, stride, optimizer
        self.loader = loader
        self.raw = raw  # offset/stride locate the stored bytes in ``file`` (None: when no loader)

    @property
    def dtype(self) -> np.dtype:
        d = self._dtype
        if type(d) is LiteDtype:
            d = self._dtype = d.resolve()
        return d  # type: ignore[return-value]

    @dtype.setter
    def dtype(self, value: np.dtype | LiteDtype) -> None:
        self._dtype = value

    @property
    def dtype_spec(self) -> np.dtype | LiteDtype:
        """The dtype as the reader gave it: its ``itemsize``, ``kind``, ``name`` and ``str`` without numpy."""
        return self._dtype

    def _fields(self) -> tuple[Any, ...]:
        return (self.path, self.key, self.dtype, self.shape, self.file, self.offset, self.stride, self.optimizer,
                self.raw)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:  # the dataclass's, the numpy dtype shown (made now if need be)
        fields = {**self._init_kwargs(), "dtype": self.dtype}
        del fields["loader"]
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"

    def _init_kwargs(self) -> dict[str, Any]:
        """What ``__init__`` takes to make this very reference again."""
        return {"path": self.path, "key": self.key, "dtype": self._dtype, "shape": self.shape, "file": self.file,
                "offset": self.offset, "stride": self.stride, "optimizer": self.optimizer, "loader": self.loader,
                "raw": self.raw}

    def replace(self, **changes: Any) -> TensorRef:
        """A copy with ``changes`` (field names as ``__init__`` takes them)."""
        fields = self._init_kwargs()
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        fields.update(changes)
        return type(self)(**fields)

    @property
    def in_place(self) -> bool:
        """Whether the tensor's stored bytes sit at ``offset`` in ``file`` (so they can be patched)."""
        return self.loader is None if self.raw is None else self.raw

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self._dtype.itemsize

    @property
    def dtype_name(self) -> str:
        d = self._dtype
        if type(d) is LiteDtype:
            return d.name
        name = _DTYPE_NAMES.get(d)  # numpy computes ``dtype.name`` in Python each time
        if name is None:
            name = _DTYPE_NAMES[d] = d.name
        return name

    def span(self) -> int:
        """Bytes between the first and one past the last element this tensor touches."""
        if self.numel == 0:
            return 0
        if self.stride is None:
            return self.nbytes
        extent = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        return extent * self._dtype.itemsize

    def numpy(self) -> np.ndarray:
        """Read this tensor's bytes (only those) into a C-contiguous, native-order array."""
        if self.loader is not None:
            arr = self.loader()
        else:
            self.check_expansion()
            raw = read_exact(self.file, self.offset, self.span())
            flat = np.frombuffer(raw, dtype=self.dtype)
            if self.stride is None or self.numel == 0:
                arr = flat.reshape(self.shape)
            else:  # strided as raw items: numpy's as_strided rebuilds the array from its type string, which
                item = self.dtype.itemsize  # it cannot parse for some ml_dtypes (float8_e5m2 says '<f1')
                arr = np.lib.stride_tricks.as_strided(
                    flat.view(f"V{item}"), self.shape, tuple(s * item for s in self.stride), writeable=False
                ).copy().view(self.dtype)
        if not arr.flags.c_contiguous:
            arr = arr.copy()  # np.ascontiguousarray would turn a 0-d array into 1-d
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr

    def check_expansion(self) -> None:
        """Refuse (unless allowed) a strided view whose expanded size is far above its stored bytes."""
        if self.loader is not None or self.stride is None:
            return
        stored = self.span()
        if self.nbytes > EXPAND_MIN and self.nbytes > EXPAND_RATIO * max(stored, 1) and not _ALLOW_EXPANDED.get():
            raise UnsafeCheckpointError(
                f"{self.file}: tensor {self.key!r} is a view of {stored:,} stored bytes expanded to shape "
                f"{list(self.shape)} (strides {list(self.stride or ())}), {self.nbytes:,} bytes; refusing to materialize "
                "it (pass --allow-expanded to write it anyway)")

    def identity(self) -> tuple | None:
        """What this tensor is, apart from its name: two refs with one identity are aliases (a tensor
        shared under several paths). None for empty tensors, which share nothing."""
        if 0 in self.shape:  # no element
            return None
        if self.loader is None if self.raw is None else self.raw:  # in place
            return (self.file, self.offset, self._dtype.str, self.shape, self.stride)
        return None if self.loader is None else ("loader", id(self.loader), self._dtype.str, self.shape)

    def with_path(self, path: str, key: str | None = None) -> TensorRef:
        return self.replace(path=path, key=self.key if key is None else key)


@dataclass
class _Fields:
    """What ``dataclasses.fields``/``replace``/``asdict`` and ``match`` see of a ``TensorRef``: the fields the
    dataclass it was had (``_as_dataclass``); the class itself is written by hand (its ``dtype`` resolves)."""

    path: str
    key: str
    dtype: Any
    shape: tuple[int, ...]
    file: str
    offset: int = 0
    stride: tuple[int, ...] | None = None
    optimizer: bool = False
    loader: Callable[[], Any] | None = field(default=None, compare=False, repr=False)
    raw: bool | None = None


def _as_dataclass(cls: type, fields: type) -> None:
    """Make ``cls`` pass for the dataclass ``fields`` describes (its instances have those attributes)."""
    for name in ("__dataclass_fields__", "__dataclass_params__", "__match_args__"):
        setattr(cls, name, getattr(fields, name))


_as_dataclass(TensorRef, _Fields)
_LITTLE = sys.byteorder == "little"
_DTYPE_NAMES: dict[np.dtype, str] = {}


class CheckpointIndex(Mapping[str, TensorRef]):
    """Ordered mapping scope path -> TensorRef, plus format, files, metadata and notes.

    ``metadata`` holds format-level metadata and every non-tensor leaf (epoch, hyper-parameters)
    by its scope path; ``notes`` are things a user should be told when listing (fallbacks taken).
    ``header_sha256`` is the sha256 of the header or index bytes the reader parsed (provenance without
    reading any tensor byte); empty when a library read them for us (HDF5).
    """

    def __init__(
        self,
        refs: Iterable[TensorRef],
        *,
        format: str,
        files: Sequence[str],
        metadata: Mapping[str, Any] | None = None,
        notes: Sequence[str] = (),
        key_sep: str = ".",
        header_sha256: str | Callable[[], str] = "",
    ) -> None:
        self._refs: dict[str, TensorRef] = {r.path: r for r in refs}
        self.format = format
        self.files = tuple(files)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.notes = list(notes)
        self.key_sep = key_sep
        self._header_sha256 = header_sha256

    def __getitem__(self, path: str) -> TensorRef:
        """The tensor at scope ``path``; a path it does not hold raises ``TensorNotFoundError`` (a ``KeyError``
        and a ``SelectionError``) naming the closest paths. ``get(path)`` returns None instead."""
        try:
            return self._refs[path]
        except KeyError:
            raise TensorNotFoundError(self._missing(path)) from None

    def _missing(self, path: str) -> str:
        """Why ``path`` is not here: the tensor it is the original key of, else the closest paths."""
        if not isinstance(path, str):
            return f"{self.files[0]}: no tensor {path!r}; tensors are indexed by scope path strings"
        by_key = next((r.path for r in self._refs.values() if r.key == path), None)
        if by_key is not None:
            return f"{self.files[0]}: no tensor {path!r}: that is the key of the tensor at scope path {by_key!r}; index by path"
        import difflib  # only for error messages

        close = difflib.get_close_matches(path, list(self._refs), n=3, cutoff=0.6) or closest_scopes(path, list(self._refs), n=3)
        hint = f"; closest: {', '.join(close)}" if close else " (the checkpoint holds no tensor)" if not self._refs else ""
        return f"{self.files[0]}: no tensor {path!r}{hint}"

    def __contains__(self, path: object) -> bool:  # Mapping's default would build a miss's message each time
        return path in self._refs

    def get(self, path: str, default: TensorRef | None = None) -> TensorRef | None:
        return self._refs.get(path, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def values(self) -> ValuesView[TensorRef]:  # the dict's own views: Mapping's call __getitem__ per item
        return self._refs.values()

    def items(self) -> ItemsView[str, TensorRef]:
        return self._refs.items()

    def keys(self) -> KeysView[str]:
        return self._refs.keys()

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"<CheckpointIndex {self.format} {self.files[0]!r}: {len(self)} tensors>"

    @property
    def header_sha256(self) -> str:
        """sha256 of the header or index bytes the reader parsed; computed when first asked for."""
        if callable(self._header_sha256):
            self._header_sha256 = self._header_sha256()
        return self._header_sha256

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._refs.values())

    def aliases(self) -> dict[str, list[str]]:
        """Tensors shared under several paths: first path -> the other paths (in index order)."""
        first: dict[tuple, str] = {}
        out: dict[str, list[str]] = {}
        for path, ref in self._refs.items():
            ident = ref.identity()
            if ident is None:
                continue
            owner = first.setdefault(ident, path)
            if owner != path:
                out.setdefault(owner, []).append(path)
        return out

    def _derive(self, refs: Iterable[TensorRef] | dict[str, TensorRef]) -> CheckpointIndex:
        """An index of ``refs`` with this one's facts; a dict path -> ref is taken as is (never changed after)."""
        derived = CheckpointIndex(
            () if isinstance(refs, dict) else refs, format=self.format, files=self.files, metadata=self.metadata,
            notes=self.notes, key_sep=self.key_sep, header_sha256=self._header_sha256,
        )
        if isinstance(refs, dict):
            derived._refs = refs
        return derived

    def select(
        self,
        *patterns: str,
        exclude: Sequence[str] = (),
        regex: bool = False,
        include_optimizer: bool = True,
    ) -> CheckpointIndex:
        """Tensors matched by any pattern (or lying under a matched scope), minus ``exclude``.

        No pattern selects everything. A pattern that selects nothing raises ``SelectionError``
        listing the closest existing scopes.
        """
        patterns = tuple(p for value in patterns for p in as_patterns(value, "scope"))
        exclude = as_patterns(exclude, "exclude")
        compile_ = compile_regex if regex else compile_glob
        if not patterns and not exclude:  # everything: the same refs (an index never changes its dict)
            if include_optimizer or not any(r.optimizer for r in self._refs.values()):
                return self._derive(self._refs)
            return self._derive({p: r for p, r in self._refs.items() if not r.optimizer})
        paths = list(self._refs)
        chosen: dict[str, None] = {} if patterns else dict.fromkeys(paths)
        for pattern in patterns:
            rx = compile_(pattern)
            hit = [p for p in paths if matches(rx, p)]
            if not hit:
                close = closest_scopes(pattern, paths)
                raise SelectionError(
                    f"{self.files[0]}: scope {pattern!r} selects nothing; closest scopes: "
                    + (", ".join(close) if close else "(checkpoint is empty)")
                )
            chosen.update(dict.fromkeys(hit))
            del hit
        for pattern in exclude:
            rx = compile_(pattern)
            chosen = {p: None for p in chosen if not matches(rx, p)}
        del paths
        if len(chosen) == len(self._refs) and include_optimizer:  # every path, in the index's order
            return self._derive(self._refs)
        refs = self._refs
        return self._derive({p: refs[p] for p in refs if p in chosen and (include_optimizer or not refs[p].optimizer)})

    def renamed(self, renames: Sequence[tuple[str, str]]) -> CheckpointIndex:
        """Substitute scope prefixes (first matching rule wins), like TF's ``assignment_map``.

        Renamed tensors get keys in the source's key style (its separator); collisions raise.
        """
        builder = IndexBuilder(self.files[0])
        used: set[int] = set()
        for ref in self._refs.values():
            path = rename_path(ref.path, renames)
            if path is not None:
                used.add(next(i for i, rule in enumerate(renames) if rename_path(ref.path, [rule]) is not None))
            builder.add(ref if path is None else ref.with_path(path, path.replace("/", self.key_sep)))
        idle = [f"{old or '/'}={new}" for i, (old, new) in enumerate(renames) if i not in used]
        if idle:
            from .errors import SelectionError

            raise SelectionError(f"{self.files[0]}: rename {', '.join(idle)} matches no path of the selection "
                                 "(OLD is a scope prefix: 'encoder/' or 'encoder', '/' for every path)")
        return self._derive(builder.handed())


def lazy_sha256(*parts: bytes) -> Callable[[], str]:
    """The hex sha256 of ``parts`` joined, computed when called: listing a checkpoint never pays for hashing."""

    def digest() -> str:
        import hashlib

        h = hashlib.sha256()
        for part in parts:
            h.update(part)
        return h.hexdigest()

    return digest


def lazy_range_sha256(file: str, offset: int, size: int) -> Callable[[], str]:
    """The hex sha256 of ``size`` bytes at ``offset`` in ``file``, read and hashed when called: an index
    keeps no copy of the header it was parsed from (12 MB for a 100,000-tensor pickle)."""

    def digest() -> str:
        import hashlib

        return hashlib.sha256(read_exact(file, offset, size)).hexdigest()

    return digest


def rename_path(path: str, renames: Sequence[tuple[str, str]]) -> str | None:
    """The path after the first matching prefix rule (``OLD=NEW``), or None when none matches."""
    for old, new in renames:
        if (old.endswith("/") or not old) and path.startswith(old) or path == old or path.startswith(old + "/"):
            return re.sub("/+", "/", (new + path[len(old):]).strip("/"))
    return None


class IndexBuilder:
    """Collects TensorRefs; two keys that normalize to one path are an error naming both."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._refs: dict[str, TensorRef] = {}

    def add(self, ref: TensorRef) -> None:
        check_shape(self.file, ref.key, ref.dtype_spec, ref.shape)
        prior = self._refs.get(ref.path)
        if prior is not None:
            raise FormatError(
                f"{self.file}: keys {prior.key!r} and {ref.key!r} both normalize to scope path "
                f"{ref.path!r}; rename one of them (e.g. extract with --rename) or read with the original keys"
            )
        self._refs[ref.path] = ref

    @property
    def refs(self) -> list[TensorRef]:
        return list(self._refs.values())

    def handed(self) -> dict[str, TensorRef]:
        """The refs by path, handed over to an index (``CheckpointIndex._derive``, ``build``): the builder starts over."""
        refs, self._refs = self._refs, {}
        return refs

    def build(self, **facts: Any) -> CheckpointIndex:
        """``CheckpointIndex(self.refs, **facts)`` without copying the refs (100,000 of them: a 5 MB dict)."""
        index = CheckpointIndex((), **facts)
        index._refs = self.handed()
        return index


MAX_DIMS = 64  # numpy's limit
MAX_BYTES = 1 << 62


_PASSED: dict[tuple[int, np.dtype | LiteDtype], tuple[Any, ...]] = {}  # (id(shape), dtype) -> that very tuple, which passed


def check_shape(file: str, key: str, dtype: np.dtype | LiteDtype, shape: Sequence[Any]) -> None:
    """What every tensor must be, whatever its format says: a dtype with a size, at most 64 dimensions,
    each a count, and a total size that fits in memory arithmetic (else numpy fails later, obscurely).

    A shape tuple that passed is not checked again with the same dtype: readers share one tuple per distinct
    shape (a torch pickle's 100,000 tensors have a few). The cache holds the tuple itself (its id stays its)."""
    if type(shape) is tuple and _PASSED.get((id(shape), dtype)) is shape:
        return
    _check_shape(file, key, dtype, shape)
    if type(shape) is tuple:
        if len(_PASSED) > 4096:
            _PASSED.clear()
        _PASSED[(id(shape), dtype)] = shape


def _check_shape(file: str, key: str, dtype: np.dtype | LiteDtype, shape: Sequence[Any]) -> None:
    if dtype.itemsize < 1:
        raise FormatError(f"{file}: tensor {key!r} has dtype {dtype} of size {dtype.itemsize}; not a tensor")
    if dtype.subdtype is not None:  # numpy would turn each element into an array of its own
        raise FormatError(f"{file}: tensor {key!r} has a sub-array dtype {dtype}; not a tensor")
    if len(shape) > MAX_DIMS:
        raise FormatError(f"{file}: tensor {key!r} has {len(shape)} dimensions (at most {MAX_DIMS})")
    total = dtype.itemsize
    for d in shape:
        if not (isinstance(d, int) or is_np_integer(d)) or isinstance(d, bool) or not 0 <= d < MAX_BYTES:
            raise FormatError(f"{file}: tensor {key!r} has an invalid dimension {d!r} in shape {list(shape)[:8]}")
        total *= int(d)
    if total > MAX_BYTES:
        raise UnsafeCheckpointError(f"{file}: tensor {key!r} declares shape {list(shape)[:8]} of {dtype}, over "
                                    f"{MAX_BYTES:,} bytes; refusing")


def memory_index(items: Iterable[tuple[str, str, np.ndarray]], *, format: str, file: str, key_sep: str = ".") -> CheckpointIndex:
    """An index over arrays already in memory: (path, key, array) rows."""
    builder = IndexBuilder(file)
    for path, key, arr in items:
        arr = np.asarray(arr)
        builder.add(TensorRef(path, key, arr.dtype, tuple(arr.shape), file, loader=lambda a=arr: a))
    return CheckpointIndex(builder.refs, format=format, files=[file], key_sep=key_sep)
