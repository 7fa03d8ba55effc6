"""Fleet JSON fuzzing: the REST client's parsing, the sync and the policy webhook.

Seeds are the recorded Fleet answers in tests/fixtures/fleet. Properties: the client returns
well-typed objects or raises FleetError (nothing else escapes); a sync always returns a report,
and when Fleet's answer could not be used, the stored compliance is as it was; the webhook
answers 200 or a 400 with a JSON error, and a 400 changes nothing. Within the bounds.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import mutate
from tests.fuzz.harness import fuzz_settings
from tests.fuzz.targets import (
    FIXTURES, SEED_BODIES, check_fleet_client, check_sync, check_webhook, fixture, webhook_payload,
)

endpoints = st.sampled_from(sorted(SEED_BODIES))


def _body(data, endpoint: str) -> bytes:
    doc = fixture(SEED_BODIES[endpoint])
    return data.draw(st.builds(mutate.json_dumps, mutate.json_value_mutants(doc))
                     | mutate.json_text_mutants((FIXTURES / SEED_BODIES[endpoint]).read_bytes()))


@fuzz_settings(120)
@given(data=st.data(), endpoint=endpoints)
def test_client_on_damaged_answers(world, data, endpoint):
    check_fleet_client(world, endpoint, _body(data, endpoint))


@fuzz_settings(40)
@given(data=st.data(), endpoint=endpoints, status=st.sampled_from([400, 401, 402, 404, 429, 500, 503, 302]),
       retry_after=st.sampled_from([None, "", "1", "-5", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT",
                                    "Mon, 99 Foo 0000 99:99:99 GMT", "\u00e9", "1e9"]))
def test_client_on_error_answers(world, data, endpoint, status, retry_after):
    """Error statuses with damaged error bodies (Fleet's reason is quoted in the FleetError)."""
    body = data.draw(st.sampled_from([b"", b"null", b"[" * 100_000, b'{"message": 5, "errors": "x"}',
                                      b'{"message": "\\ud800", "errors": [{"reason": ["x"]}]}', b"\xff\xfe"])
                     | mutate.json_text_mutants(b'{"message": "Bad", "errors": [{"name": "n", "reason": "r"}]}'))
    headers = {"Retry-After": retry_after, "Location": "https://x/?token=1"} if retry_after is not None else {}
    check_fleet_client(world, endpoint, body, status, headers)


@fuzz_settings(40)
@given(data=st.data(), endpoint=st.sampled_from(["hosts", "global_policies", "team_policies", "teams"]))
def test_sync_keeps_state_on_damaged_answers(world, data, endpoint):
    check_sync(world, endpoint, _body(data, endpoint))


@fuzz_settings(60)
@given(data=st.data())
def test_webhook_payload_mutants(world, data):
    payload = webhook_payload()
    body = data.draw(st.builds(mutate.json_dumps, mutate.json_value_mutants(payload))
                     | mutate.json_text_mutants(json.dumps(payload).encode())
                     | st.sampled_from([b"", b"\xff", b"[]", b"{}", b'{"policy": {"id": 1e400, "name": "x"}}']))
    check_webhook(world, body)


@fuzz_settings(20)
@given(stamp=st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59", "2024-01-01", "", "Z",
                              "2024-01-01T00:00:00.1234567890123456789Z", "2024-13-01T00:00:00Z", "\ud800"]),
       host_ids=st.lists(st.integers(-5, 2**70), max_size=3))
def test_webhook_odd_fields(world, stamp, host_ids):
    payload = webhook_payload()
    payload["timestamp"] = stamp
    payload["hosts"] = [{"id": i} for i in host_ids]
    check_webhook(world, mutate.json_dumps(payload))
