"""ALB event fuzzing: real events for every route, with their JSON damaged, through the Lambdas.

Properties: ``Request.from_event`` raises only BadEvent, ``client_cert`` only MtlsHeaderError;
every Lambda returns a result ALB accepts (``parse_response``: a BadResponse would be ALB's 502)
with a status below 500; nothing is logged as an error; within the time and memory bounds.
"""

from __future__ import annotations

import base64
import copy
from functools import lru_cache

from hypothesis import given
from hypothesis import strategies as st

from devicegate import alb
from tests.fuzz import mutate
from tests.fuzz.harness import fuzz_settings
from tests.fuzz.targets import check_event, seed_events


@lru_cache(maxsize=None)
def _seeds(world):
    return tuple(seed_events(world))


_HEADER_NAMES = ["x-amzn-mtls-clientcert-serial-number", "x-amzn-mtls-clientcert-leaf", "x-amzn-mtls-clientcert",
                 "x-amzn-mtls-clientcert-validity", "x-amzn-mtls-clientcert-subject", "content-type",
                 "authorization", "origin", "x-forwarded-for", "Content-Type", "Host", "h\u00e9", "a b", "x\r\ny", ""]
_HEADER_VALUES = ["", " ", "x" * 70_000, "a\r\nb", "\x00", "\ud800", "\u00e9", "Bearer ", "Bearer \ud800",
                  "Bearer fuzz-webhook-secret-0123456789", "application/x-www-form-urlencoded",
                  "NotBefore=2024-02-30T00:00:00Z;NotAfter=2024-01-01T00:00:00Z", "0" * 100, "DE:AD:BE:EF",
                  "-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----", "%ff%fe", "::", "1,2,3,"]


@fuzz_settings(80)
@given(data=st.data(), index=st.integers(0, 17))
def test_event_json_mutants(world, data, index):
    event = data.draw(mutate.json_value_mutants(_seeds(world)[index]))
    check_event(world, event)


@fuzz_settings(70)
@given(data=st.data(), index=st.integers(0, 17),
       edits=st.lists(st.tuples(st.sampled_from(_HEADER_NAMES), st.sampled_from(_HEADER_VALUES),
                                st.sampled_from(["set", "add", "drop"])), min_size=1, max_size=3))
def test_header_mutants(world, data, index, edits):
    """Odd, huge, smuggled (repeated) and non-UTF-8 headers, in either header style."""
    event = copy.deepcopy(_seeds(world)[index])
    multi = "multiValueHeaders" in event
    headers = event["multiValueHeaders" if multi else "headers"]
    for name, value, op in edits:
        if op == "drop":
            headers.pop(name, None)
        elif multi:
            headers.setdefault(name, []) if op == "add" else headers.__setitem__(name, [])
            headers[name].append(value)
        else:
            headers[name] = value
    check_event(world, event)


@fuzz_settings(50)
@given(data=st.data(), index=st.integers(0, 17),
       op=st.sampled_from(["b64_flag", "b64_garbage", "b64_body", "huge", "query", "path", "method", "bytes"]))
def test_body_query_path_mutants(world, data, index, op):
    event = copy.deepcopy(_seeds(world)[index])
    if op == "b64_flag":
        event["isBase64Encoded"] = not event.get("isBase64Encoded")
    elif op == "b64_garbage":
        event.update(isBase64Encoded=True, body=data.draw(st.sampled_from(["===", "a", "\u00e9", "AAA=AAA=", " ", "\ud800"])))
    elif op == "b64_body":
        body = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"].encode()
        event.update(isBase64Encoded=True, body=base64.b64encode(data.draw(mutate.byte_mutants(body or b"x"))).decode())
    elif op == "huge":
        event.update(isBase64Encoded=data.draw(st.booleans()), body="A" * (alb.MAX_BODY_BYTES * 4 // 3 + 8))
    elif op == "query":
        key = "multiValueQueryStringParameters" if "multiValueHeaders" in event else "queryStringParameters"
        name = data.draw(st.sampled_from(["operation", "message", "SAMLRequest", "secret", "%6Fperation", "", "a=b"]))
        value = data.draw(st.sampled_from(["PKIOperation", "GetCACert", "%", "%ff", "\ud800", "x" * 20000, "", "+"]))
        event[key] = {**(event.get(key) or {}), name: [value] if key.startswith("multi") else value}
    elif op == "path":
        event["path"] = data.draw(st.sampled_from(["/scep/", "//scep", "/saml/sso?x", "/SAML/SSO", "/\ud800", "/%2e%2e/",
                                                   "/" + "a" * 10000]))
    elif op == "method":
        event["httpMethod"] = data.draw(st.sampled_from(["get", "HEAD", "OPTIONS", "DELETE", "P\u00d6ST", "", "G ET"]))
    else:
        event = data.draw(st.sampled_from([None, [], "", 0, {"httpMethod": None}, {"path": 5}, {}]))
    check_event(world, event)


@fuzz_settings(40)
@given(event=st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["httpMethod", "path", "headers", "multiValueHeaders", "queryStringParameters",
                         "multiValueQueryStringParameters", "body", "isBase64Encoded", "x"]), children, max_size=6),
    max_leaves=12))
def test_arbitrary_events(world, event):
    check_event(world, event)
