"""Environment variables that look like settings but match none: reported, with "did you mean", not ignored.

A ``BANANAS_*`` variable is Bananas' own namespace: any set one that is neither a setting nor a process variable
(:data:`PROCESS_ENV`) is reported. A seed-style variable (``WORKER_*``, ``LOG_*``, ``JOB_*`` … — the first word of
a setting's plain name) is reported only when it is close to a real name (``WORKER_CONCURENCY``), since other
programs share those prefixes. Reports are warnings (the worker logs them at start, ``bananas config`` prints them):
a stale variable left over after an upgrade must not stop a deployment.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

__all__ = ["PROCESS_ENV", "PROCESS_ENV_PREFIXES", "unknown_env"]

PROCESS_ENV = frozenset(
    {
        "BANANAS_CONFIG",  # the config file
        "BANANAS_LOAD_PLUGINS",  # plugin loading (see bananas._manager)
        "BANANAS_DISABLE_PLUGINS",
        "BANANAS_TRACE_PLUGINS",
        "BANANAS_WORKER_CHILD",  # set by the supervisor for its children
    }
)
"""``BANANAS_*`` variables that are not settings but are read by the process itself."""

PROCESS_ENV_PREFIXES = ("BANANAS_TEST_", "BANANAS_BENCH_")
"""Prefixes of variables the test suites and benchmarks read."""


def unknown_env(env: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """One warning per set variable that looks like a setting but is none, sorted by name."""
    known = set(known)
    ours = sorted(name for name in known if name.startswith("BANANAS_"))
    plain = sorted(name for name in known if not name.startswith("BANANAS_"))
    seed_prefixes = {name.split("_", 1)[0] + "_" for name in plain}
    warnings = []
    for name in sorted(env):
        if name in known or name in PROCESS_ENV or name.startswith(PROCESS_ENV_PREFIXES) or not env[name].strip():
            continue
        if name.startswith("BANANAS_"):  # compared without the shared prefix, which would make everything close
            tails = {known_name[8:]: known_name for known_name in ours}
            close = [tails[t] for t in difflib.get_close_matches(name[8:], list(tails), n=1, cutoff=0.8)]
        elif name.split("_", 1)[0] + "_" in seed_prefixes:
            close = difflib.get_close_matches(name, plain, n=1, cutoff=0.85)
            if not close:
                continue
        else:
            continue
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"environment variable {name} matches no setting and is ignored{hint}")
    return warnings
