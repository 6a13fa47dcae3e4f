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


def nonneg_float(text: str) -> float:
    """A finite float >= 0 (timeouts, minutes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0 or math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number >= 0: {text!r}")
    return value
