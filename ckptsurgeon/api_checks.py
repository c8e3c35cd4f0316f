"""The reporting commands as Python functions: ``stats``, ``validate``, ``layout``, ``diff``, ``scan``, ``rnn``, ``verify``.

Each calls the library functions its command calls and returns a typed result (``ckptsurgeon.results``)
whose ``to_dict()`` is what the command's ``--json`` prints. A finding is data, not an exception: ``validate``
returns ``ok=False`` where the command exits 1. Every function takes a path (file, folder or URL) or an
already opened ``CheckpointIndex``; scopes, options and allowed globals as ``ckptsurgeon.extract`` takes them.
The examples run (doctest) in a folder holding ``model.pt`` (a PyTorch bidirectional 2-layer LSTM ``encoder/rnn``
and a GRU ``decoder``) and the TF1 checkpoint ``model.ckpt`` (a hand-built LSTM cell ``LSTMcell``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from .api import open as open_checkpoint
from .errors import CheckpointIsADirectoryError, CheckpointNotFoundError, SelectionError
from .index import CheckpointIndex
from .results import DiffResult, Layout, RnnResult, ScanReport, StatsResult, ValidationResult, VerifyResult, plain
from .scopes import as_patterns

if TYPE_CHECKING:
    from .rnn.convert import ConvertOptions

__all__ = ["stats", "validate", "layout", "diff", "scan", "rnn", "verify"]

Source = Union[str, "os.PathLike[str]", CheckpointIndex]
Patterns = Union[str, Sequence[str]]
Progress = Callable[[int, int], None]


def _open(source: Source, scope: Patterns, exclude: Patterns, regex: bool, allow_globals: Patterns,
          include_optimizer: bool = True) -> CheckpointIndex:
    """``source`` opened (unless it is an index) and narrowed to ``scope`` minus ``exclude``, as the CLI does."""
    index = source if isinstance(source, CheckpointIndex) else open_checkpoint(source, allow_globals=as_patterns(allow_globals))
    return index.select(*as_patterns(scope, "scope"), exclude=as_patterns(exclude, "exclude"), regex=regex,
                        include_optimizer=include_optimizer)


def _name(source: Source) -> str:
    return source.files[0] if isinstance(source, CheckpointIndex) else os.fspath(source)


def _options(options: ConvertOptions | None) -> ConvertOptions:
    from .rnn.convert import ConvertOptions  # the recurrent machinery loads when a function uses it

    return options if options is not None else ConvertOptions()


def stats(source: Source, *, scope: Patterns = (), exclude: Patterns = (), regex: bool = False,
          include_optimizer: bool = False, options: ConvertOptions | None = None, allow_globals: Patterns = (),
          progress: Progress | None = None) -> StatsResult:
    """Statistics per tensor and per gate, and a best guess of how each was initialized (``ckptsurgeon stats``).

    Optimizer state is left out (and counted) unless ``include_optimizer``.

    >>> import ckptsurgeon
    >>> result = ckptsurgeon.stats("model.pt", scope="encoder")
    >>> result.tensors[0].path, result.tensors[0].init
    ('encoder/rnn/weight_ih_l0', 'PyTorch default U(+-1/sqrt(H))')
    >>> [(g.scope, g.kind) for g in result.groups]
    [('encoder/rnn', 'lstm')]
    """
    from .check.stats import checkpoint_stats

    index = _open(source, scope, exclude, regex, allow_globals)
    found = checkpoint_stats(index, _options(options), include_optimizer=include_optimizer, progress=progress)
    return StatsResult.from_dict(plain(found))


def layout(source: Source, out: str | os.PathLike[str] | None = None, *, scope: Patterns = (), exclude: Patterns = (),
           regex: bool = False, hash: bool = False, options: ConvertOptions | None = None,  # noqa: A002
           allow_globals: Patterns = (), progress: Progress | None = None) -> Layout:
    """A layout lock of ``source`` (``ckptsurgeon layout``): format, every tensor's path, shape, dtype, recurrent
    groups, and with ``hash`` each tensor's sha256. Written to ``out`` (atomically, never over an input) when given.

    >>> import ckptsurgeon
    >>> lock = ckptsurgeon.layout("model.pt", "model.layout.json")
    >>> lock.format, len(lock.tensors), [g.scope for g in lock.groups]
    ('pytorch', 23, ['encoder/rnn', 'decoder'])
    >>> lock.tensors[1].path, lock.tensors[1].shape, lock.tensors[1].dtype
    ('encoder/rnn/weight_ih_l0', (64, 8), 'float32')
    """
    from .check.layout import make_layout

    index = _open(source, scope, exclude, regex, allow_globals)
    lock = make_layout(index, hash=hash, options=_options(options), progress=progress)
    path = None
    if out is not None:
        from .atomic import atomic_output, check_output

        path = os.fspath(out)
        check_output(path, list(index.files), True)  # a lock is rewritten as the CLI rewrites it; an input never
        with atomic_output(path) as fh:
            fh.write((json.dumps(lock, indent=2) + "\n").encode())
    return Layout.from_dict(plain(lock), path)


def _lock(lock: Layout | Mapping[str, Any] | str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """A lock and the name reports give it: a ``Layout``, the dict of one, or a lock file."""
    if isinstance(lock, Layout):
        return lock.to_dict(), lock.path or "layout"
    if isinstance(lock, Mapping):
        return dict(lock), "layout"
    from .check.layout import load_layout
    from .check.lfs import is_lfs_pointer, lfs_message

    path = os.fspath(lock)
    if not os.path.lexists(path):
        raise CheckpointNotFoundError(f"{path}: no such layout lock; make one with ckptsurgeon.layout(CHECKPOINT, {path!r})")
    if os.path.isdir(path):
        raise CheckpointIsADirectoryError(f"{path}: is a directory; pass a layout lock file (from ckptsurgeon.layout)")
    if is_lfs_pointer(path):
        raise SelectionError(lfs_message(path))
    return load_layout(path), path


def validate(source: Source, *, layout: Layout | Mapping[str, Any] | str | os.PathLike[str] | None = None,
             like: Source | None = None, scope: Patterns = (), exclude: Patterns = (), regex: bool = False,
             allow_extra: bool = False, allow_missing: Patterns = (), check_finite: bool = False,
             hash: bool | None = None, include_optimizer: bool = False,  # noqa: A002
             options: ConvertOptions | None = None, allow_globals: Patterns = (),
             progress: Progress | None = None) -> ValidationResult:
    """Check ``source`` against a layout lock (``layout``: a ``Layout``, its dict or a lock file) or a reference
    checkpoint (``like``, any format): ``ckptsurgeon validate``. Findings are returned, never raised; a file
    that cannot be read raises (the command reports it as a failure instead).

    ``hash``: compare values by sha256: with ``like``, hash both sides; a lock's recorded hashes are compared
    whenever it has them (``hash=False`` skips them). With ``like``, optimizer state is left out of both sides
    unless ``include_optimizer``.

    >>> import ckptsurgeon
    >>> ckptsurgeon.validate("model.pt", layout="model.layout.json").ok
    True
    >>> result = ckptsurgeon.validate("model.pt", layout="model.layout.json", exclude="head")
    >>> result.ok, [(f.kind, f.path) for f in result.findings]
    (False, [('missing', 'head/weight'), ('missing', 'head/bias')])
    >>> ckptsurgeon.validate("model.pt", like="model.ckpt").findings[0].message
    "recurrent group 'LSTMcell' (lstm) not found"
    """
    from .check.report import FileReport, render_reports
    from .check.validate import validate as check

    if (layout is None) == (like is None):
        raise TypeError("validate() takes exactly one of layout= (a lock from ckptsurgeon.layout) or like= (a reference)")
    opts = _options(options)
    optimizer = include_optimizer or layout is not None  # a lock lists what it lists
    if layout is not None:
        lock, ref_name = _lock(layout)
    else:
        from .check.layout import make_layout

        assert like is not None
        ref = _open(like, scope, exclude, regex, allow_globals, include_optimizer=optimizer)
        lock, ref_name = make_layout(ref, hash=bool(hash), options=opts, progress=progress), _name(like)
    index = _open(source, scope, exclude, regex, allow_globals, include_optimizer=optimizer)
    cases: list = []
    findings = check(index, lock, allow_extra=allow_extra, allow_missing=as_patterns(allow_missing, "allow_missing"),
                     check_finite=check_finite, check_hash=hash, options=opts, progress=progress, cases=cases)
    report = FileReport(_name(source), ref_name, findings, cases)
    return ValidationResult.from_dict(json.loads(render_reports([report], "json")))


def diff(a: Source, b: Source, *, scope: Patterns = (), exclude: Patterns = (), regex: bool = False, atol: float = 0.0,
         rtol: float = 0.0, options: ConvertOptions | None = None, allow_globals: Patterns = ()) -> DiffResult:
    """Compare two checkpoints of any formats (``ckptsurgeon diff``): tensors by path, recurrent groups by what
    they compute (pairing, facts, per-gate values, outputs on the same random inputs).

    >>> import ckptsurgeon
    >>> result = ckptsurgeon.diff("model.pt", "model.pt")
    >>> result.identical, result.verdict, [(g["a"], g["paired_by"]) for g in result.groups]
    (True, 'identical', [('encoder/rnn', 'scope'), ('decoder', 'scope')])
    """
    from .check.diff import diff as compare

    opts = _options(options)
    x = _open(a, scope, exclude, regex, allow_globals)
    y = _open(b, scope, exclude, regex, allow_globals)
    return DiffResult.from_dict(plain(compare(x, y, atol=atol, rtol=rtol, options=opts)))


def scan(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, allow_globals: Patterns = (),
         fail_on: str = "unsafe", jobs: int | None = None) -> ScanReport:
    """What loading each file would run, found without running anything (``ckptsurgeon scan``): a verdict per
    file (``clean``, ``code``, ``unsafe``); a folder is scanned whole, recursively; many files are scanned in
    ``jobs`` processes. ``failed`` is the command's exit 1: some file's verdict reaches ``fail_on`` (``unsafe``, or
    ``code`` for that too). A local path that does not exist raises ``CheckpointNotFoundError`` (the command
    reports it as an unreadable file); glob patterns are the caller's (``glob.glob(..., recursive=True)``).

    >>> import ckptsurgeon
    >>> report = ckptsurgeon.scan(["model.pt", "model.ckpt.index"])
    >>> report.ok, report.failed, [(f.file, f.format, f.level) for f in report.files]
    (True, False, [('model.pt', 'pytorch', 'clean'), ('model.ckpt.index', 'tensorflow', 'clean')])
    >>> [g["module"] + "." + g["name"] for g in report.files[0].pickles[0]["globals"]][:2]
    ['collections.OrderedDict', 'torch.FloatStorage']
    """
    from .check.scan import LEVELS, scan_files
    from .check.scan_report import fails, render_scan
    from .source import is_url

    if fail_on not in LEVELS[1:]:
        raise ValueError(f"fail_on={fail_on!r}: expected one of {', '.join(map(repr, LEVELS[1:]))}")
    names = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    for name in names:
        if not is_url(name) and not os.path.lexists(name):
            raise CheckpointNotFoundError(f"{name}: no such file or directory")
    results = scan_files(names, allow_globals=as_patterns(allow_globals, "allow_globals"), jobs=jobs)
    return ScanReport.from_dict(json.loads(render_scan(results, "json", fail_on)),
                                failed=any(fails(r.level, fail_on) for r in results))


def rnn(source: Source, *, scope: Patterns = (), exclude: Patterns = (), regex: bool = False,
        options: ConvertOptions | None = None, allow_globals: Patterns = ()) -> RnnResult:
    """The LSTM/GRU parameter groups of a checkpoint, each with its layout, sizes and every computation-relevant
    fact with its source (``ckptsurgeon rnn``). ``options`` declares facts a file does not state.

    >>> import ckptsurgeon
    >>> [(g.scope, g.kind, g.num_layers, g.directions) for g in ckptsurgeon.rnn("model.pt").groups]
    [('encoder/rnn', 'lstm', 2, 2), ('decoder', 'gru', 1, 1)]
    >>> group = ckptsurgeon.rnn("model.ckpt", scope="LSTMcell").groups[0]
    >>> group.variant, group.input_size, group.hidden_size, group.provenance["orientation"]
    ('hand-built per-gate LSTM', 3, 4, 'file: shapes (x @ W: wx is (in, H))')
    """
    from .rnn.recognize import recognize

    index = _open(source, scope, exclude, regex, allow_globals)
    return RnnResult.from_list(plain([g.describe() for g in recognize(index, _options(options))]))


def verify(source: Source, converted: Source, *, scope: Patterns = (), exclude: Patterns = (), regex: bool = False,
           atol: float = 1e-5, options: ConvertOptions | None = None, allow_globals: Patterns = ()) -> VerifyResult:
    """Run both checkpoints' recurrent groups on the same random inputs (``ckptsurgeon verify``); ``ok`` when
    every pair agrees within ``atol``. ``options`` (facts) apply to ``source`` only; ``converted`` states its own.

    >>> import ckptsurgeon
    >>> out = ckptsurgeon.extract("model.ckpt", "cell.safetensors", scope="LSTMcell", to="torch-cell",
    ...                           rename="LSTMcell/=")
    >>> result = ckptsurgeon.verify("model.ckpt", "cell.safetensors", scope="LSTMcell")
    >>> result.ok, [(p.source, p.converted, p.kind) for p in result.pairs]
    (True, [('LSTMcell', '', 'lstm')])
    """
    from .rnn.convert import ConvertOptions
    from .rnn.verify import verify as run

    opts = _options(options)
    a = _open(source, scope, exclude, regex, allow_globals)
    b = converted if isinstance(converted, CheckpointIndex) else open_checkpoint(converted, allow_globals=as_patterns(allow_globals))
    # the converted side: the same structural declarations, none of the source's facts (as the CLI)
    opts_b = ConvertOptions(orientation=opts.orientation, gate_names=opts.gate_names, var_names=opts.var_names)
    return VerifyResult.from_list(plain([r.as_dict() for r in run(a, b, atol=atol, options_a=opts, options_b=opts_b)]))
