"""Header names and other constants shared by the producer (:mod:`bananas.app`) and the worker runtime.

A neutral module: it imports nothing from ``bananas``, so both sides read the same names without importing each
other.
"""

from __future__ import annotations

__all__ = ["DEFAULTED_RETRIES_HEADER"]

DEFAULTED_RETRIES_HEADER = "bananas-defaulted-retries"
"""Set on jobs whose ``max_retries`` came from the producer's config, so the worker's handler default wins."""
