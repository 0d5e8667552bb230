"""Analytics rule kinds, one module each; each registers as a variant of a camera's
``rules`` (``stages.track.kind``), like stage kinds do."""

from stages.track.rules.base import Rule, RuleConfig, register_rule
from stages.track.rules.crowd import CrowdRule, CrowdRuleConfig
from stages.track.rules.line import LineRule, LineRuleConfig
from stages.track.rules.zone import ZoneRule, ZoneRuleConfig

BUILTIN_RULES: tuple[type[Rule], ...] = (LineRule, ZoneRule, CrowdRule)
"""The rule kinds framechain ships, in the order the config lists them."""

__all__ = [
    "BUILTIN_RULES",
    "CrowdRule",
    "CrowdRuleConfig",
    "LineRule",
    "LineRuleConfig",
    "Rule",
    "RuleConfig",
    "ZoneRule",
    "ZoneRuleConfig",
    "register_rule",
]
