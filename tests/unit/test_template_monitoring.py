"""template.yaml's monitoring: silence is an alarm. Checked without AWS.

Errors alarms only see runs that happened. The stack also alarms when a window passes without proof
of work (WorkProven, one dead-man's switch per schedule), when an asynchronous event fails for good
(Lambda's OnFailure queue, Scheduler's dead-letter queue, AsyncEventsDropped), and every alarm
reaches a topic. The dashboard and the alarms read only the names in pgkeeper/metric_names.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import pytest
from test_template import JOBS, ROOT, TEMPLATE, statements
from test_template_deploy import _accepts, _failed_rules

from pgkeeper import metric_names
from pgkeeper.local.template import Template

ALARM = "AWS::CloudWatch::Alarm"
ACTIONS = [{"Fn::If": ["HasAlarmTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AlarmTopic"}]}]
QUEUES = ("FailedInvocationsQueue", "ScheduleDeadLetterQueue")
SILENCE_DEFAULTS = {"refresh": 3, "cleanup": 3, "analyze": 3, "vacuum": 168, "backup": 26, "drill": 168}
# The schedule whose runs prove each window: vacuum's weekly VACUUM and its hourly ANALYZE apart.
WINDOW_SCHEDULES = {"refresh": ("RefreshFunction", "Schedule"), "cleanup": ("CleanupFunction", "Schedule"),
                    "vacuum": ("VacuumFunction", "Schedule"), "analyze": ("VacuumFunction", "AnalyzeSchedule"),
                    "backup": ("BackupFunction", "Schedule"), "drill": ("BackupFunction", "DrillSchedule")}
SEVEN_DAYS = 7 * 24 * 3600  # CloudWatch's limit on Period x EvaluationPeriods for hourly periods


def _alarms(raw: dict) -> dict[str, dict]:
    return {k: v for k, v in raw["Resources"].items() if v["Type"] == ALARM}


def _dims(alarm: dict) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in alarm["Properties"]["Dimensions"]}


def _silence_alarm(raw: dict, window: str) -> tuple[str, dict]:
    found = [(k, a) for k, a in _alarms(raw).items()
             if a["Properties"]["MetricName"] == metric_names.WORK_PROVEN and _dims(a).get("window") == window]
    assert len(found) == 1, f"{window}: {[k for k, _ in found]}"
    return found[0]


def _schedules(raw: dict) -> list[tuple[str, str, dict]]:
    return [(fn, name, event["Properties"]) for fn in JOBS
            for name, event in raw["Resources"][fn]["Properties"]["Events"].items() if event["Type"] == "ScheduleV2"]


# --- silence: one dead-man's switch per window ---------------------------------------------------


@pytest.mark.parametrize("window", metric_names.ALARM_WINDOWS)
def test_each_window_has_one_silence_alarm_on_work_proven_with_breaching_missing_data(raw, window):
    logical_id, alarm = _silence_alarm(raw, window)
    props = alarm["Properties"]
    assert (props["Namespace"], props["MetricName"]) == (metric_names.NAMESPACE, metric_names.WORK_PROVEN)
    # Exactly the dimensions the runner emits (a metric with one more or one fewer is another metric).
    assert _dims(alarm) == {"window": window, "service": metric_names.SERVICE}
    assert props["Statistic"] == "Sum" and props["Period"] == 3600
    assert (props["ComparisonOperator"], props["Threshold"]) == ("LessThanThreshold", 1)
    assert props["TreatMissingData"] == "breaching"  # no proof at all is the alarm
    param = f"{window.capitalize()}SilenceHours"
    assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == {"Ref": param}
    assert param in props["AlarmDescription"]["Fn::Sub"]
    # The drill is opt-in (RestoreDrills): its alarm exists only when drills run.
    assert alarm["Condition"] == ("DrillSilenceAlarmOn" if window == "drill" else "SilenceAlarmsOn")
    assert props["AlarmActions"] == props["OKActions"] == ACTIONS
    assert logical_id == f"{window.capitalize()}SilenceAlarm"


def test_silence_alarms_are_exactly_the_alarm_windows_one_per_schedule(raw):
    windows = [_dims(a)["window"] for a in _alarms(raw).values()
               if a["Properties"]["MetricName"] == metric_names.WORK_PROVEN]
    assert sorted(windows) == sorted(metric_names.ALARM_WINDOWS)
    assert sorted((fn, name) for fn, name, _ in _schedules(raw)) == sorted(WINDOW_SCHEDULES.values())
    for window, (fn, name) in WINDOW_SCHEDULES.items():
        body = json.loads(raw["Resources"][fn]["Properties"]["Events"][name]["Properties"]["Input"])
        assert body["job"] == JOBS[fn]
        assert (body["options"].get("mode") == "analyze") is (window == "analyze")
        assert (body["options"].get("drill") is True) is (window == "drill")


@pytest.mark.parametrize("window", metric_names.ALARM_WINDOWS)
def test_silence_window_parameters_are_hours_within_cloudwatchs_seven_days(raw, window):
    param = raw["Parameters"][f"{window.capitalize()}SilenceHours"]
    assert param["Type"] == "Number"
    assert param["Default"] == SILENCE_DEFAULTS[window]
    assert (param["MinValue"], param["MaxValue"]) == (1, 168)
    assert 3600 * param["MaxValue"] <= SEVEN_DAYS
    assert param["Description"]


def test_the_weekly_vacuum_window_says_it_alarms_after_one_missed_run(raw):
    description = raw["Parameters"]["VacuumSilenceHours"]["Description"]
    assert "168" in description and "one missed run" in description and "7 days" in description


@pytest.mark.parametrize("overrides", [
    {}, {"RestoreDrills": "true"},
    {"VacuumSilenceHours": "100", "SchedulesEnabled": "false", "AnalyzeSchedule": "rate(2 hours)",
     "ScheduleTimezone": "Europe/Berlin"}])
def test_status_is_told_the_same_schedules_and_windows_as_the_silence_alarms(raw, overrides):
    from pgkeeper.status import DEFAULT_SILENCE_HOURS

    t = Template(TEMPLATE, overrides)
    for fn in JOBS:
        env = t.function(fn).environment
        schedules, hours = json.loads(env["PGKEEPER_SCHEDULES"]), json.loads(env["PGKEEPER_SILENCE_HOURS"])
        assert schedules.pop("timezone") == t.parameters["ScheduleTimezone"]
        assert schedules.pop("enabled") == t.parameters["SchedulesEnabled"]
        expected = {window: t.resolve(raw["Resources"][f]["Properties"]["Events"][e]["Properties"][
            "ScheduleExpression"]) for window, (f, e) in WINDOW_SCHEDULES.items()}
        if not t.condition("DrillsOn"):
            expected["drill"] = ""  # no drill runs: status expects none
        assert schedules == expected
        assert hours == {w: int(t.parameters[f"{w.capitalize()}SilenceHours"]) for w in metric_names.ALARM_WINDOWS}
    assert DEFAULT_SILENCE_HOURS == SILENCE_DEFAULTS  # status's defaults off AWS are the parameters'


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, True),
    ({"SilenceAlarms": "false"}, False),
    ({"SchedulesEnabled": "false"}, False),  # nothing is due, so silence is no news
    ({"SilenceAlarms": "false", "SchedulesEnabled": "false"}, False),
])
def test_silence_alarms_exist_only_when_asked_for_and_the_schedules_are_on(raw, overrides, expected):
    assert raw["Parameters"]["SilenceAlarms"]["Default"] == "true"
    assert raw["Parameters"]["SilenceAlarms"]["AllowedValues"] == ["true", "false"]
    assert Template(TEMPLATE, overrides).condition("SilenceAlarmsOn") is expected
    silence = {k for k, a in _alarms(raw).items() if a["Properties"]["MetricName"] == metric_names.WORK_PROVEN}
    assert {k for k, a in _alarms(raw).items()
            if a.get("Condition") in ("SilenceAlarmsOn", "DrillSilenceAlarmOn")} == silence
    assert all("Condition" not in a for k, a in _alarms(raw).items() if k not in silence)


# --- where alarms go -----------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "creates", "subscribes"), [
    ({}, True, False),
    ({"AlarmEmail": "ops@example.com"}, True, True),
    ({"AlarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:ops"}, False, False),
])
def test_the_stack_creates_a_topic_when_none_is_given_and_subscribes_the_email(raw, overrides, creates, subscribes):
    t = Template(TEMPLATE, overrides)
    assert t.condition("CreatesAlarmTopic") is creates
    assert t.condition("HasAlarmTopic") is not creates
    assert t.condition("SubscribesAlarmEmail") is subscribes
    topic = raw["Resources"]["AlarmTopic"]
    assert (topic["Type"], topic["Condition"]) == ("AWS::SNS::Topic", "CreatesAlarmTopic")
    subscription = raw["Resources"]["AlarmEmailSubscription"]
    assert (subscription["Type"], subscription["Condition"]) == ("AWS::SNS::Subscription", "SubscribesAlarmEmail")
    assert subscription["Properties"] == {"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email",
                                          "Endpoint": {"Ref": "AlarmEmail"}}
    output = t.resolve(raw["Outputs"]["AlarmNotificationTopicArn"]["Value"])
    assert output == overrides.get("AlarmTopicArn", "AlarmTopic")  # sam local's stand-in for the topic's Ref


def test_alarm_email_accepts_empty_or_one_address(raw):
    assert raw["Parameters"]["AlarmEmail"]["Default"] == ""
    good = ["", "ops@example.com", "first.last+pgkeeper@mail.example.co.uk"]
    bad = ["ops", "ops@example", "two@example.com three@example.com", "ops@@example.com", " ops@example.com"]
    assert [v for v in good if not _accepts(raw, "AlarmEmail", v)] == []
    assert [v for v in bad if _accepts(raw, "AlarmEmail", v)] == []


def test_an_alarm_email_with_an_own_topic_is_refused_rather_than_ignored(raw):
    own = {"AlarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:ops"}
    assert _failed_rules(raw, {**own, "AlarmEmail": "ops@example.com"}) == [
        raw["Rules"]["AlarmEmailNeedsTheCreatedTopic"]["Assertions"][0]["AssertDescription"]]
    assert _failed_rules(raw, own) == []
    assert _failed_rules(raw, {"AlarmEmail": "ops@example.com"}) == []


def test_every_alarm_notifies_the_given_topic_or_the_created_one(raw, template):
    alarms = _alarms(raw)
    assert len(alarms) == 4 + 4 + 2 + len(metric_names.ALARM_WINDOWS)  # errors, dropped events, queues, silence
    given = Template(TEMPLATE, {"AlarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:ops"})
    for logical_id, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == ACTIONS, logical_id
        assert template.resolve(props["AlarmActions"]) == ["AlarmTopic"]
        assert given.resolve(props["AlarmActions"]) == ["arn:aws:sns:eu-west-1:123456789012:ops"]
        # Silence alarms also send the all-clear: the next proof ends the incident.
        assert props.get("OKActions") == (ACTIONS if props["MetricName"] == metric_names.WORK_PROVEN else None)


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_function_has_one_errors_alarm(raw, logical_id):
    errors = [a["Properties"] for a in _alarms(raw).values()
              if a["Properties"]["MetricName"] == "Errors" and _dims(a) == {"FunctionName": {"Ref": logical_id}}]
    assert len(errors) == 1
    alarm = errors[0]
    assert alarm["Namespace"] == "AWS/Lambda" and alarm["TreatMissingData"] == "notBreaching"
    assert (alarm["Statistic"], alarm["Period"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "Sum", 300, "GreaterThanOrEqualToThreshold", 1)


def test_every_alarm_reads_a_metric_that_is_emitted(raw):
    known = {"AWS/Lambda": {"Errors", "AsyncEventsDropped"}, "AWS/SQS": {"ApproximateNumberOfMessagesVisible"},
             metric_names.NAMESPACE: metric_names.ALL}
    for logical_id, alarm in _alarms(raw).items():
        props = alarm["Properties"]
        assert props["MetricName"] in known[props["Namespace"]], logical_id


# --- asynchronous failures -----------------------------------------------------------------------


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_function_sends_failed_async_events_to_the_stacks_queue(raw, logical_id):
    from pgkeeper.db.runs import MAX_EVENT_AGE_S  # when a queued run is given up as never started

    assert raw["Resources"][logical_id]["Properties"]["EventInvokeConfig"] == {
        "MaximumEventAgeInSeconds": MAX_EVENT_AGE_S, "MaximumRetryAttempts": 2,
        "DestinationConfig": {"OnFailure": {"Type": "SQS",
                                            "Destination": {"Fn::GetAtt": ["FailedInvocationsQueue", "Arn"]}}}}
    # Lambda sends with the function's role, and SAM grants nothing to a role it did not make.
    sends = [s for s in statements(raw, logical_id) if "sqs:" in str(s["Action"])]
    assert sends == [{"Sid": "SendFailedInvocations", "Effect": "Allow", "Action": "sqs:SendMessage",
                      "Resource": {"Fn::GetAtt": ["FailedInvocationsQueue", "Arn"]}}]


def test_every_schedule_retries_for_an_hour_then_dead_letters_to_the_stacks_queue(raw):
    schedules = _schedules(raw)
    assert len(schedules) == len(metric_names.ALARM_WINDOWS)
    for fn, name, props in schedules:
        assert props["RetryPolicy"] == {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}, (fn, name)
        assert props["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}}, (fn, name)
        assert "RoleArn" not in props  # SAM's generated role, which SAM lets send to the queue (below)


@pytest.mark.parametrize("queue", QUEUES)
def test_dead_letter_queues_are_encrypted_keep_14_days_and_alarm_on_any_message(raw, queue):
    resource = raw["Resources"][queue]
    assert resource["Type"] == "AWS::SQS::Queue" and "Condition" not in resource
    assert resource["Properties"] == {"MessageRetentionPeriod": 14 * 24 * 3600, "SqsManagedSseEnabled": True}
    watching = [a["Properties"] for a in _alarms(raw).values()
                if _dims(a) == {"QueueName": {"Fn::GetAtt": [queue, "QueueName"]}}]
    assert len(watching) == 1
    alarm = watching[0]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Maximum", 300, 1)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["TreatMissingData"] == "notBreaching"  # SQS publishes nothing for an idle, empty queue


@pytest.mark.parametrize("logical_id", sorted(JOBS))
def test_every_function_alarms_on_dropped_async_events(raw, logical_id):
    dropped = [a["Properties"] for a in _alarms(raw).values()
               if a["Properties"]["MetricName"] == "AsyncEventsDropped"
               and _dims(a) == {"FunctionName": {"Ref": logical_id}}]
    assert len(dropped) == 1
    alarm = dropped[0]
    assert alarm["Namespace"] == "AWS/Lambda"
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Sum", 300, 1)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["TreatMissingData"] == "notBreaching"


TOOLS_PYTHON = ROOT / ".venv-tools/bin/python"
# SAM's own translator (what `sam deploy` runs through CloudFormation's transform), offline: local
# CodeUri/ContentUri replaced by S3 URIs as `sam package` would.
TRANSFORM = """
import json, sys
from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

class NoManagedPolicies:
    def load(self):
        return {}

tpl = yaml_parse(open(sys.argv[1]).read())
for logical_id, resource in tpl["Resources"].items():
    for key in ("CodeUri", "ContentUri"):
        if key in resource.get("Properties", {}):
            resource["Properties"][key] = f"s3://bucket/{logical_id}.zip"
json.dump(transform(tpl, {}, NoManagedPolicies()), sys.stdout, default=str)
"""


@pytest.fixture(scope="module")
def transformed() -> dict:
    if not TOOLS_PYTHON.exists():
        pytest.skip("needs the tools venv (make tools) for SAM's translator")
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}
    run = subprocess.run([str(TOOLS_PYTHON), "-c", TRANSFORM, str(TEMPLATE)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_sam_gives_each_schedule_the_dlq_and_lets_its_role_send_there(transformed):
    resources = transformed["Resources"]
    queue = {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}
    schedules = {k: v for k, v in resources.items() if v["Type"] == "AWS::Scheduler::Schedule"}
    assert sorted(schedules) == sorted(fn + name for fn, name in WINDOW_SCHEDULES.values())
    for logical_id, schedule in schedules.items():
        target = schedule["Properties"]["Target"]
        assert target["DeadLetterConfig"] == {"Arn": queue}, logical_id
        assert target["RetryPolicy"] == {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}
        role = resources[target["RoleArn"]["Fn::GetAtt"][0]]
        grants = [st for policy in role["Properties"]["Policies"] for st in policy["PolicyDocument"]["Statement"]]
        assert {"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": queue} in grants, logical_id
    # Given an Arn, SAM makes no queue of its own.
    assert not [k for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue" and k not in QUEUES]


def test_sam_configures_every_functions_async_invocations(transformed):
    resources = transformed["Resources"]
    configs = {v["Properties"]["FunctionName"]["Ref"]: v["Properties"] for v in resources.values()
               if v["Type"] == "AWS::Lambda::EventInvokeConfig"}
    assert sorted(configs) == sorted(JOBS)
    for props in configs.values():
        # $LATEST: what the schedules and the 202 path's self-invocation (unqualified ARN) invoke.
        assert props["Qualifier"] == "$LATEST"
        assert props["DestinationConfig"] == {"OnFailure": {
            "Destination": {"Fn::GetAtt": ["FailedInvocationsQueue", "Arn"]}}}
        assert (props["MaximumRetryAttempts"], props["MaximumEventAgeInSeconds"]) == (2, 3600)


# --- the dashboard -------------------------------------------------------------------------------

_SUB = re.compile(r"\$\{([^}!][^}]*)\}")


def _dashboard(raw: dict, silence_alarms_on: bool = True) -> dict:
    """DashboardBody parsed, `${X}` as "<X>" and the SilenceAlarmArns variable as its branch would be."""
    text, variables = raw["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    cond, when_on, when_off = variables["SilenceAlarmArns"]["Fn::If"]
    assert cond == "SilenceAlarmsOn" and when_off == ""
    drill_cond, drill_on, drill_off = variables["DrillSilenceAlarmArn"]["Fn::If"]
    assert drill_cond == "DrillSilenceAlarmOn" and drill_off == ""
    local = {"SilenceAlarmArns": _placeholders(raw, when_on["Fn::Sub"]) if silence_alarms_on else "",
             "DrillSilenceAlarmArn": _placeholders(raw, drill_on["Fn::Sub"]) if silence_alarms_on else ""}
    assert set(variables) == set(local)
    return json.loads(_placeholders(raw, text, local))


def _placeholders(raw: dict, text: str, local: dict[str, str] | None = None) -> str:
    local = local or {}

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in local:
            return local[name]
        base = name.split(".", 1)[0]
        assert name.startswith("AWS::") or base in raw["Resources"], f"${{{name}}} names nothing in the template"
        return f"<{name}>"

    return _SUB.sub(replace, text)


def _searched(expression: str) -> tuple[str, str, dict[str, str]]:
    """A SEARCH('{namespace,dim,...} MetricName="X"', ...) row as (namespace, name, {dim: "*"}),
    checked like every spelled-out row (the fleet widget's, one stream per member)."""
    m = re.fullmatch(r"""SEARCH\('\{([^}]*)\} MetricName="(\w+)"', 'Sum', 3600\)""", expression)
    assert m, expression
    namespace, *dims = m.group(1).split(",")
    return namespace, m.group(2), {d: "*" for d in dims} | {"service": metric_names.SERVICE}


def _metric_rows(body: dict) -> list[tuple[str, str, dict[str, str]]]:
    rows = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        assert widget["properties"]["region"] == "<AWS::Region>"
        for row in widget["properties"]["metrics"]:
            if len(row) == 1 and "expression" in row[0]:
                rows.append(_searched(row[0]["expression"]))
                continue
            names = row[:-1] if isinstance(row[-1], dict) else row
            assert all(isinstance(x, str) for x in names) and len(names) % 2 == 0, row
            namespace, name, *pairs = names
            assert namespace not in {".", "..."}, f"spell every row out (the test reads each one): {row}"
            rows.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return rows


def test_dashboard_reads_only_known_metrics_with_their_documented_dimensions(raw):
    functions = {f"<{fn}>" for fn in JOBS}
    rows = _metric_rows(_dashboard(raw))
    assert rows
    for namespace, name, dims in rows:
        if namespace == "AWS/Lambda":
            assert set(dims) == {"FunctionName"} and dims["FunctionName"] in functions, (name, dims)
            continue
        assert namespace == metric_names.NAMESPACE, (namespace, name)
        assert name in metric_names.ALL, name
        assert dims.pop("service") == metric_names.SERVICE, (name, dims)
        if name == metric_names.WORK_PROVEN and "database" in dims:  # the fleet's members (runner._prove)
            assert dims == {"database": "*", "window": "*"}, dims
        elif name == metric_names.WORK_PROVEN:
            assert set(dims) == {"window"} and dims["window"] in metric_names.ALARM_WINDOWS
        elif name == metric_names.COLD_START:
            assert set(dims) == {"function_name"}
        else:
            assert set(dims) - {"target"} == {"job"} and dims["job"] in JOBS.values(), (name, dims)
            assert "target" not in dims or name == metric_names.ROWS_DELETED


def test_dashboard_shows_runs_proofs_durations_and_each_jobs_figures(raw):
    shown = {(name, dims.get("job") or dims.get("window") or dims.get("FunctionName"))
             for _, name, dims in _metric_rows(_dashboard(raw))}
    outcomes = (metric_names.JOB_SUCCEEDED, metric_names.JOB_FAILED, metric_names.JOB_PARTIAL, metric_names.JOB_SKIPPED)
    wanted = {(outcome, job) for outcome in outcomes for job in JOBS.values()}
    wanted |= {(metric_names.WORK_PROVEN, window) for window in metric_names.ALARM_WINDOWS}
    wanted |= {("Duration", f"<{fn}>") for fn in JOBS}
    wanted |= {(metric_names.VIEWS_REFRESHED, "refresh"), (metric_names.VIEWS_FAILED, "refresh"),
               (metric_names.KEYS_INVALIDATED, "refresh"), (metric_names.ROWS_DELETED, "cleanup"),
               (metric_names.TABLES_VACUUMED, "vacuum"), (metric_names.TABLES_ANALYZED, "vacuum"),
               (metric_names.WRAPAROUND_AGE_PCT, "vacuum"), (metric_names.BACKUP_BYTES, "backup"),
               (metric_names.BACKUP_SECONDS, "backup")}
    assert wanted - shown == set()


@pytest.mark.parametrize("silence_alarms_on", [True, False])
def test_dashboard_lists_every_alarm_that_exists(raw, silence_alarms_on):
    body = _dashboard(raw, silence_alarms_on)  # valid JSON either way
    listed = [arn for w in body["widgets"] if w["type"] == "alarm" for arn in w["properties"]["alarms"]]
    existing = {f"<{k}.Arn>" for k, a in _alarms(raw).items()
                if silence_alarms_on or a.get("Condition") not in ("SilenceAlarmsOn", "DrillSilenceAlarmOn")}
    assert sorted(listed) == sorted(existing)


def test_dashboard_is_an_output_and_its_body_leaves_the_stack_name_out(raw):
    # The stack-name guard (test_template_deploy) scans every !Sub: the body uses no ${AWS::StackName}.
    text = json.dumps(raw["Resources"]["Dashboard"])
    assert "AWS::StackName" not in text
    assert raw["Outputs"]["DashboardName"]["Value"] == {"Ref": "Dashboard"}
