"""`pgkeeper invoke` resolves a function from a template as `sam local invoke` does, and runs it
in a fresh process. These tests use small templates of their own and the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pgkeeper.local.template import UNRESOLVED, Template

TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Secret: {Type: String, Default: "", NoEcho: true}
  Subnets: {Type: CommaDelimitedList, Default: ""}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  HasSubnets: !Not [!Equals [!Join [",", !Ref Subnets], ""]]
Globals:
  Function:
    Runtime: python3.13
    Handler: app.lambda_handler
    Timeout: 30
    MemorySize: 256
    Layers: [!Ref Shared, !Ref Data]
    Environment:
      Variables:
        STAGE: !Ref Stage
        FROM_GLOBALS: g
        OVERRIDDEN_BY_FUNCTION: g
        SECRET: !Ref Secret
        PLAN: /opt/plan.yaml
        MISSING_IN_LAYERS: /opt/nothing-here.yaml
        SUBBED: !Sub "${AWS::StackName}-${Stage}-${AWS::Region}"
        ARN: !GetAtt Other.Arn
        MODE: !If [IsProd, strict, relaxed]
        SHELL_ONLY: template-value
Resources:
  Shared:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layers/shared}
    Metadata: {BuildMethod: makefile}
  Data:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: data/}
  Echo:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn
      Timeout: 20
      Layers: [arn:aws:lambda:us-east-1:123456789012:layer:external:1]
      Environment:
        Variables:
          OVERRIDDEN_BY_FUNCTION: f
          ONLY_ECHO: e
  Other:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: fn, Handler: app.other}
"""

APP = """\
import os, sys, time
import shared_helper

def lambda_handler(event, context):
    print("this line is a log, not the result")
    if event.get("raise"):
        raise ValueError("bad thing: " + event["raise"])
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("unserialisable"):
        return {"when": object()}
    keys = ["STAGE", "FROM_GLOBALS", "OVERRIDDEN_BY_FUNCTION", "ONLY_ECHO", "SECRET", "PLAN", "MISSING_IN_LAYERS",
            "SUBBED", "ARN", "MODE", "SHELL_ONLY", "NOT_DECLARED", "AWS_SAM_LOCAL", "AWS_LAMBDA_FUNCTION_NAME",
            "AWS_LAMBDA_FUNCTION_TIMEOUT", "CALLER_ONLY"]
    return {"env": {k: os.environ.get(k) for k in keys}, "event": event, "helper": shared_helper.WHERE,
            "path": sys.path[:3], "remaining_ms": context.get_remaining_time_in_millis(),
            "name": context.function_name, "plan_text": open(os.environ["PLAN"]).read()}

def other(event, context):
    return "other"
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text(APP)
    (tmp_path / "layers/shared/python").mkdir(parents=True)
    (tmp_path / "layers/shared/python/shared_helper.py").write_text("WHERE = 'layer'\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "plan.yaml").write_text("version: 1\n")
    return tmp_path


def invoke(project: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(project), "SHELL_ONLY": "from-shell", "CALLER_ONLY": "leak?"}
    return subprocess.run([sys.executable, "-m", "pgkeeper.cli", "invoke", *args], cwd=project, input=stdin,
                          capture_output=True, text=True, env={**base, **(env or {})}, timeout=timeout)


def write_json(path: Path, data: object) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_environment_is_resolved_and_overridden_as_sam_does(project: Path):
    env_file = write_json(project / "env.json", {
        "Parameters": {"SECRET": "from-parameters", "ONLY_ECHO": "p", "NOT_DECLARED": "x"},
        "Echo": {"ONLY_ECHO": "from-function-section"},
    })
    proc = invoke(project, "Echo", "--env-vars", env_file, "--parameter-overrides", "Stage=prod")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # stdout is the result and nothing else
    env = out["env"]
    assert env["STAGE"] == "prod" and env["MODE"] == "strict"
    assert env["FROM_GLOBALS"] == "g" and env["OVERRIDDEN_BY_FUNCTION"] == "f"
    assert env["ONLY_ECHO"] == "from-function-section"  # function section wins over Parameters
    assert env["SECRET"] == "from-parameters"
    assert env["NOT_DECLARED"] is None  # SAM overrides only declared variables...
    assert "NOT_DECLARED" in proc.stderr  # ...and we say so
    assert env["SHELL_ONLY"] == "from-shell"  # declared: the caller's shell value beats the template's
    assert env["CALLER_ONLY"] is None  # undeclared caller variables do not leak in
    assert env["SUBBED"] == "local-prod-us-east-1"
    assert env["ARN"] == ""  # an attribute only CloudFormation knows is "" locally, as in SAM
    assert env["AWS_SAM_LOCAL"] == "true" and env["AWS_LAMBDA_FUNCTION_NAME"] == "Echo"
    assert env["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "20"
    assert "this line is a log" in proc.stderr


def test_layers_are_on_the_path_and_opt_paths_map_to_layer_content(project: Path):
    proc = invoke(project, "Echo", "--event", "-", stdin='{"hello": "world"}')
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["event"] == {"hello": "world"}
    assert out["helper"] == "layer"
    assert out["path"][:2] == [str(project / "fn"), str(project / "layers/shared/python")]
    assert out["env"]["PLAN"] == str(project / "data" / "plan.yaml")
    assert out["plan_text"] == "version: 1\n"
    assert out["env"]["MISSING_IN_LAYERS"] == "/opt/nothing-here.yaml"
    assert "no layer of Echo contains nothing-here.yaml" in proc.stderr
    assert "external:1" in proc.stderr and "not available locally" in proc.stderr
    assert out["name"] == "Echo"
    assert 15_000 < out["remaining_ms"] <= 20_000  # Timeout: 20 → the context's remaining time


def test_handler_exception_prints_lambdas_error_shape_and_exits_1(project: Path):
    proc = invoke(project, "Echo", "--event", "-", stdin='{"raise": "boom"}')
    assert proc.returncode == 1
    err = json.loads(proc.stdout)
    assert err["errorType"] == "ValueError" and err["errorMessage"] == "bad thing: boom"
    assert any("app.py" in frame for frame in err["stackTrace"])
    assert "bootstrap" not in "".join(err["stackTrace"])
    assert "Traceback" in proc.stderr


def test_result_that_is_not_json_is_a_marshal_error(project: Path):
    proc = invoke(project, "Echo", "--event", "-", stdin='{"unserialisable": true}')
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["errorType"] == "Runtime.MarshalError"


def test_function_timeout_stops_the_handler_and_reports_lambdas_timeout(project: Path):
    (project / "template.yaml").write_text(TEMPLATE.replace("      Timeout: 20\n", "      Timeout: 1\n"))
    started = time.monotonic()
    proc = invoke(project, "Echo", "--event", "-", stdin='{"sleep": 30}')
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    err = json.loads(proc.stdout)
    assert err == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 1.00 seconds"}
    assert elapsed < 15


def test_unknown_function_names_the_ones_that_exist(project: Path):
    proc = invoke(project, "Nope")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == (
        "pgkeeper: unknown_function: function 'Nope' is not in template.yaml; its functions are: Echo, Other")


@pytest.mark.parametrize("args,message", [
    (["--parameter-overrides", "Stage=staging"], "parameter Stage='staging' is not one of ['dev', 'prod']"),
    (["--parameter-overrides", "Nope=1"], "unknown parameter(s) Nope"),
    (["--event", "missing.json"], "cannot read event file missing.json"),
])
def test_bad_arguments_give_one_clear_line(project: Path, args: list[str], message: str):
    proc = invoke(project, "Echo", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr


def test_env_vars_file_in_the_wrong_shape_is_refused(project: Path):
    env_file = write_json(project / "env.json", {"Parameters": {"SECRET": "x"}, "Echo": "not-an-object"})
    proc = invoke(project, "Echo", "--env-vars", env_file)
    assert proc.returncode == 2
    assert "'Echo' is not an object" in proc.stderr


def test_template_resolution_follows_sam_globals_and_conditions(project: Path):
    t = Template(project / "template.yaml", {"Subnets": "a,b"})
    assert t.condition("HasSubnets") is True
    assert Template(project / "template.yaml").condition("HasSubnets") is False
    echo = t.function("Echo")
    assert [layer.logical_id for layer in echo.layers] == ["Shared", "Data",
                                                           "arn:aws:lambda:us-east-1:123456789012:layer:external:1"]
    assert (echo.timeout_s, echo.memory_mb, echo.runtime) == (20.0, 256, "python3.13")
    assert echo.environment["ARN"] is UNRESOLVED
    assert t.function("Other").handler == "app.other"


def test_invoking_a_second_function_of_the_same_template(project: Path):
    proc = invoke(project, "Other")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == "other"


def test_template_short_tags_are_read(tmp_path: Path):
    (tmp_path / "t.yaml").write_text(textwrap.dedent("""\
        Parameters: {P: {Type: String, Default: x}}
        Resources:
          R:
            Type: AWS::S3::Bucket
            Properties:
              A: !GetAtt R.Arn
              B: !Select [1, !Split [",", "a,b,c"]]
              C: !Base64 hi
              D: !Sub ["${X}-${P}", {X: !Ref P}]
        """))
    props = Template(tmp_path / "t.yaml").resolve(Template(tmp_path / "t.yaml").resources["R"]["Properties"])
    assert props["A"] is UNRESOLVED
    assert (props["B"], props["C"], props["D"]) == ("b", "aGk=", "x-x")
