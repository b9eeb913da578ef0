"""Cold-start rule: a handler imports nothing its job does not use (boto3 clients, X-Ray).

Each check runs in a fresh interpreter with the function's sys.path and environment as `pgkeeper
invoke` builds them, so an import made anywhere on the handler's import path is seen.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pgkeeper.local.invoke import prepare

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("boto3", "botocore.session", "botocore.client", "aws_xray_sdk")

_PROBE = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); import app; "
          "print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))")


def loaded_at_import(function: str) -> list[str]:
    inv = prepare(ROOT / "template.yaml", function, event={})
    proc = subprocess.run([sys.executable, "-I", "-c", _PROBE, json.dumps(inv.sys_path), json.dumps(FORBIDDEN)],
                          capture_output=True, text=True, env=inv.env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_importing_the_refresh_handler_loads_no_boto3_and_no_xray():
    assert loaded_at_import("RefreshFunction") == []


@pytest.mark.parametrize("function", ["CleanupFunction", "VacuumFunction"])
def test_database_only_handlers_load_no_boto3_and_no_xray(function):
    assert loaded_at_import(function) == []


def test_the_probe_sees_a_heavy_import_made_by_the_handler(tmp_path):
    """The check above can fail: a handler that imports boto3 is reported."""
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text("import boto3\n\ndef lambda_handler(event, context):\n    return {}\n")
    (tmp_path / "template.yaml").write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  F:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: fn, Handler: app.lambda_handler, Runtime: python3.13}\n")
    inv = prepare(tmp_path / "template.yaml", "F", event={})
    proc = subprocess.run([sys.executable, "-I", "-c", _PROBE, json.dumps(inv.sys_path), json.dumps(FORBIDDEN)],
                          capture_output=True, text=True, env=inv.env, timeout=60)
    assert "boto3" in json.loads(proc.stdout)
