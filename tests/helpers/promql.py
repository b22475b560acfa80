"""The metric names a PromQL expression reads, found by taking out what is not one: strings,
label matchers, ranges, groupings, numbers, and PromQL's own functions and keywords."""

from __future__ import annotations

import re

# Aggregations, binary keywords and modifiers, and the functions the dashboard and the rules use
# (any other name reads as a metric and fails, so a new function is added here on purpose).
KEYWORDS = frozenset(
    re.findall(
        r"\w+",
        """
        sum avg min max count stddev stdvar topk bottomk quantile count_values group
        and or unless by without on ignoring group_left group_right bool offset
        rate irate increase delta deriv histogram_quantile clamp_min clamp_max abs
        label_values label_replace vector scalar time timestamp
        avg_over_time max_over_time min_over_time sum_over_time
        """,
    )
)
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPINGS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VARS = re.compile(r"\$\{?\w+(:\w+)?\}?")
_IDENTIFIERS = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBERS = re.compile(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b")


# `{__name__=~"a|b"}`: names chosen by a matcher (plain alternatives only).
_NAME_MATCHER = re.compile(r'__name__\s*=~?\s*"([A-Za-z0-9_:|]+)"')


def metric_names(expr: str) -> set[str]:
    named = {n for group in _NAME_MATCHER.findall(expr) for n in group.split("|")}
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GRAFANA_VARS.sub(" ", text)
    text = _GROUPINGS.sub(r" \1 ", text)
    text = _NUMBERS.sub(" ", text)
    return named | {name for name in _IDENTIFIERS.findall(text) if name not in KEYWORDS}
