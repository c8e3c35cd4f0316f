"""A fuzzing campaign: mutate seeds, run every command on every mutant, collect failures, shrink each
new one to a small reproducer and save it (``reproducers/<format>-<kind>-<hash>/``).

    .venv/bin/python -m tests.fuzz.campaign --seconds 3600 --seed 7     # or FUZZ_SECONDS=3600
    .venv/bin/python -m tests.fuzz.campaign --cases 40 --seed 1         # fixed work (what CI runs)

Formats are the readers' formats plus three classes of seeds (issue 23), each file mutated as its own format:
``rnn`` (recurrent groups whose tensors do not fit their layout), ``nonfinite`` (inf/nan/1e38 weights) and
``remote`` (a file served over loopback HTTP by an honest or a lying server, ``remote.py``; only ``ls``, ``extract``
and ``scan`` read URLs). A class's first cases are its seeds as made (a remote seed once per server mode), then
mutants. ``--commands all`` runs every command of ``harness.COMMANDS``, rnn/stats/verify/diff/validate included.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(HERE.parent.parent))
    __package__ = "tests.fuzz"

from .harness import ALL_COMMANDS, WRITE_COMMANDS, Limits, Outcome, read_files, run_case, write_files  # noqa: E402
from .mutators import mutate  # noqa: E402
from .remote import MODES, RemoteRig, set_timeouts  # noqa: E402
from .seeds import CLASSES, FORMATS, Seed, load_seeds  # noqa: E402

REPRODUCERS = HERE / "reproducers"
MAX_SHRINK_RUNS = 120
REMOTE_COMMANDS = ("ls", "extract", "scan")  # the commands that read a URL


def _fails_the_same(seed: Seed, files: dict[str, bytes], command: str, signature: str, limits: Limits,
                    serve=None) -> bool:
    (outcome,) = run_case(seed, files, [command], limits, serve=serve)
    return outcome.failed and outcome.signature == signature


def shrink(seed: Seed, files: dict[str, bytes], outcome: Outcome, limits: Limits, serve=None) -> dict[str, bytes]:
    """Smaller files that fail the same way: bytes put back as in the seed, tails cut, chunks dropped."""
    budget = [MAX_SHRINK_RUNS if outcome.kind != "timeout" else 6]

    def same(candidate: dict[str, bytes]) -> bool:
        if budget[0] <= 0:
            return False
        budget[0] -= 1
        return _fails_the_same(seed, candidate, outcome.command, outcome.signature, limits, serve)

    files = dict(files)
    for name in list(files):
        data, base = files[name], seed.files.get(name, b"")
        if data == base:
            continue
        if len(data) == len(base):  # revert differing bytes, half of the remaining differences at a time
            diff = [i for i in range(len(data)) if data[i] != base[i]]
            step = max(1, len(diff) // 2)
            while diff and budget[0] > 0:
                changed = False
                for k in range(0, len(diff), step):
                    trial = bytearray(files[name])
                    for i in diff[k:k + step]:
                        trial[i] = base[i]
                    if same({**files, name: bytes(trial)}):
                        files[name] = bytes(trial)
                        diff = [i for i in diff if files[name][i] != base[i]]
                        changed = True
                        break
                if not changed:
                    if step == 1:
                        break
                    step = max(1, step // 2)
        chunk = max(1, len(files[name]) // 2)
        while chunk >= 1 and budget[0] > 0:  # cut the tail, then drop chunks
            data = files[name]
            if len(data) > chunk and same({**files, name: data[:-chunk]}):
                files[name] = data[:-chunk]
                continue
            chunk //= 2
    return files


def save(seed: Seed, files: dict[str, bytes], outcome: Outcome, note: str, folder: Path = REPRODUCERS,
         mode: str = "") -> Path:
    """The shrunk files, ``case.json`` (command, signature, remote ``mode``) and, in ``ref/``, the unmutated seed
    that verify/diff/validate compare with."""
    digest = hashlib.sha256(b"".join(files[n] for n in sorted(files))).hexdigest()[:10]
    out = folder / f"{seed.fmt}-{outcome.command}-{outcome.kind}-{digest}"
    out.mkdir(parents=True, exist_ok=True)
    write_files(out, files)
    if outcome.command in ("verify", "diff", "validate"):
        (out / "ref").mkdir(exist_ok=True)
        write_files(out / "ref", seed.files)
    (out / "case.json").write_text(json.dumps({
        "format": seed.fmt, "seed": seed.name, "target": seed.target, "mutator": seed.mutator, "mode": mode,
        "command": outcome.command, "signature": outcome.signature, "mutation": note,
        "stderr": outcome.stderr[-500:]}, indent=1) + "\n")
    return out


def known_signatures(folder: Path = REPRODUCERS) -> set[str]:
    found = set()
    for case in folder.glob("*/case.json"):
        info = json.loads(case.read_text())
        found.add(f"{info['format']}|{info['signature']}")
    return found


def replay(folder: Path, commands: list[str], limits: Limits) -> dict:
    """Run every saved reproducer again (``commands`` if its own is one of them, else its own command only; a remote
    one behind its server mode); each must now give a clean outcome."""
    failures, count = [], 0
    with RemoteRig() as rig:
        for case in sorted(folder.glob("*/case.json")):
            info = json.loads(case.read_text())
            files = read_files(case.parent, skip=("case.json", "ref"))
            ref = case.parent / "ref"
            ref_files = read_files(ref) if ref.is_dir() else files
            seed = Seed(info["format"], info["seed"], ref_files, info["target"], info.get("mutator", ""))
            mode = info.get("mode", "")
            serve = rig.serving(mode, seed.target) if mode else None
            # a reader's reproducer goes through every reader command; one of rnn/stats/verify/diff/validate only
            # through its own (its file is an ordinary mutant for the readers, fuzzed all the time)
            todo = [c for c in commands if not mode or c in REMOTE_COMMANDS] if info["command"] in commands else []
            todo += [info["command"]] if info["command"] not in todo else []
            for outcome in run_case(seed, files, todo, limits, serve=serve):
                count += 1
                if outcome.failed:
                    failures.append({"reproducer": case.parent.name, **outcome.as_dict()})
    return {"reproducers": len(list(folder.glob("*/case.json"))), "total_executions": count, "failures": failures,
            "unique_failures": sorted({f"{f['reproducer']}|{f['command']}:{f['kind']}" for f in failures})}


def run(*, seed: int, seconds: float | None, cases: int | None, formats: tuple[str, ...], commands: list[str],
        limits: Limits, save_new: bool, log=print, max_seconds: float | None = None,
        remote_commands: tuple[str, ...] = REMOTE_COMMANDS, cases_for: dict[str, int] | None = None) -> dict:
    """Fuzz until ``seconds`` pass or ``cases`` cases per format (``cases_for[format]`` for some) ran (at most
    ``max_seconds``)."""
    cases_for = cases_for or {}
    rng = random.Random(seed)
    seeds = [s for s in load_seeds() if s.fmt in formats]
    by_format = defaultdict(list)
    for s in seeds:
        by_format[s.fmt].append(s)
    counts: Counter = Counter()
    executions: Counter = Counter()
    by_command: Counter = Counter()
    kinds: Counter = Counter()
    kinds_by_command: dict[str, Counter] = defaultdict(Counter)
    modes: Counter = Counter()
    failures: list[dict] = []
    seen = known_signatures() if save_new else set()
    start = time.monotonic()
    order = [f for f in formats if f in by_format]
    rig = RemoteRig().__enter__() if "remote" in order else None
    numeric = 0.15 if set(commands) & {"rnn", "stats", "verify", "diff", "validate"} else 0.0  # inf/nan mutants
    i = 0
    try:
        while True:
            if seconds is not None and time.monotonic() - start > seconds:
                break
            if max_seconds is not None and time.monotonic() - start > max_seconds:
                log(f"stopping at the {max_seconds:g} s cap")
                break
            if cases is not None and all(counts[f] >= cases_for.get(f, cases) for f in order):
                break
            fmt = order[i % len(order)]
            i += 1
            if cases is not None and counts[fmt] >= cases_for.get(fmt, cases):
                continue
            n, pool = counts[fmt], by_format[fmt]
            serve, mode, todo = None, "", commands
            if fmt == "remote":
                mode = list(MODES)[n % len(MODES)] if n < len(MODES) else RemoteRig.pick(rng)
                base = pool[n % len(pool)] if n < len(MODES) else rng.choice(pool)
                todo = [c for c in remote_commands if c in REMOTE_COMMANDS]
                serve = rig.serving(mode, base.target)
            else:
                base = pool[n] if fmt in CLASSES and n < len(pool) else rng.choice(pool)
            as_made = fmt in CLASSES and (n < len(MODES) if fmt == "remote" else n < len(pool))
            if as_made or (fmt == "remote" and rng.random() < 0.3):
                files, note = dict(base.files), "as made"
            else:
                files, note = mutate(base.kind, dict(base.files), rng, values=0.5 if fmt in CLASSES else numeric)
            if mode:
                note = f"[{mode}] {note}"
                modes[mode] += 1
            counts[fmt] += 1
            outcomes = run_case(base, files, todo, limits, serve=serve)
            executions[fmt] += len(outcomes)
            saved_here: set[str] = set()  # a reader's failure shows in every command: one reproducer per case
            for outcome in outcomes:
                kinds[outcome.kind] += 1
                by_command[outcome.command] += 1
                kinds_by_command[outcome.command][outcome.kind] += 1
                if not outcome.failed:
                    continue
                key = f"{fmt}|{outcome.signature}"
                record = {"format": fmt, "seed": base.name, "mutation": note, **outcome.as_dict()}
                if key not in seen:
                    seen.add(key)
                    log(f"NEW {key}  ({base.name}: {note})  {outcome.stderr[-300:]!r}")
                    same = f"{outcome.kind}:{outcome.detail}"
                    if save_new and same not in saved_here:
                        saved_here.add(same)
                        small = shrink(base, files, outcome, limits, serve)
                        record["reproducer"] = str(save(base, small, outcome, note, mode=mode))
                        record["reproducer_bytes"] = sum(len(d) for d in small.values())
                failures.append(record)
    finally:
        if rig is not None:
            rig.__exit__(None, None, None)
    elapsed = time.monotonic() - start
    return {"seed": seed, "seconds": round(elapsed, 1), "mutants": dict(counts), "executions": dict(executions),
            "total_executions": sum(executions.values()), "executions_by_command": dict(by_command),
            "outcomes": dict(kinds), "outcomes_by_command": {c: dict(k) for c, k in sorted(kinds_by_command.items())},
            "remote_modes": dict(modes), "failures": failures,
            "unique_failures": sorted({f"{f['format']}|{f['command']}:{f['kind']}:{f['detail']}" for f in failures})}


def atheris_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("atheris") is not None


def run_atheris(*, seconds: float, formats: tuple[str, ...], commands: list[str], limits: Limits, save_new: bool,
                log=print) -> dict:
    """Coverage-guided fuzzing (``coverage.py``) of each pure-Python reader for a share of ``seconds``;
    every artifact libFuzzer keeps is replayed through the CLI harness, shrunk and saved if it fails there."""
    import re
    import subprocess
    import tempfile

    from .coverage import TARGETS

    todo = [f for f in formats if f in TARGETS]
    seeds = {s.fmt: s for s in reversed(load_seeds())}
    executions: Counter = Counter()
    failures: list[dict] = []
    seen = known_signatures() if save_new else set()
    for fmt in todo:
        seed = seeds[fmt]
        name = seed.target or next(n for n in seed.files if n.endswith(".index"))
        with tempfile.TemporaryDirectory(prefix="ckath-") as work:
            corpus, artifacts = Path(work, "corpus"), Path(work, "artifacts")
            corpus.mkdir()
            artifacts.mkdir()
            for s in load_seeds():
                if s.fmt == fmt and (s.target or name) in s.files:
                    (corpus / s.name).write_bytes(s.files[s.target or name])
            per = max(10, int(seconds / len(todo)))
            proc = subprocess.run(
                [sys.executable, "-m", "tests.fuzz.coverage", fmt, str(corpus), f"-max_total_time={per}",
                 f"-timeout={int(limits.seconds)}", f"-rss_limit_mb={limits.memory_mib}", "-print_final_stats=1",
                 f"-artifact_prefix={artifacts}/", "-close_fd_mask=3"],
                cwd=HERE.parent.parent, capture_output=True, text=True, timeout=per + 300,
                env={**os.environ, "CKCOV_DIR": work})
            m = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
            executions[fmt] = int(m.group(1)) if m else 0
            log(f"atheris {fmt}: {executions[fmt]} executions, {len(list(artifacts.iterdir()))} artifacts")
            for artifact in sorted(artifacts.iterdir()):
                files = {**seed.files, name: artifact.read_bytes()}
                for outcome in run_case(seed, files, commands, limits):
                    if not outcome.failed:
                        continue
                    key = f"{fmt}|{outcome.signature}"
                    record = {"format": fmt, "seed": seed.name, "mutation": f"atheris {artifact.name}",
                              **outcome.as_dict()}
                    if key not in seen:
                        seen.add(key)
                        log(f"NEW (atheris) {key}  {outcome.stderr[-300:]!r}")
                        if save_new:
                            small = shrink(seed, files, outcome, limits)
                            record["reproducer"] = str(save(seed, small, outcome, record["mutation"]))
                    failures.append(record)
    return {"atheris_executions": dict(executions), "atheris_total": sum(executions.values()), "failures": failures}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")))
    ap.add_argument("--seconds", type=float, default=float(os.environ["FUZZ_SECONDS"]) if os.environ.get("FUZZ_SECONDS") else None)
    ap.add_argument("--cases", type=int, default=None, help="mutants per format (instead of --seconds)")
    ap.add_argument("--cases-for", default="", help="other counts for some formats: remote=4,rnn=7")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--commands", default="ls,extract,scan",
                    help="comma-separated; 'all' (harness.ALL_COMMANDS: the readers') and 'writers' (to-flax, to-paddle, "
                         "to-paddle-cell, graft-flax, cut-flax) name groups")
    ap.add_argument("--remote-commands", default=",".join(REMOTE_COMMANDS),
                    help="what remote cases run (of ls,extract,scan: the commands that read URLs)")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--memory-mib", type=int, default=2048)
    ap.add_argument("--no-save", action="store_true", help="do not shrink and save new failures")
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    ap.add_argument("--max-seconds", type=float, default=None, help="stop a --cases run after this long")
    ap.add_argument("--replay", type=Path, nargs="?", const=REPRODUCERS, help="re-run saved reproducers instead")
    ap.add_argument("--atheris-share", type=float, default=0.25,
                    help="with --seconds and atheris installed: this share of the time goes to coverage-guided fuzzing")
    args = ap.parse_args(argv)
    if args.seconds is None and args.cases is None:
        args.cases = 40
    os.environ.setdefault("CKPTSURGEON_HDF5_TIMEOUT", str(max(1.0, args.timeout / 3)))
    import h5py  # noqa: F401 - loaded once here so that every forked case starts with it
    import importlib

    import ckptsurgeon.cli
    import ckptsurgeon.formats

    # Every subcommand and reader now, not lazily in each case: faster, and no case ever reads source
    # files from disk (a checkout changing during a campaign would otherwise be half imported).
    for module, _attr, _help in ckptsurgeon.cli.COMMANDS.values():
        importlib.import_module(f"ckptsurgeon.cli.{module}")
    ckptsurgeon.formats.load_all()
    import ckptsurgeon.check.scan  # noqa: F401
    import ckptsurgeon.formats.pickles  # noqa: F401
    import ckptsurgeon.formats.hdf5.h5probe  # noqa: F401

    named = {"all": ALL_COMMANDS, "writers": WRITE_COMMANDS}
    args.commands = ",".join(c for part in args.commands.split(",") for c in named.get(part, (part,)))
    set_timeouts()  # remote cases: a stalling server costs a second, not the harness's time limit
    import ckptsurgeon.remote  # noqa: F401
    import ckptsurgeon.remote_http  # noqa: F401
    import fsspec.implementations.http  # noqa: F401

    limits = Limits(args.timeout, args.memory_mib)
    if args.replay:
        report = replay(args.replay, args.commands.split(","), limits)
    else:
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        formats, commands = tuple(args.formats.split(",")), args.commands.split(",")
        share = args.atheris_share if args.seconds and atheris_available() else 0.0
        mutation_seconds = args.seconds * (1 - share) if args.seconds else None
        report = run(seed=args.seed, seconds=mutation_seconds, cases=args.cases, formats=formats, commands=commands,
                     limits=limits, save_new=not args.no_save, log=log, max_seconds=args.max_seconds,
                     remote_commands=tuple(args.remote_commands.split(",")),
                     cases_for={f: int(n) for f, _, n in (x.partition("=") for x in args.cases_for.split(",") if x)})
        if share:
            extra = run_atheris(seconds=args.seconds * share, formats=formats, commands=commands, limits=limits,
                                save_new=not args.no_save, log=log)
            report["failures"] += extra.pop("failures")
            report.update(extra)
            report["unique_failures"] = sorted({f"{f['format']}|{f['command']}:{f['kind']}:{f['detail']}"
                                                for f in report["failures"]})
    text = json.dumps(report, indent=1)
    if args.report:
        args.report.write_text(text + "\n")
    summary = {k: v for k, v in report.items() if k != "failures"}
    print(json.dumps(summary, indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
