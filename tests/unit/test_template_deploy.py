"""template.yaml's parameters and what a first real deployment depends on, checked without AWS.

`sam deploy --guided` must be answerable, wrong ARNs must be refused before anything is created
(CloudFormation checks AllowedPattern and Rules first), every role must be able to read what its
function reads, private subnets without a NAT gateway must get their endpoints, and the stack name
must leave room for every name derived from it.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from typing import Any

import pytest
from test_template import JOBS, ROOT, TEMPLATE, statements

from pgkeeper.local.template import Template

SECRET_PARAMETERS = ("DatabaseSecretArn", "WebhookSecretArn", "CacheSecretArn")

# The longest stack name the template deploys; `make deploy` refuses longer ones. Stated in the
# template's top comment too.
MAX_STACK_NAME = 49


# --- parameters: what `sam deploy --guided` asks, and what CloudFormation refuses -------------------


def test_no_parameter_is_noecho_so_guided_deploy_can_skip_every_one(raw):
    # SAM prompts a NoEcho parameter with click.prompt and no default: an empty answer asks again
    # forever. Secrets come in through Secrets Manager ARNs instead.
    assert [name for name, spec in raw["Parameters"].items() if spec.get("NoEcho")] == []


def test_the_database_url_is_no_parameter_but_stays_declared_empty_for_local_runs(raw, template):
    assert "DatabaseUrl" not in raw["Parameters"]
    assert not [name for name in raw["Parameters"] if "url" in name.lower()]
    assert raw["Globals"]["Function"]["Environment"]["Variables"]["DATABASE_URL"] == ""
    for logical_id in JOBS:  # declared, so `pgkeeper invoke --env-vars` can override it
        assert template.function(logical_id).environment["DATABASE_URL"] == ""
    description = raw["Parameters"]["DatabaseSecretArn"]["Description"]
    assert "deployed stacks" in description and "create-secret" in description
    assert "DatabaseUrl" not in TEMPLATE.read_text()


def test_database_host_port_and_name_reach_every_function_for_rds_managed_secrets(raw, template):
    params = raw["Parameters"]
    for name in ("DatabaseHost", "DatabasePort", "DatabaseName"):
        assert params[name]["Type"] == "String" and params[name]["Default"] == ""
    assert params["DatabasePort"]["AllowedPattern"] == "^$|^[0-9]{1,5}$"
    expected = {"PGKEEPER_DATABASE_HOST": "db.abc123.eu-west-1.rds.amazonaws.com",
                "PGKEEPER_DATABASE_PORT": "5433", "PGKEEPER_DATABASE_NAME": "app"}
    set_ = Template(TEMPLATE, {"DatabaseHost": expected["PGKEEPER_DATABASE_HOST"], "DatabasePort": "5433",
                               "DatabaseName": "app"})
    for logical_id in JOBS:
        env = set_.function(logical_id).environment
        assert {k: env[k] for k in expected} == expected
        assert {k: template.function(logical_id).environment[k] for k in expected} == dict.fromkeys(expected, "")


def _accepts(raw: dict, name: str, value: str) -> bool:
    """CloudFormation's AllowedPattern check (Java's Matcher.matches: the whole value)."""
    return re.fullmatch(raw["Parameters"][name]["AllowedPattern"], value) is not None


def test_every_default_satisfies_its_own_pattern(raw):
    # CloudFormation checks defaults too: a default its pattern refuses fails every deployment.
    for name, spec in raw["Parameters"].items():
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], str(spec["Default"])), name
            assert spec.get("ConstraintDescription"), f"{name}: say what is expected when the pattern refuses"


@pytest.mark.parametrize("name", SECRET_PARAMETERS)
def test_secret_arn_parameters_accept_only_full_secret_arns(raw, name):
    good = ["",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgkeeper/database-AbC123",
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:pgkeeper-a1B2c3",
            # RDS-managed master user secrets are named rds!db-<uuid> or rds!cluster-<uuid>
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b-Xy9Zw8",
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:a_b+c=d.e@f-ABCDEF"]
    bad = ["pgkeeper/database",  # a name, not an ARN
           "postgresql://user:pw@host/db",  # the URL itself
           "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgkeeper/database",  # partial: IAM would not match
           "arn:aws:secretsmanager:eu-west-1:1234567890:secret:pgkeeper-AbC123",
           "arn:aws:ssm:eu-west-1:123456789012:parameter/pgkeeper-AbC123",
           " arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgkeeper-AbC123"]
    assert [v for v in good if not _accepts(raw, name, v)] == []
    assert [v for v in bad if _accepts(raw, name, v)] == []


@pytest.mark.parametrize("name", ["BackupKmsKeyArn", "SecretsKmsKeyArn"])
def test_kms_parameters_accept_only_key_arns(raw, name):
    good = ["", "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"]
    # An alias ARN in an IAM policy's Resource grants the alias, not the key behind it: the role
    # would deploy and then be refused GenerateDataKey/Decrypt.
    bad = ["arn:aws:kms:eu-west-1:123456789012:alias/pgkeeper", "alias/aws/s3",
           "1234abcd-12ab-34cd-56ef-1234567890ab", "arn:aws:kms:eu-west-1:123456789012:key/"]
    assert [v for v in good if not _accepts(raw, name, v)] == []
    assert [v for v in bad if _accepts(raw, name, v)] == []


def test_alarm_topic_accepts_only_sns_topic_arns(raw):
    good = ["", "arn:aws:sns:eu-west-1:123456789012:pgkeeper-alarms", "arn:aws:sns:eu-west-1:123456789012:ops_1"]
    bad = ["pgkeeper-alarms", "arn:aws:sqs:eu-west-1:123456789012:pgkeeper", "arn:aws:sns:eu-west-1:123456789012:",
           "https://sns.eu-west-1.amazonaws.com/"]
    assert [v for v in good if not _accepts(raw, "AlarmTopicArn", v)] == []
    assert [v for v in bad if _accepts(raw, "AlarmTopicArn", v)] == []


# --- what each role may read -----------------------------------------------------------------------


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_role_may_read_the_cache_secret_for_the_replay_store(raw, logical_id):
    # Every function verifies signed requests; with signing.replay_store: redis each one opens the
    # cache connection from CacheSecretArn.
    reads = [s for s in statements(raw, logical_id) if s.get("Resource") == {"Ref": "CacheSecretArn"}]
    assert reads == [{"Sid": "ReadCacheSecret", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                      "Resource": {"Ref": "CacheSecretArn"}, "_condition": "HasCacheSecret"}]
    readable = {s["Resource"]["Ref"] for s in statements(raw, logical_id)
                if s["Action"] == "secretsmanager:GetSecretValue"}
    assert readable == {*SECRET_PARAMETERS, "FleetSecretArns"}  # the fleet's members' secrets, when listed


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_role_may_decrypt_the_secrets_key_only_through_secrets_manager(raw, logical_id):
    kms = [s for s in statements(raw, logical_id) if s.get("Resource") == {"Ref": "SecretsKmsKeyArn"}]
    assert kms == [{
        "Sid": "DecryptSecrets", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": {"Ref": "SecretsKmsKeyArn"},
        "Condition": {"StringEquals": {"kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}},
        "_condition": "DecryptsSecrets"}]


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, False),
    ({"SecretsKmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/k"}, False),  # a key but nothing to read
    ({"DatabaseSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbC123"}, False),
    ({"SecretsKmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/k",
      "DatabaseSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbC123"}, True),
    ({"SecretsKmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/k",
      "CacheSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cache-AbC123"}, True),
])
def test_the_secrets_key_is_granted_when_it_and_a_secret_are_configured(overrides, expected):
    assert Template(TEMPLATE, overrides).condition("DecryptsSecrets") is expected


# --- reserved concurrency ----------------------------------------------------------------------------


def test_reserved_concurrency_is_off_by_default_and_reserves_for_each_function_when_set(raw, template):
    param = raw["Parameters"]["ReservedConcurrency"]
    assert (param["Type"], param["Default"], param["MinValue"]) == ("Number", 0, 0)
    assert "100" in param["Description"]  # why it is off: the account's unreserved minimum
    assert raw["Globals"]["Function"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}
    reserved = Template(TEMPLATE, {"ReservedConcurrency": "5"})
    for logical_id in JOBS:
        assert "ReservedConcurrentExecutions" not in template.function(logical_id).properties
        assert reserved.function(logical_id).properties["ReservedConcurrentExecutions"] == "5"
        # no function overrides the Globals' value
        assert "ReservedConcurrentExecutions" not in raw["Resources"][logical_id]["Properties"]


# --- private subnets ---------------------------------------------------------------------------------

VPC = {"SubnetIds": "subnet-0a1b2c3d,subnet-4e5f6a7b", "SecurityGroupIds": "sg-0123abcd",
       "VpcId": "vpc-0a1b2c3d", "VpcCidr": "10.0.0.0/16", "RouteTableIds": "rtb-0a1b2c3d,rtb-4e5f6a7b"}


def _aws_services_the_code_calls() -> set[str]:
    """`client("<service>")` calls of the package that runs in Lambda (not the CLI or local runner)."""
    package = ROOT / "layers/common/python/pgkeeper"
    services = set()
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] in {"cli", "local"}:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "client"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                services.add(node.args[0].value)
    return services


def test_vpc_endpoints_cover_every_aws_service_the_functions_call(raw):
    endpoints = [v for v in raw["Resources"].values() if v["Type"] == "AWS::EC2::VPCEndpoint"]
    services = {}
    for endpoint in endpoints:
        assert endpoint["Condition"] == "CreateVpcEndpoints"
        props = endpoint["Properties"]
        service = re.fullmatch(r"com\.amazonaws\.\$\{AWS::Region\}\.([a-z0-9-]+)", props["ServiceName"]["Fn::Sub"])
        assert service, props["ServiceName"]
        assert service.group(1) not in services, f"two endpoints for {service.group(1)}"
        services[service.group(1)] = props
        assert props["VpcId"] == {"Ref": "VpcId"}
    assert set(services) >= _aws_services_the_code_calls() >= {"secretsmanager", "lambda", "s3"}
    for name in ("secretsmanager", "lambda"):
        props = services[name]
        assert props["VpcEndpointType"] == "Interface" and props["PrivateDnsEnabled"] is True
        assert props["SubnetIds"] == {"Ref": "SubnetIds"}
        assert props["SecurityGroupIds"] == [{"Ref": "VpcEndpointSecurityGroup"}]
    assert services["s3"]["VpcEndpointType"] == "Gateway"
    assert services["s3"]["RouteTableIds"] == {"Ref": "RouteTableIds"}


def test_the_endpoints_security_group_admits_only_https_from_the_vpc(raw):
    group = raw["Resources"]["VpcEndpointSecurityGroup"]
    assert group["Condition"] == "CreateVpcEndpoints"
    props = group["Properties"]
    assert props["VpcId"] == {"Ref": "VpcId"}
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIp"]) for r in props["SecurityGroupIngress"]] == [
        ("tcp", 443, 443, {"Ref": "VpcCidr"})]
    # The default allow-all egress is replaced by a rule that matches nothing.
    assert [r["CidrIp"] for r in props["SecurityGroupEgress"]] == ["255.255.255.255/32"]


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, False),
    ({"VpcEndpoints": "true"}, False),  # refused by the Rules before this matters
    (VPC, False),  # a VPC with a NAT gateway: no endpoints unless asked for
    ({**VPC, "VpcEndpoints": "true"}, True),
])
def test_endpoints_are_created_only_when_asked_for_in_a_vpc(overrides, expected):
    assert Template(TEMPLATE, overrides).condition("CreateVpcEndpoints") is expected


def _rule_value(raw: dict, values: dict[str, Any], expr: Any) -> Any:
    """The few intrinsic functions CloudFormation allows in Rules, against parameter values."""
    if isinstance(expr, list):
        return [_rule_value(raw, values, e) for e in expr]
    if not isinstance(expr, dict):
        return expr
    (key, arg), = expr.items()
    if key == "Ref":
        spec = raw["Parameters"][arg]
        value = str(values.get(arg, spec.get("Default", "")))
        return value.split(",") if spec["Type"] == "CommaDelimitedList" else value
    args = [_rule_value(raw, values, a) for a in arg]
    if key == "Fn::Equals":
        return args[0] == args[1]
    if key == "Fn::Not":
        return not args[0]
    if key == "Fn::And":
        return all(args)
    if key == "Fn::Or":
        return any(args)
    if key == "Fn::EachMemberEquals":
        return all(member == args[1] for member in args[0])
    if key == "Fn::Contains":
        return args[1] in args[0]
    raise AssertionError(f"{key} is not allowed in Rules (or not modelled here)")


def _failed_rules(raw: dict, values: dict[str, str]) -> list[str]:
    failed = []
    for rule in raw["Rules"].values():
        if "RuleCondition" in rule and not _rule_value(raw, values, rule["RuleCondition"]):
            continue
        failed += [a["AssertDescription"] for a in rule["Assertions"] if not _rule_value(raw, values, a["Assert"])]
    return failed


def test_rules_refuse_vpc_endpoints_without_their_network_before_anything_is_created(raw):
    assert _failed_rules(raw, {}) == []
    assert _failed_rules(raw, VPC) == []
    assert _failed_rules(raw, {**VPC, "VpcEndpoints": "true"}) == []
    everything_missing = _failed_rules(raw, {"VpcEndpoints": "true"})
    assert len(everything_missing) == 4
    for name in ("SubnetIds", "VpcId", "VpcCidr", "RouteTableIds"):
        failed = _failed_rules(raw, {**VPC, "VpcEndpoints": "true", name: ""})
        assert len(failed) == 1 and f"VpcEndpoints=true needs {name}" in failed[0], (name, failed)


def test_vpc_endpoints_parameter_says_internet_services_still_need_a_nat_gateway(raw):
    param = raw["Parameters"]["VpcEndpoints"]
    assert param["Default"] == "false" and param["AllowedValues"] == ["true", "false"]
    assert "NAT gateway" in param["Description"] and "Neon" in param["Description"]
    assert raw["Parameters"]["RouteTableIds"]["Type"] == "CommaDelimitedList"


# --- the stack name ----------------------------------------------------------------------------------

STACK_NAME = "${AWS::StackName}"
CLOUDFORMATION_STACK_NAME_LIMIT = 128
# Every property a name derived from the stack name may appear in, and the service's limit on it;
# None: an ARN naming a resource whose own name is limited above.
NAME_LIMITS: dict[tuple[str, str], int | None] = {
    ("AWS::Serverless::Function", "FunctionName"): 64,  # Lambda function names
    ("AWS::Serverless::Function", "Events.*.Properties.Name"): 64,  # EventBridge Scheduler schedule names
    ("AWS::Serverless::LayerVersion", "LayerName"): 140,  # Lambda layer names
    ("AWS::Logs::LogGroup", "LogGroupName"): 512,
    ("AWS::IAM::Role", "Description"): 1000,
    ("AWS::IAM::Role", "Policies.PolicyDocument.Statement.Resource"): None,
    ("AWS::EC2::SecurityGroup", "GroupDescription"): 255,
}


def _subs(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(property path, text) of every !Sub under value; list indices and Fn:: keys left out of the path."""
    if isinstance(value, list):
        return [found for item in value for found in _subs(item, path)]
    if not isinstance(value, dict):
        return []
    if "Fn::Sub" in value and len(value) == 1:
        arg = value["Fn::Sub"]
        return [(".".join(path), arg[0] if isinstance(arg, list) else arg)]
    return [found for key, item in value.items()
            for found in _subs(item, path if key.startswith("Fn::") else (*path, key))]


def _stack_derived_names(raw: dict) -> list[tuple[str, str, str]]:
    """(resource type, property path, text) of every !Sub that uses the stack name, Globals included."""
    found = [("AWS::Serverless::Function", path, text)
             for path, text in _subs(raw["Globals"]["Function"]) if STACK_NAME in text]
    for resource in raw["Resources"].values():
        found += [(resource["Type"], path, text)
                  for path, text in _subs(resource.get("Properties", {})) if STACK_NAME in text]
    return found


def _limit_of(type_: str, path: str) -> tuple[bool, int | None]:
    for (t, pattern), limit in NAME_LIMITS.items():
        if t == type_ and fnmatch.fnmatchcase(path, pattern):
            return True, limit
    return False, None


def max_stack_name(raw: dict) -> tuple[int, str]:
    """The longest stack name that keeps every derived name within its limit, and the name that sets it."""
    best, tightest = CLOUDFORMATION_STACK_NAME_LIMIT, "CloudFormation's own limit"
    for type_, path, text in _stack_derived_names(raw):
        known, limit = _limit_of(type_, path)
        assert known, f"{type_} {path} = {text!r} is derived from the stack name: add its length limit to NAME_LIMITS"
        if limit is None:
            continue
        others = set(re.findall(r"\$\{([^}]+)\}", text)) - {"AWS::StackName"}
        assert not others, f"{text!r}: its length depends on {others} as well"
        count = text.count(STACK_NAME)
        room = (limit - (len(text) - count * len(STACK_NAME))) // count
        if room < best:
            best, tightest = room, text
    return best, tightest


def test_max_stack_name_is_the_tightest_limit_of_every_name_derived_from_it(raw):
    longest, tightest = max_stack_name(raw)
    assert (longest, tightest) == (MAX_STACK_NAME, "${AWS::StackName}-vacuum-analyze")
    assert f"MAX_STACK_NAME = {MAX_STACK_NAME}" in TEMPLATE.read_text()


def test_a_stack_name_of_the_maximum_length_keeps_every_name_within_its_limit(raw):
    stack = "a" * MAX_STACK_NAME
    at_max = Template(TEMPLATE, pseudo_overrides={"AWS::StackName": stack})
    too_long = Template(TEMPLATE, pseudo_overrides={"AWS::StackName": stack + "b"})
    for logical_id in JOBS:
        assert len(at_max.function(logical_id).function_name) <= 64
        for event in raw["Resources"][logical_id]["Properties"]["Events"].values():
            assert len(at_max.resolve(event["Properties"]["Name"])) <= 64
    analyze = raw["Resources"]["VacuumFunction"]["Properties"]["Events"]["AnalyzeSchedule"]["Properties"]["Name"]
    assert len(at_max.resolve(analyze)) == 64 and len(too_long.resolve(analyze)) == 65


def test_object_lock_is_chosen_at_bucket_creation_and_no_function_may_bypass_it(raw):
    param = raw["Parameters"]["BackupObjectLock"]
    assert param["Default"] == "NONE" and param["AllowedValues"] == ["NONE", "GOVERNANCE", "COMPLIANCE"]
    bucket = raw["Resources"]["BackupBucket"]["Properties"]
    assert bucket["ObjectLockEnabled"] == {"Fn::If": ["HasObjectLock", True, {"Ref": "AWS::NoValue"}]}
    rule = bucket["ObjectLockConfiguration"]["Fn::If"][1]["Rule"]["DefaultRetention"]
    assert rule == {"Mode": {"Ref": "BackupObjectLock"}, "Days": {"Ref": "BackupObjectLockDays"}}
    for logical_id in JOBS:
        actions = {a for st in statements(raw, logical_id) for a in
                   ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
        assert "s3:BypassGovernanceRetention" not in actions, logical_id
    backup = {a for st in statements(raw, "BackupFunction") for a in
              ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert {"s3:GetObjectRetention", "s3:PutObjectRetention", "s3:GetBucketObjectLockConfiguration"} <= backup
