"""Every trigger shape becomes one JobEvent; anything else is refused with what was expected."""

from __future__ import annotations

import pytest

from pgkeeper.errors import EventError
from pgkeeper.events import is_function_url_event, parse_event


def test_scheduler_input_names_the_job_and_trigger():
    req = parse_event({"job": "cleanup", "options": {"dry_run": True}, "trigger": "schedule"}, "cleanup")
    assert (req.job, req.options, req.trigger) == ("cleanup", {"dry_run": True}, "schedule")


def test_classic_scheduled_event_runs_the_functions_own_job():
    event = {"version": "0", "id": "abc", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}
    req = parse_event(event, "vacuum")
    assert (req.job, req.trigger, req.request_id, req.options) == ("vacuum", "schedule", "abc", {})


def test_direct_invoke_defaults_to_invoke_trigger_and_keeps_run_id():
    run_id = "3f2b8c1e-9d4a-4e6b-8a7c-1b2d3e4f5a6b"
    req = parse_event({"job": "backup", "run_id": run_id, "trigger": "async"}, "backup")
    assert (req.trigger, req.run_id) == ("async", run_id)


def test_event_naming_another_job_is_refused():
    with pytest.raises(EventError) as err:
        parse_event({"job": "backup"}, "refresh")
    assert err.value.reason == "wrong_job" and "'refresh'" in str(err.value)


@pytest.mark.parametrize(
    "event",
    [[], "refresh", {"hello": 1}, {"job": "refresh", "optoins": {}}, {"job": "refresh", "options": [1]},
     {"job": "refresh", "trigger": "cron"}, {"job": "refresh", "run_id": "r1"},
     {"job": "refresh", "run_id": "urn:uuid:3f2b8c1e-9d4a-4e6b-8a7c-1b2d3e4f5a6b"}, {"job": 7},
     {"job": "refresh", "request_id": 5}],
)
def test_malformed_events_say_what_was_expected(event):
    with pytest.raises(EventError) as err:
        parse_event(event, "refresh")
    assert err.value.status == 400
    assert str(err.value)


def test_function_url_events_are_recognised():
    assert is_function_url_event({"version": "2.0", "requestContext": {"http": {"method": "POST"}}})
    assert not is_function_url_event({"job": "refresh"})
