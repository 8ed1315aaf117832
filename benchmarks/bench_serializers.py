"""Encode/decode time and size of a whole job for every installed serializer, at 1 KB, 10 KB and 100 KB payloads.

    python benchmarks/bench_serializers.py [--repeat 7] [--markdown]

Each row goes through the kernel's ``JobCodec`` (frame included), so it is what a producer and a worker pay per
job: ``encode`` is ``codec.encode(job)``, ``decode`` is ``codec.decode(body)``, ``bytes`` is the stored body. The
payload is a list of user-like records (ints, floats, short strings, booleans, a nested list), grown until its
compact JSON is about the target size. Times are the best of ``--repeat`` runs of ``timeit``'s auto-ranged loop,
in µs per job. A second table prices the values beyond JSON (``docs/SERIALIZERS.md``, "Values beyond JSON"): 20
records that each hold an aware ``datetime``, a ``date``, a ``UUID`` and a ``Decimal``, against the same records with
those values as strings. A last table compares the two payload encodings protobuf could use: JSON bytes (shipped)
and ``google.protobuf.Struct`` (not shipped: it turns every number into a double). Never run in CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import timeit
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from bananas import Bananas
from bananas.job import Job
from bananas.serializer import JobCodec

SIZES = {"1 KB": 1_000, "10 KB": 10_000, "100 KB": 100_000}


def record(i: int) -> dict[str, Any]:
    return {
        "id": 100_000 + i,
        "name": f"user {i}",
        "email": f"user{i}@example.com",
        "score": round(i * 1.37, 2),
        "active": i % 3 != 0,
        "tags": ["alpha", "beta", "gamma"][: i % 4],
        "visits": [i, i * 2, i * 3],
    }


def payload(target: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    while len(json.dumps({"rows": rows}, separators=(",", ":"))) < target:
        rows.append(record(len(rows)))
    return {"request_id": "r-42", "rows": rows}


def typed_record(i: int, as_text: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        "at": datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=i),
        "day": date(2024, 5, 1) + timedelta(days=i),
        "order": uuid.UUID(int=i + 1),
        "amount": Decimal(f"{i}.90"),
    }
    if as_text:
        values = {key: v.isoformat() if hasattr(v, "isoformat") else str(v) for key, v in values.items()}
    return {"id": i, **values}


def typed_rows(repeat: int) -> list[dict[str, Any]]:
    only = {"BANANAS_LOAD_PLUGINS": "bananas-json,bananas-msgpack,bananas-protobuf"}
    serializers = Bananas(broker="memory://bench", env=only).plugins.serializers
    typed = Job(name="bench.orders", payload={"rows": [typed_record(i, False) for i in range(20)]})
    text = Job(name="bench.orders", payload={"rows": [typed_record(i, True) for i in range(20)]})
    out = []
    for name in serializers:
        codec = JobCodec(serializers.get(name).factory(), serializers)
        row: dict[str, Any] = {"serializer": name}
        for label, job in (("typed", typed), ("text", text)):
            body = codec.encode(job)
            assert codec.decode(body).payload == job.payload
            row[f"{label}_encode_us"] = best(lambda codec=codec, job=job: codec.encode(job), repeat)
            row[f"{label}_decode_us"] = best(lambda codec=codec, body=body: codec.decode(body), repeat)
            row[f"{label}_bytes"] = len(body)
        out.append(row)
    return out


def best(stmt: Any, repeat: int) -> float:
    timer = timeit.Timer(stmt)
    loops, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=loops)) / loops * 1e6


def measure(repeat: int) -> list[dict[str, Any]]:
    only = {"BANANAS_LOAD_PLUGINS": "bananas-json,bananas-msgpack,bananas-protobuf"}
    serializers = Bananas(broker="memory://bench", env=only).plugins.serializers
    rows = []
    for label, target in SIZES.items():
        job = Job(name="bench.users", payload=payload(target), headers={"trace": "abc"})
        for name in serializers:
            codec = JobCodec(serializers.get(name).factory(), serializers)
            body = codec.encode(job)
            assert codec.decode(body) == job
            rows.append(
                {
                    "payload": label,
                    "serializer": name,
                    "encode_us": best(lambda codec=codec, job=job: codec.encode(job), repeat),
                    "decode_us": best(lambda codec=codec, body=body: codec.decode(body), repeat),
                    "bytes": len(body),
                }
            )
    for row in rows:
        base = next(r for r in rows if r["payload"] == row["payload"] and r["serializer"] == "json")
        row["size_vs_json"] = row["bytes"] / base["bytes"]
        row["encode_vs_json"] = base["encode_us"] / row["encode_us"]
        row["decode_vs_json"] = base["decode_us"] / row["decode_us"]
    return rows


def struct_rows(repeat: int) -> list[dict[str, Any]]:
    try:
        from google.protobuf import json_format, struct_pb2
    except ImportError:
        return []
    out = []
    for label, target in SIZES.items():
        data = payload(target)
        encoded = json.dumps(data, separators=(",", ":")).encode()

        def to_struct(data: dict[str, Any] = data) -> bytes:
            message = struct_pb2.Struct()
            message.update(data)
            return message.SerializeToString()

        packed = to_struct()

        def from_struct(packed: bytes = packed) -> Any:
            return json_format.MessageToDict(struct_pb2.Struct.FromString(packed))

        out.append(
            {
                "payload": label,
                "json_encode_us": best(lambda data=data: json.dumps(data, separators=(",", ":")).encode(), repeat),
                "json_decode_us": best(lambda encoded=encoded: json.loads(encoded), repeat),
                "json_bytes": len(encoded),
                "struct_encode_us": best(to_struct, repeat),
                "struct_decode_us": best(from_struct, repeat),
                "struct_bytes": len(packed),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"# Python {platform.python_version()} on {platform.machine()}, best of {args.repeat}, µs per job\n")
    print("| payload | serializer | encode µs | decode µs | bytes | size vs json | encode speed vs json | "
          "decode speed vs json |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in measure(args.repeat):
        print(
            f"| {row['payload']} | {row['serializer']} | {row['encode_us']:.1f} | {row['decode_us']:.1f} | "
            f"{row['bytes']:,} | {row['size_vs_json']:.0%} | {row['encode_vs_json']:.2f}× | "
            f"{row['decode_vs_json']:.2f}× |"
        )
    print("\nValues beyond JSON: 20 records with a datetime, date, UUID and Decimal each, vs the same as strings\n")
    print("| serializer | typed encode µs | typed decode µs | typed bytes | as strings encode µs | "
          "as strings decode µs | as strings bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in typed_rows(args.repeat):
        print(
            f"| {row['serializer']} | {row['typed_encode_us']:.1f} | {row['typed_decode_us']:.1f} | "
            f"{row['typed_bytes']:,} | {row['text_encode_us']:.1f} | {row['text_decode_us']:.1f} | "
            f"{row['text_bytes']:,} |"
        )
    rows = struct_rows(args.repeat)
    if rows:
        print("\nPayload only: JSON bytes (what bananas-protobuf ships) vs google.protobuf.Struct\n")
        print("| payload | JSON encode µs | JSON decode µs | JSON bytes | Struct encode µs | Struct decode µs | "
              "Struct bytes |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            print(
                f"| {row['payload']} | {row['json_encode_us']:.1f} | {row['json_decode_us']:.1f} | "
                f"{row['json_bytes']:,} | {row['struct_encode_us']:.1f} | {row['struct_decode_us']:.1f} | "
                f"{row['struct_bytes']:,} |"
            )


if __name__ == "__main__":
    main()
