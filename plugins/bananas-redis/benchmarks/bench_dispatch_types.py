"""Server-side cost of the dispatcher's enqueue and take with type-aware queues (issue 15), against an older script.

    git show ee0404a:plugins/bananas-redis/src/bananas_redis/lua/dispatch.lua > /tmp/dispatch-0.1.lua
    python plugins/bananas-redis/benchmarks/bench_dispatch_types.py --old /tmp/dispatch-0.1.lua [--types 1,10,100]

Loads both scripts into one redis-server (started on a free loopback port) and calls them alternately on queues of
their own: an enqueue of 250 jobs, an enqueue of one job and five takes of 10, repeated. The jobs are spread
round-robin over K job types; the new script's takes are untyped (``*``) and typed (all K types plus ``""``, what a
catch-all worker asks for). Each call's execution time comes from ``SLOWLOG`` (Redis's own clock, no network, no
client), so the figures compare the scripts even on a busy machine better than end-to-end rates do; min and median
are printed, nothing is asserted. The old script only has untyped takes (one list per queue).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import redis
from bananas_redis.broker import SCRIPT
from bananas_redis.testing import RedisServer, find_redis_servers


def _keys(tag: str, new: bool) -> tuple[list[str], str]:
    t = "{" + tag + "}"
    keys = [t + ":ready", t + ":scheduled", t + ":leases", t + ":dead", t + ":seq", t + ":signal"]
    if new:
        keys += [t + ":types", t + ":count", t + ":wake", t + ":head"]
    return keys, t + ":job:"


def run(old_script: bytes, types: int, reps: int) -> dict[str, list[int]]:
    server = RedisServer(find_redis_servers()[0][1]).start()
    try:
        r = redis.Redis.from_url(server.url)
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 1_000_000)
        scripts = {"old": (r.script_load(old_script), False), "new": (r.script_load(SCRIPT), True),
                   "new-typed": (r.script_load(SCRIPT), True)}
        labels: dict[tuple[str, str], str] = {}
        seq = 0
        body = b"x" * 200
        for _ in range(reps):
            for name, (sha, new) in scripts.items():
                keys, job = _keys(name, new)
                n = len(keys)

                def args(count: int, new: bool = new) -> list[object]:
                    nonlocal seq
                    out: list[object] = []
                    for _ in range(count):
                        seq += 1
                        out += [f"i{seq}", body, ""] + ([f"t{seq % types}"] if new else [])
                    return out

                r.evalsha(sha, n, *keys, "enqueue", job, "1700000000", *args(250))
                r.evalsha(sha, n, *keys, "enqueue", job, "1700000000", *args(1))
                which: list[object] = []
                if name == "new":
                    which = ["*", ""]
                elif name == "new-typed":
                    which = ["=", "", *(f"t{k}" for k in range(types)), ""]
                for _ in range(5):
                    r.evalsha(sha, n, *keys, "take", job, "1700000000", "1700000030", 10, 100, "1700000100", *which)
        durations: dict[str, list[int]] = {}
        for entry in r.slowlog_get(1_000_000):
            parts = entry["command"].split()
            if len(parts) < 4 or parts[0] != b"EVALSHA":
                continue
            tag = parts[3].decode().split("}")[0].lstrip("{")
            n = 10 if tag.startswith("new") else 6
            command = parts[3 + n].decode()
            what = "take" if command == "take" else ("enqueue 250" if len(parts) > 25 else "enqueue 1")
            labels[(tag, what)] = f"{what:<11} {tag}"
            durations.setdefault(labels[(tag, what)], []).append(int(entry["duration"]))
        return durations
    finally:
        server.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, type=Path, help="the older dispatch.lua to compare with")
    ap.add_argument("--types", default="1,10,100", help="job types the jobs are spread over (comma-separated)")
    ap.add_argument("--reps", type=int, default=60)
    args = ap.parse_args()
    old = args.old.read_bytes()
    for k in (int(x) for x in args.types.split(",")):
        print(f"-- {k} job type(s): server-side µs per call (SLOWLOG), {args.reps} rounds")
        for label, values in sorted(run(old, k, args.reps).items()):
            print(f"{label:<24} min {min(values):>6}  median {statistics.median(values):>8.0f}  ({len(values)} calls)")


if __name__ == "__main__":
    main()
