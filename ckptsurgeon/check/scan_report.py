"""``scan`` results as text, JSON, GitHub workflow annotations or JUnit XML, each file with its verdict.

``fail_on`` is the verdict that fails the run (``unsafe``, or ``code`` as well): findings at or above it are
errors (annotations ``::error``, JUnit failures), findings below it are told as warnings (``::warning``, the
test case's ``system-out``).
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from xml.etree import ElementTree as ET

from .report import format_counts, escape_github, escape_property, junit_suite
from .scan import LEVELS, SCAN_KINDS, ScanResult, finding_level, level_of

__all__ = ["render_scan", "fails"]


def fails(level: str, fail_on: str) -> bool:
    """Whether a verdict fails a run that fails on ``fail_on``."""
    return LEVELS.index(level) >= LEVELS.index(fail_on)


def _verdict(r: ScanResult) -> str:
    return "clean" if r.ok else f"{r.level}: {len(r.findings)} finding(s)"


def render_scan(results: Sequence[ScanResult], fmt: str, fail_on: str = "unsafe") -> str:
    """``scan`` results of several files in one report."""
    bad = [r for r in results if not r.ok]
    worst = level_of([f for r in results for f in r.findings])
    if fmt == "json":
        return json.dumps({"ok": not bad, "level": worst, "fail_on": fail_on,
                           "files": [r.as_dict() for r in results]}, indent=2, default=str)
    if fmt == "github":
        lines = [f"::{'error' if fails(finding_level(f), fail_on) else 'warning'} file={escape_property(r.file)},"
                 f"title=ckptsurgeon scan {f.kind}::{escape_github(f.message)}" for r in results for f in r.findings]
        lines.append("::notice title=ckptsurgeon scan::" + (f"{len(bad)} of {len(results)} file(s) have findings ("
                                                            f"{_levels(results)})" if bad else f"{len(results)} file(s) clean"))
        return "\n".join(lines)
    if fmt == "junit":
        root = ET.Element("testsuites", name="ckptsurgeon scan")
        for r in results:
            failing = [f for f in r.findings if fails(finding_level(f), fail_on)]
            suite = junit_suite(root, f"ckptsurgeon scan {r.file}", r.file, SCAN_KINDS, failing)
            props = ET.Element("properties")
            ET.SubElement(props, "property", name="level", value=r.level)
            suite.insert(0, props)
            told = [f for f in r.findings if not fails(finding_level(f), fail_on)]
            for case in suite.findall("testcase"):
                mine = [f.message for f in told if f.kind == case.get("name")]
                if mine:
                    ET.SubElement(case, "system-out").text = "\n".join(mine)
        return ET.tostring(root, encoding="unicode", xml_declaration=True)
    lines = []
    for r in results:
        lines.append(f"{r.file}: {r.format or 'unknown format'}, {len(r.pickles)} pickle(s)")
        for p in r.pickles:
            lines.append(f"  {p.where} ({p.nbytes:,} bytes)")
            names = {f"{m}.{n}": c for (m, n), c in p.globals.items()}
            lines.append(f"    globals: {format_counts(names) or 'none'}")
            lines.append("    opcodes: " + "; ".join(f"{cls} ({format_counts(ops)})" for cls, ops in sorted(p.opcodes.items())))
        for f in r.findings:
            lines.append(f"  {f.kind:<8} {f.message}")
        if r.files:
            counts = Counter(v.level for v in r.files)
            lines.append(f"  {len(r.files)} file(s): " + ", ".join(f"{counts[lv]} {lv}" for lv in LEVELS if counts[lv]))
            lines += [f"    {v.level:<8} {v.file}" for v in r.files if v.level != "clean"]
        lines.append(f"  {_verdict(r)}")
    lines.append(f"{len(bad)} of {len(results)} file(s) with findings" if bad else f"ok: {len(results)} file(s) clean")
    return "\n".join(lines)


def _levels(results: Sequence[ScanResult]) -> str:
    counts = Counter(r.level for r in results)
    return ", ".join(f"{counts[lv]} {lv}" for lv in reversed(LEVELS) if counts[lv] and lv != "clean")
