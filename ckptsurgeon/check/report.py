"""Validation and scan findings as text, JSON, GitHub workflow annotations or JUnit XML."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from .validate import KINDS, Finding

if TYPE_CHECKING:
    pass

__all__ = ["render", "FORMATS", "format_counts", "escape_github", "escape_property", "junit_suite"]

FORMATS = ("text", "json", "github", "junit")


def escape_github(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_github(text).replace(":", "%3A").replace(",", "%2C")


def render(findings: Sequence[Finding], fmt: str, *, checkpoint: str, reference: str) -> str:
    if fmt == "json":
        return json.dumps({"checkpoint": checkpoint, "reference": reference, "ok": not findings,
                           "findings": [f.as_dict() for f in findings]}, indent=2, default=str)
    if fmt == "github":
        lines = [f"::error file={escape_property(checkpoint)},title=ckptsurgeon {f.kind}::{escape_github(f.message)}"
                 for f in findings]
        lines.append(f"::notice file={escape_property(checkpoint)},title=ckptsurgeon::"
                     + (f"{len(findings)} finding(s) against {reference}" if findings else f"matches {reference}"))
        return "\n".join(lines)
    if fmt == "junit":
        suite = junit_suite(None, "ckptsurgeon validate", checkpoint, KINDS, findings)
        return ET.tostring(suite, encoding="unicode", xml_declaration=True)
    if not findings:
        return f"ok: {checkpoint} matches {reference}"
    lines = [f"{f.kind:<10} {f.message}" for f in findings]
    lines.append(f"{len(findings)} finding(s): {checkpoint} does not match {reference}")
    return "\n".join(lines)


def junit_suite(parent: ET.Element | None, name: str, file: str, kinds: Sequence[str], findings: Sequence[Finding]) -> ET.Element:
    attrs = dict(name=name, tests=str(len(kinds)), failures=str(len({f.kind for f in findings})), errors="0")
    suite = ET.Element("testsuite", attrs) if parent is None else ET.SubElement(parent, "testsuite", attrs)
    for kind in kinds:
        case = ET.SubElement(suite, "testcase", classname=f"ckptsurgeon.{file}", name=kind)
        found = [f for f in findings if f.kind == kind]
        if found:
            failure = ET.SubElement(case, "failure", type=kind, message=f"{len(found)} {kind} finding(s)")
            failure.text = "\n".join(f.message for f in found)
    return suite


def format_counts(counter: dict) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counter.items()))
