"""The committed job_pb2.py must match job.proto: regenerate it with grpcio-tools and compare."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PROTO = SRC / "bananas_protobuf" / "job.proto"
GENERATED = SRC / "bananas_protobuf" / "job_pb2.py"
SERIALIZED = re.compile(r"AddSerializedFile\((b'.*?')\)", re.DOTALL)


def _descriptor(module_text: str) -> bytes:
    match = SERIALIZED.search(module_text)
    assert match, "no serialized descriptor in the generated module"
    return ast.literal_eval(match.group(1))


def test_committed_job_pb2_is_up_to_date(tmp_path: Path) -> None:
    # Given protoc from grpcio-tools (the testing extra)
    pytest.importorskip("grpc_tools", reason="grpcio-tools is needed to regenerate job_pb2.py (testing extra)")
    # When job.proto is compiled again
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{SRC}", f"--python_out={tmp_path}", str(PROTO)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = (tmp_path / "bananas_protobuf" / "job_pb2.py").read_text(encoding="utf-8")
    # Then the schema it holds is byte for byte the committed one (the protoc version line may differ)
    assert _descriptor(fresh) == _descriptor(GENERATED.read_text(encoding="utf-8")), (
        "job_pb2.py is stale: run `python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src "
        "src/bananas_protobuf/job.proto` in plugins/bananas-protobuf"
    )


def test_the_comparison_notices_a_changed_schema(tmp_path: Path) -> None:
    # Given / When a proto with one more field
    pytest.importorskip("grpc_tools")
    (tmp_path / "in" / "bananas_protobuf").mkdir(parents=True)
    changed = PROTO.read_text(encoding="utf-8").replace("optional double finished_at = 17;",
                                                         "optional double finished_at = 17;\n  string later = 99;")
    (tmp_path / "in" / "bananas_protobuf" / "job.proto").write_text(changed, encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path / 'in'}", f"--python_out={tmp_path}",
         str(tmp_path / "in" / "bananas_protobuf" / "job.proto")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = (tmp_path / "bananas_protobuf" / "job_pb2.py").read_text(encoding="utf-8")
    # Then its descriptor differs from the committed one
    assert _descriptor(fresh) != _descriptor(GENERATED.read_text(encoding="utf-8"))
