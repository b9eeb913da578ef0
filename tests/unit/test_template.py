"""template.yaml's structure: what a deployment relies on, checked without AWS.

cfn-lint and `sam validate --lint` (make template-check) say the template is valid; these tests say
it is *ours*: every function wired the same way, schedules that name their job, least privilege.
The layer build test runs the real `make build` and reads the wheels it produced.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from build_steps import HOST_ARCH, python313

from pgkeeper import MACHINES
from pgkeeper.events import parse_event
from pgkeeper.local.template import Template, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
JOBS = {"RefreshFunction": "refresh", "CleanupFunction": "cleanup", "VacuumFunction": "vacuum",
        "BackupFunction": "backup"}


def resources(raw: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in raw["Resources"].items() if v["Type"] == type_}


def role_of(raw: dict, logical_id: str) -> dict:
    return raw["Resources"][raw["Resources"][logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]]


def statements(raw: dict, logical_id: str) -> list[dict]:
    """Every statement of a function's role, `!If [cond, {...}, NoValue]` ones marked with their condition."""
    out = []
    for policy in role_of(raw, logical_id)["Properties"]["Policies"]:
        for st in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in st:
                cond, when, otherwise = st["Fn::If"]
                assert otherwise == {"Ref": "AWS::NoValue"}
                out.append({**when, "_condition": cond})
            else:
                out.append(st)
    return out


def test_template_declares_exactly_the_four_job_functions(raw):
    assert set(resources(raw, "AWS::Serverless::Function")) == set(JOBS)


def test_runtime_is_a_current_python_and_architecture_defaults_to_arm64(raw):
    glob = raw["Globals"]["Function"]
    assert glob["Runtime"] == "python3.13"
    assert glob["Architectures"] == [{"Ref": "Architecture"}]
    param = raw["Parameters"]["Architecture"]
    assert param["Default"] == "arm64" and set(param["AllowedValues"]) == {"arm64", "x86_64"}


def test_layer_makefile_builds_for_the_templates_python_version(raw):
    makefile = (ROOT / "layers/common/Makefile").read_text()
    version = re.search(r"^PYTHON_VERSION := (\S+)$", makefile, re.M).group(1)
    runtime = raw["Globals"]["Function"]["Runtime"]
    assert runtime == f"python{version}"
    layer = raw["Resources"]["CommonLayer"]
    assert layer["Properties"]["CompatibleRuntimes"] == [runtime]
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert "build-CommonLayer:" in makefile


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_function_has_both_layers_its_code_and_a_makefile_build(raw, template, logical_id):
    fn = template.function(logical_id)
    assert [layer.logical_id for layer in fn.layers][:2] == ["CommonLayer", "PlanLayer"]
    assert fn.layers[0].content_dir == ROOT / "layers/common"
    assert fn.layers[1].content_dir == ROOT / "plan"
    assert fn.code_dir == ROOT / "functions" / JOBS[logical_id]
    assert raw["Resources"][logical_id]["Metadata"]["BuildMethod"] == "makefile"
    makefile = (fn.code_dir / "Makefile").read_text()
    assert f"build-{logical_id}:" in makefile
    module, _, func = fn.handler.rpartition(".")
    tree = ast.parse((fn.code_dir / f"{module}.py").read_text())
    assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_function_is_scheduled_with_an_input_naming_its_job(raw, logical_id):
    job = JOBS[logical_id]
    events = raw["Resources"][logical_id]["Properties"]["Events"]
    assert events["Schedule"]["Type"] == "ScheduleV2"
    sched = events["Schedule"]["Properties"]
    param = sched["ScheduleExpression"]["Ref"]
    assert re.fullmatch(r"(cron|rate)\(.+\)", raw["Parameters"][param]["Default"])
    assert sched["ScheduleExpressionTimezone"] == {"Ref": "ScheduleTimezone"}
    assert sched["State"] == {"Fn::If": ["SchedulesOn", "ENABLED", "DISABLED"]}
    assert sched["Name"] == {"Fn::Sub": f"${{AWS::StackName}}-{job}"}  # two stacks in one account never clash
    body = json.loads(sched["Input"])
    assert body == {"job": job, "options": {}, "trigger": "schedule"}
    # The handler's own parser accepts what the schedule sends.
    request = parse_event(body, job)
    assert (request.job, request.trigger) == (job, "schedule")


def test_vacuum_function_also_analyzes_hot_tables_on_its_own_schedule(raw):
    events = raw["Resources"]["VacuumFunction"]["Properties"]["Events"]
    sched = events["AnalyzeSchedule"]["Properties"]
    assert sched["ScheduleExpression"] == {"Ref": "AnalyzeSchedule"}
    assert sched["Name"] == {"Fn::Sub": "${AWS::StackName}-vacuum-analyze"}
    body = json.loads(sched["Input"])
    request = parse_event(body, "vacuum")
    from pgkeeper.vacuum.job import JOB

    assert JOB.options.model_validate(request.options).mode == "analyze"
    other = [e for name, e in events.items() if name not in {"Schedule", "AnalyzeSchedule"}]
    assert all(e["Type"] != "ScheduleV2" for e in other)


def test_schedule_defaults_are_hourly_hourly_weekly_daily(raw):
    params = raw["Parameters"]
    assert params["RefreshSchedule"]["Default"] == "cron(0 * * * ? *)"
    assert params["CleanupSchedule"]["Default"] == "cron(30 * * * ? *)"
    assert params["VacuumSchedule"]["Default"].endswith("? * SUN *)")
    assert params["BackupSchedule"]["Default"] == "cron(0 3 * * ? *)"


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_function_has_a_url_with_auth_none_and_an_output(raw, logical_id):
    props = raw["Resources"][logical_id]["Properties"]
    assert props["FunctionUrlConfig"] == {"AuthType": "NONE"}
    assert raw["Outputs"][f"{logical_id}Url"]["Value"] == {"Fn::GetAtt": [f"{logical_id}Url", "FunctionUrl"]}
    assert raw["Outputs"][f"{logical_id}Name"]["Value"] == {"Ref": logical_id}


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_function_logs_to_its_own_group_with_retention(raw, logical_id):
    job = JOBS[logical_id]
    props = raw["Resources"][logical_id]["Properties"]
    group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    group = raw["Resources"][group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    # The group is the one Lambda would create for the function name, so nothing writes elsewhere.
    assert props["FunctionName"] == {"Fn::Sub": f"${{AWS::StackName}}-{job}"}
    assert group["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{job}"}


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_each_function_may_invoke_itself_and_no_other(raw, logical_id):
    job = JOBS[logical_id]
    invokes = [s for s in statements(raw, logical_id) if "lambda:InvokeFunction" in str(s["Action"])]
    assert len(invokes) == 1
    assert invokes[0]["Resource"] == {
        "Fn::Sub": f"arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:${{AWS::AccountId}}:function:"
                   f"${{AWS::StackName}}-{job}"}


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_secrets_are_readable_only_when_configured_and_only_those(raw, logical_id):
    reads = [s for s in statements(raw, logical_id) if "secretsmanager" in str(s["Action"])]
    assert reads, "every function reads the database and webhook secrets"
    for st in reads:
        assert st["Action"] == "secretsmanager:GetSecretValue"
        assert st["_condition"] in {"HasDatabaseSecret", "HasWebhookSecret", "HasCacheSecret", "HasFleetSecrets"}
        param = st["Resource"]["Ref"]
        value = {"Fn::Join": [",", {"Ref": param}]} if param == "FleetSecretArns" else {"Ref": param}
        assert raw["Conditions"][st["_condition"]] == {"Fn::Not": [{"Fn::Equals": [value, ""]}]}
    assert {s["Resource"]["Ref"] for s in reads} >= {"DatabaseSecretArn", "WebhookSecretArn"}


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_each_function_has_its_own_role_writing_only_its_own_logs(raw, logical_id):
    role = role_of(raw, logical_id)
    assert role["Type"] == "AWS::IAM::Role"
    assert sum(1 for fn in JOBS if role_of(raw, fn) is role) == 1
    assert "Policies" not in raw["Resources"][logical_id]["Properties"]  # SAM would generate a second role
    logs = [s for s in statements(raw, logical_id) if "logs:" in str(s["Action"])]
    assert logs == [{"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                     "Resource": {"Fn::GetAtt": [f"{JOBS[logical_id].capitalize()}LogGroup", "Arn"]}}]


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_vpc_network_permissions_are_granted_only_with_a_vpc(raw, logical_id):
    managed = role_of(raw, logical_id)["Properties"]["ManagedPolicyArns"]
    cond, when, otherwise = managed["Fn::If"]
    assert cond == "HasVpc" and otherwise == {"Ref": "AWS::NoValue"}
    assert when == [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"}]


def test_no_policy_grants_wildcard_actions_or_resources(raw):
    for logical_id in JOBS:
        for st in statements(raw, logical_id):
            assert "*" not in str(st["Action"]), (logical_id, st)
            assert st["Resource"] != "*", (logical_id, st)


def test_only_the_backup_function_touches_the_bucket(raw):
    for logical_id in JOBS:
        props = raw["Resources"][logical_id]["Properties"]
        s3 = [s for s in statements(raw, logical_id) if "s3:" in str(s["Action"])]
        env = props.get("Environment", {}).get("Variables", {})
        if logical_id == "BackupFunction":
            assert {str(s["Resource"]) for s in s3} == {
                str({"Fn::GetAtt": ["BackupBucket", "Arn"]}), str({"Fn::Sub": "${BackupBucket.Arn}/*"})}
            assert env["PGKEEPER_BACKUP_BUCKET"] == {"Ref": "BackupBucket"}
            actions = {a for s in s3 for a in s["Action"]}
            assert {"s3:PutObject", "s3:AbortMultipartUpload", "s3:ListBucket"} <= actions
            assert "s3:PutBucketPolicy" not in actions and "s3:PutObjectAcl" not in actions
        else:
            assert s3 == [] and "PGKEEPER_BACKUP_BUCKET" not in env


def test_backup_bucket_is_versioned_encrypted_private_tls_only_and_aborts_stale_uploads(raw):
    bucket = raw["Resources"]["BackupBucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    # No key given: KMSMasterKeyID is dropped and S3 uses the AWS managed key aws/s3.
    assert sse["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {
        "Fn::If": ["HasBackupKmsKey", {"Ref": "BackupKmsKeyArn"}, {"Ref": "AWS::NoValue"}]}
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    rules = props["LifecycleConfiguration"]["Rules"]
    assert any(r.get("AbortIncompleteMultipartUpload") == {"DaysAfterInitiation": 1} for r in rules)
    policy = raw["Resources"]["BackupBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in policy if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert len(deny[0]["Resource"]) == 2


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_function_has_an_errors_alarm_notifying_the_alarm_topic(raw, logical_id):
    alarms = [a["Properties"] for a in resources(raw, "AWS::CloudWatch::Alarm").values()
              if a["Properties"]["MetricName"] == "Errors"
              and a["Properties"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": logical_id}}]]
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm["Namespace"] == "AWS/Lambda"
    # AlarmTopicArn when given, else the topic the stack creates (test_template_monitoring.py)
    assert alarm["AlarmActions"] == [{"Fn::If": ["HasAlarmTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AlarmTopic"}]}]


def test_vpc_is_optional_and_off_by_default(raw, template):
    assert raw["Globals"]["Function"]["VpcConfig"]["Fn::If"][0] == "HasVpc"
    assert template.condition("HasVpc") is False
    with_vpc = Template(TEMPLATE, {"SubnetIds": "subnet-1,subnet-2", "SecurityGroupIds": "sg-1"})
    assert with_vpc.function("RefreshFunction").properties["VpcConfig"] == {
        "SubnetIds": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert "VpcConfig" not in template.function("RefreshFunction").properties


def _env_names_the_code_reads() -> set[str]:
    """Env var names the functions read: `*_ENV = "NAME"` constants and `*_env` plan fields' defaults.
    The CLI and local runner (pgkeeper/cli, pgkeeper/local) run on the caller's machine, not in Lambda."""
    from pgkeeper.plan import Plan

    names = {"DATABASE_URL", "PGKEEPER_PLAN"}
    package = ROOT / "layers/common/python/pgkeeper"
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] in {"cli", "local"}:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(
                    node.value.value, str):
                for target in node.targets:
                    if isinstance(target, ast.Name) and re.fullmatch(r"[A-Z_]*ENV(_[A-Z]+)?", target.id) and (
                            re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value.value)):
                        names.add(node.value.value)

    def walk(model: type) -> None:
        for fname, f in model.model_fields.items():
            if fname.endswith("_env") and isinstance(f.default, str):
                names.add(f.default)
            ann = f.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)

    walk(Plan)
    return names


def test_every_env_var_the_code_reads_is_declared_so_env_vars_files_can_override_it(raw, template):
    # SAM (and `pgkeeper invoke`) only override variables the template declares.
    declared = set(raw["Globals"]["Function"]["Environment"]["Variables"])
    for logical_id in JOBS:
        declared |= set(template.function(logical_id).environment)
    missing = sorted(_env_names_the_code_reads() - declared - {"AWS_LAMBDA_FUNCTION_NAME"})
    assert missing == [], f"declare these in template.yaml Globals (or the function using them): {missing}"


def test_plan_layer_is_mounted_where_the_template_points_pgkeeper_plan(raw):
    assert raw["Globals"]["Function"]["Environment"]["Variables"]["PGKEEPER_PLAN"] == "/opt/pgkeeper-plan.yaml"
    assert raw["Resources"]["PlanLayer"]["Properties"]["ContentUri"].rstrip("/") == "plan"


# --- the built layer -----------------------------------------------------------------------------

SAM = ROOT / ".venv-tools/bin/sam"
ELF_MACHINE = {"arm64": 183, "x86_64": 62}  # e_machine: EM_AARCH64, EM_X86_64


def _elf_sections(path: Path) -> set[str]:
    """The section names of a 64-bit little-endian ELF file (both Lambda architectures')."""
    data = path.read_bytes()
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize, shnum, shstrndx = (int.from_bytes(data[i:i + 2], "little") for i in (0x3A, 0x3C, 0x3E))
    headers = [data[shoff + i * shentsize:shoff + (i + 1) * shentsize] for i in range(shnum)]
    strtab = headers[shstrndx]
    names_at = int.from_bytes(strtab[0x18:0x20], "little")
    names = data[names_at:names_at + int.from_bytes(strtab[0x20:0x28], "little")]
    return {names[int.from_bytes(h[:4], "little"):].split(b"\0", 1)[0].decode() for h in headers}


def _elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", path
    return int.from_bytes(head[18:20], "little")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_make_build_produces_a_layer_whose_compiled_wheels_match_runtime_and_architecture(build, arch, raw):
    build_dir = build(arch)
    py = raw["Globals"]["Function"]["Runtime"].removeprefix("python").replace(".", "")  # "313"
    site = build_dir / "CommonLayer" / "python"
    assert (site / "pgkeeper" / "handler.py").is_file()
    assert (site / "pgkeeper" / "sql" / "001_runs.sql").is_file()
    assert not (site / "pgkeeper" / "local").exists() and not (site / "pgkeeper" / "cli").exists(), \
        "the developer tools (pgkeeper invoke/serve, the CLI) do not belong in /opt"
    _assert_bytecode_is_the_runtimes_and_never_checked(site, py)
    assert json.loads((site / "pgkeeper" / "BUILD.json").read_text()) == {"architecture": arch, "python": "3.13"}
    assert not list(site.glob("zstandard/*cffi*")), "zstandard's cffi backend is never loaded"
    if arch == HOST_ARCH or shutil.which("llvm-strip"):
        assert [lib for lib in site.rglob("*.so*") if ".debug_info" in _elf_sections(lib)] == []
    assert not list(site.glob("boto3*")), "boto3 comes with the runtime; the layer must not carry it"

    extensions = [p for p in site.rglob("*.so") if ".libs" not in p.parent.name]
    names = {p.parent.name for p in extensions}
    assert {"psycopg_binary", "pydantic_core"} <= names
    for ext in extensions:
        assert ext.name.endswith(f".cpython-{py}-{MACHINES[arch]}-linux-gnu.so") or ext.name.endswith(".abi3.so"), ext
    for lib in [*extensions, *site.glob("*.libs/*.so*")]:
        assert _elf_machine(lib) == ELF_MACHINE[arch], lib

    for wheel in site.glob("*.dist-info/WHEEL"):
        tags = [line.split(":", 1)[1].strip() for line in wheel.read_text().splitlines() if line.startswith("Tag:")]
        for tag in tags:
            interp, abi, platform_tag = tag.split("-")
            if platform_tag == "any":
                continue
            # abi3: built for the stable ABI of cpXY, loadable by every CPython from XY on (pyrage: cp310).
            assert (interp == f"cp{py}" and abi == f"cp{py}") or (
                abi == "abi3" and interp.startswith("cp3") and int(interp[3:]) <= int(str(py)[1:])), (wheel, tag)
            assert platform_tag.endswith(MACHINES[arch]) and "manylinux" in platform_tag, (wheel, tag)

    built = load_template(build_dir / "template.yaml")
    # A plain `sam deploy` of this build can only create functions of the architecture it was built for.
    assert built["Parameters"]["Architecture"]["Default"] == arch
    assert built["Parameters"]["Architecture"]["AllowedValues"] == [arch]
    for logical_id in JOBS:
        assert (build_dir / logical_id / "app.py").is_file()
    assert built["Resources"]["CommonLayer"]["Properties"]["ContentUri"] == "CommonLayer"


def _assert_bytecode_is_the_runtimes_and_never_checked(site: Path, py: str) -> None:
    """Every module has CPython 3.13 bytecode, hash-based and unchecked: SAM zips files with a 1980
    timestamp (timestamp-checked .pyc would be stale at every cold start) and /opt is read-only."""
    if python313() is None:
        pytest.fail("the build needs a CPython 3.13 to precompile the layer: run scripts/python313.sh")
    sources = [p for p in site.rglob("*.py") if "__pycache__" not in p.parts]
    missing = [p for p in sources if not (p.parent / "__pycache__" / f"{p.stem}.cpython-{py}.pyc").is_file()]
    assert missing == [], f"{len(missing)} modules without bytecode, e.g. {missing[:3]}"
    foreign = [p for p in site.rglob("*.pyc") if not p.name.endswith(f".cpython-{py}.pyc")]
    assert foreign == [], foreign[:3]
    checked = [p for p in site.rglob("*.pyc") if int.from_bytes(p.read_bytes()[4:8], "little") != 0b01]
    assert checked == [], f"not unchecked-hash bytecode: {checked[:3]}"


@pytest.mark.slow
def test_built_handlers_import_under_python_3_13_from_the_layer_alone(build, lambda_runtime):
    """The proof the layer is complete: the runtime's Python imports each built handler from the
    function dir and the layer, with nothing else but what the Lambda runtime ships (boto3)."""
    python = python313()
    if python is None:
        pytest.skip("needs a Python 3.13 interpreter (the Lambda runtime's version) on this machine")
    build_dir = build(HOST_ARCH)  # this machine's architecture, so the wheels can load
    runtime = lambda_runtime()  # stands in for what Lambda's python3.13 image has besides the stdlib
    code = "import sys; sys.path[:0] = sys.argv[1:]; import app; assert callable(app.lambda_handler)"
    for logical_id in JOBS:
        paths = [str(build_dir / logical_id), str(build_dir / "CommonLayer/python"), str(runtime)]
        run = subprocess.run([python, "-I", "-c", code, *paths], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"{logical_id} under {python}: {run.stderr[-2000:]}"
    # What the handlers import only when a plan asks for it: age (a native wheel), sharding, the fan-out.
    lazy = ("import sys; sys.path[:0] = sys.argv[1:]; import pgkeeper.fleet, pgkeeper.backup.coordinator; "
            "from pgkeeper.backup.encryption import Encryptor, parse_identities, parse_recipients; import pyrage; "
            "key = pyrage.x25519.Identity.generate(); enc = Encryptor(parse_recipients([str(key.to_public())])); "
            "sealed = enc.push(b'page' * 100000) + enc.finish(); "
            "assert pyrage.decrypt(sealed, parse_identities(str(key), 'key')) == b'page' * 100000")
    paths = [str(build_dir / "CommonLayer/python"), str(runtime)]
    run = subprocess.run([python, "-I", "-c", lazy, *paths], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"age, sharding and fleet under {python}: {run.stderr[-2000:]}"


def test_a_layer_built_for_the_other_architecture_fails_the_cold_start_in_one_line(tmp_path, monkeypatch):
    import pgkeeper
    from pgkeeper.errors import ConfigError

    monkeypatch.setattr(pgkeeper, "BUILD_FILE", tmp_path / "BUILD.json")
    pgkeeper.check_build(machine="aarch64")  # no BUILD.json (the source tree): nothing to check
    (tmp_path / "BUILD.json").write_text('{"architecture": "x86_64", "python": "3.13"}')
    pgkeeper.check_build(machine="x86_64")
    with pytest.raises(ConfigError) as err:
        pgkeeper.check_build(machine="aarch64")
    assert str(err.value) == ("this layer was built for x86_64 but the function runs on arm64: deploy the build "
                              "with Architecture=x86_64 (the built template's only choice), or `make build ARCH=arm64`")
