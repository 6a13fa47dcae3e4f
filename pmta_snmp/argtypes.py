"""argparse value types shared by the `pmta-snmp` commands and the check plugins.

Kept apart from both so that neither imports the other's dependencies (the plugins'
nagiosplugin, the agent's command set) to validate a number.
"""

from __future__ import annotations

import argparse
import math


def nonneg_int(text: str) -> int:
    """An int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


MAX_LIST_ITEMS = 1_000_000
"""Largest `--max-list-items` / `pmta.max_list_items` (the API client's bound too)."""
DEFAULT_LIST_ITEMS = 10_000
"""Default `--max-list-items` (the API client's DEFAULT_MAX_LIST_ITEMS; a test keeps them
equal without the client's imports here)."""


def list_items(text: str) -> int:
    """`--max-list-items`: 0..MAX_LIST_ITEMS."""
    value = nonneg_int(text)
    if value > MAX_LIST_ITEMS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_LIST_ITEMS}: {text!r}")
    return value


def nonneg_float(text: str) -> float:
    """A finite float >= 0 (timeouts, minutes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0 or math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number >= 0: {text!r}")
    return value
