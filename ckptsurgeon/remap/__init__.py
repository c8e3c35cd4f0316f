"""The remap engine: ordered rules -> a checked plan -> arrays."""
from __future__ import annotations

from .plan import Plan, PlanError, PlanRow, Remap
from .rules import Rule, load_rules, parse_map
from .transforms import OPS, Transform, parse_transform

__all__ = ["Remap", "Plan", "PlanRow", "PlanError", "Rule", "load_rules", "parse_map", "Transform", "parse_transform", "OPS"]
