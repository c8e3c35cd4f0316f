"""Validation and scan findings as text, JSON, GitHub workflow annotations or JUnit XML."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from .validate import KINDS, Finding

if TYPE_CHECKING:
    from .scan import ScanResult

__all__ = ["render", "render_scan", "FORMATS"]

FORMATS = ("text", "json", "github", "junit")


def _escape_github(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_github(text).replace(":", "%3A").replace(",", "%2C")


def render(findings: Sequence[Finding], fmt: str, *, checkpoint: str, reference: str) -> str:
    if fmt == "json":
        return json.dumps({"checkpoint": checkpoint, "reference": reference, "ok": not findings,
                           "findings": [f.as_dict() for f in findings]}, indent=2, default=str)
    if fmt == "github":
        lines = [f"::error file={_escape_property(checkpoint)},title=ckptsurgeon {f.kind}::{_escape_github(f.message)}"
                 for f in findings]
        lines.append(f"::notice file={_escape_property(checkpoint)},title=ckptsurgeon::"
                     + (f"{len(findings)} finding(s) against {reference}" if findings else f"matches {reference}"))
        return "\n".join(lines)
    if fmt == "junit":
        suite = _junit_suite(None, "ckptsurgeon validate", checkpoint, KINDS, findings)
        return ET.tostring(suite, encoding="unicode", xml_declaration=True)
    if not findings:
        return f"ok: {checkpoint} matches {reference}"
    lines = [f"{f.kind:<10} {f.message}" for f in findings]
    lines.append(f"{len(findings)} finding(s): {checkpoint} does not match {reference}")
    return "\n".join(lines)


def _junit_suite(parent: ET.Element | None, name: str, file: str, kinds: Sequence[str], findings: Sequence[Finding]) -> ET.Element:
    attrs = dict(name=name, tests=str(len(kinds)), failures=str(len({f.kind for f in findings})), errors="0")
    suite = ET.Element("testsuite", attrs) if parent is None else ET.SubElement(parent, "testsuite", attrs)
    for kind in kinds:
        case = ET.SubElement(suite, "testcase", classname=f"ckptsurgeon.{file}", name=kind)
        found = [f for f in findings if f.kind == kind]
        if found:
            failure = ET.SubElement(case, "failure", type=kind, message=f"{len(found)} {kind} finding(s)")
            failure.text = "\n".join(f.message for f in found)
    return suite


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counter.items()))


def render_scan(results: Sequence[ScanResult], fmt: str) -> str:
    """``scan`` results of several files in one report."""
    from .scan import SCAN_KINDS

    bad = [r for r in results if not r.ok]
    if fmt == "json":
        return json.dumps({"ok": not bad, "files": [r.as_dict() for r in results]}, indent=2, default=str)
    if fmt == "github":
        lines = [f"::error file={_escape_property(r.file)},title=ckptsurgeon scan {f.kind}::{_escape_github(f.message)}"
                 for r in results for f in r.findings]
        lines.append("::notice title=ckptsurgeon scan::" + (f"{len(bad)} of {len(results)} file(s) have findings"
                                                            if bad else f"{len(results)} file(s) clean"))
        return "\n".join(lines)
    if fmt == "junit":
        root = ET.Element("testsuites", name="ckptsurgeon scan")
        for r in results:
            _junit_suite(root, f"ckptsurgeon scan {r.file}", r.file, SCAN_KINDS, r.findings)
        return ET.tostring(root, encoding="unicode", xml_declaration=True)
    lines = []
    for r in results:
        lines.append(f"{r.file}: {r.format or 'unknown format'}, {len(r.pickles)} pickle(s)")
        for p in r.pickles:
            lines.append(f"  {p.where} ({p.nbytes:,} bytes)")
            names = {f"{m}.{n}": c for (m, n), c in p.globals.items()}
            lines.append(f"    globals: {_counts(names) or 'none'}")
            lines.append("    opcodes: " + "; ".join(f"{cls} ({_counts(ops)})" for cls, ops in sorted(p.opcodes.items())))
        for f in r.findings:
            lines.append(f"  {f.kind:<8} {f.message}")
        lines.append(f"  {'ok' if r.ok else f'{len(r.findings)} finding(s)'}")
    lines.append(f"{len(bad)} of {len(results)} file(s) with findings" if bad else f"ok: {len(results)} file(s) clean")
    return "\n".join(lines)
