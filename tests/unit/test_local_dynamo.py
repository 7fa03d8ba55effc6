"""The local AWS endpoint under concurrency: moto's backends are not thread-safe, so the stack's
server serializes AWS requests (without it, concurrent TransactWriteItems got HTTP 500)."""

from __future__ import annotations

import copy
import hashlib
import inspect
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import moto
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.dynamodb import models as moto_models

from devicegate import store as store_mod
from devicegate.local import dynamo


def test_concurrent_transactions_all_succeed(moto_server):
    table = f"t-{uuid.uuid4().hex[:12]}"
    setup = boto3.client("dynamodb", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    store_mod.create_table(setup, table)
    # no retries: a single 500 would show
    client = boto3.client("dynamodb", endpoint_url=moto_server.endpoint, region_name="us-east-1",
                          config=Config(retries={"mode": "standard", "max_attempts": 1}))

    def write(i):
        key = uuid.uuid4().hex
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": f"A#{key}"}, "sk": {"S": "A"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": table, "Item": {"pk": {"S": f"B#{key}"}, "sk": {"S": "B"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
        ])
        return key

    with ThreadPoolExecutor(16) as pool:
        keys = list(pool.map(write, range(64)))
    assert len(set(keys)) == 64
    count = setup.scan(TableName=table, Select="COUNT")["Count"]
    assert count == 128


# ---------------------------------------------------------------- TransactWriteItems' rollback
# The stack's server undoes the items a cancelled transaction wrote instead of deep-copying
# every table before each transaction (dynamo.install_item_undo). A cancelled transaction must
# still leave the table exactly as it was, over HTTP as the Lambdas see it.

def _client(server):
    return boto3.client("dynamodb", endpoint_url=server.endpoint, region_name="us-east-1",
                        config=Config(retries={"mode": "standard", "max_attempts": 1}))


@pytest.fixture
def table(moto_server):
    name = f"t-{uuid.uuid4().hex[:12]}"
    client = _client(moto_server)
    store_mod.create_table(client, name)
    client.put_item(TableName=name, Item={"pk": {"S": "OLD"}, "sk": {"S": "A"}, "v": {"N": "1"},
                                          "tags": {"SS": ["x", "y"]}, "m": {"M": {"b": {"B": b"\x00\xff"}}}})
    client.put_item(TableName=name, Item={"pk": {"S": "OTHER"}, "sk": {"S": "A"}, "v": {"N": "7"}})
    return client, name


def _everything(client, name):
    return sorted((item for item in client.scan(TableName=name, ConsistentRead=True)["Items"]),
                  key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def _key(pk, sk="A"):
    return {"pk": {"S": pk}, "sk": {"S": sk}}


FIRST_OPS = {
    "put over an existing item": {"Put": {"Item": {**_key("OLD"), "v": {"N": "2"}}}},
    "update of an existing item": {"Update": {"Key": _key("OLD"), "UpdateExpression": "SET v = v + :one REMOVE tags",
                                              "ExpressionAttributeValues": {":one": {"N": "1"}}}},
    "delete of an existing item": {"Delete": {"Key": _key("OLD")}},
    "put of a new item": {"Put": {"Item": {**_key("NEW"), "v": {"N": "2"}},
                                  "ConditionExpression": "attribute_not_exists(pk)"}},
    "put of a new item under an existing partition": {"Put": {"Item": {**_key("OLD", "B"), "v": {"N": "2"}}}},
    "update creating an item": {"Update": {"Key": _key("NEW"), "UpdateExpression": "SET v = :one",
                                           "ExpressionAttributeValues": {":one": {"N": "1"}}}},
}


def _with_table(op, name):
    (kind, body), = op.items()
    return {kind: {"TableName": name, **body}}


@pytest.mark.parametrize("first", FIRST_OPS, ids=list(FIRST_OPS))
def test_cancelled_transaction_leaves_the_first_ops_target_as_it_was(table, first):
    client, name = table
    before = _everything(client, name)
    with pytest.raises(ClientError) as caught:
        client.transact_write_items(TransactItems=[
            _with_table(FIRST_OPS[first], name),
            {"Put": {"TableName": name, "Item": {**_key("OTHER"), "v": {"N": "8"}},
                     "ConditionExpression": "v = :nine", "ExpressionAttributeValues": {":nine": {"N": "9"}}}},
        ])
    error = caught.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in error["CancellationReasons"]] == ["None", "ConditionalCheckFailed"]
    assert _everything(client, name) == before


def test_successful_transaction_applies_every_op(table):
    client, name = table
    client.transact_write_items(TransactItems=[
        {"Put": {"TableName": name, "Item": {**_key("NEW"), "v": {"N": "5"}},
                 "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Update": {"TableName": name, "Key": _key("OLD"), "UpdateExpression": "SET v = v + :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        {"Delete": {"TableName": name, "Key": _key("OTHER")}},
    ])
    items = {(i["pk"]["S"], i["sk"]["S"]): i["v"]["N"] for i in _everything(client, name)}
    assert items == {("NEW", "A"): "5", ("OLD", "A"): "2"}


def test_two_ops_on_one_item_is_a_validation_error_and_changes_nothing(table):
    client, name = table
    before = _everything(client, name)
    with pytest.raises(ClientError) as caught:
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": {**_key("NEW"), "v": {"N": "1"}}}},
            {"Put": {"TableName": name, "Item": {**_key("OLD"), "v": {"N": "3"}}}},
            {"Update": {"TableName": name, "Key": _key("NEW"), "UpdateExpression": "SET v = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}}}},
        ])
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["Error"]["Message"] == (
        "Transaction request cannot include multiple operations on one item")
    assert _everything(client, name) == before


def test_condition_check_failure_returns_the_item_when_asked(table):
    client, name = table
    old = next(i for i in _everything(client, name) if i["pk"]["S"] == "OLD")
    with pytest.raises(ClientError) as caught:
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": {**_key("NEW"), "v": {"N": "1"}}}},
            {"ConditionCheck": {"TableName": name, "Key": _key("OLD"), "ConditionExpression": "v = :nine",
                                "ExpressionAttributeValues": {":nine": {"N": "9"}},
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
        ])
    reasons = caught.value.response["CancellationReasons"]
    assert reasons[0] == {"Code": "None"}
    assert reasons[1]["Code"] == "ConditionalCheckFailed"
    assert reasons[1]["Item"] == old
    assert "NEW" not in {i["pk"]["S"] for i in _everything(client, name)}


# ------------------------------------------------ the wrapper itself, in this process (unpatched)

def test_the_pinned_moto_is_the_one_the_undo_was_written_for():
    original = moto_models.DynamoDBBackend.transact_write_items
    digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()
    assert (moto.__version__, digest) == dynamo.ITEM_UNDO_FOR


def test_install_keeps_motos_own_method_for_other_moto_code(monkeypatch, caplog):
    original = moto_models.DynamoDBBackend.transact_write_items
    monkeypatch.setattr(moto_models.DynamoDBBackend, "transact_write_items", original)  # undone after the test
    monkeypatch.setattr(dynamo, "ITEM_UNDO_FOR", ("5.2.5", "0" * 64))
    assert dynamo.install_item_undo() is False
    assert moto_models.DynamoDBBackend.transact_write_items is original
    assert "keeping moto's deep copy" in caplog.text
    monkeypatch.undo()
    monkeypatch.setattr(moto_models.DynamoDBBackend, "transact_write_items", original)
    assert dynamo.install_item_undo() is True
    assert moto_models.DynamoDBBackend.transact_write_items.__wrapped__ is original


def _backend(streams=None):
    """Table "t" keyed by pk and sk, table "h" by pk alone."""
    backend = moto_models.DynamoDBBackend("us-east-1", "123456789012")
    for name, keys in (("t", ("pk", "sk")), ("h", ("pk",))):
        backend.create_table(name, schema=[{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ("HASH", "RANGE"))],
                             throughput=None, attr=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
                             global_indexes=None, indexes=None, streams=streams, billing_mode="PAY_PER_REQUEST",
                             sse_specification=None, tags=[], deletion_protection_enabled=None, warm_throughput=None)
    return backend


def _state(backend):
    return {name: sorted(str(item.to_json()) for item in table.all_items()) for name, table in backend.tables.items()}


def _outcome(call):
    try:
        call()
    except Exception as e:  # noqa: BLE001 - compared as moto reports it
        return type(e).__name__, getattr(e, "message", str(e)), getattr(e, "description", None)
    return None


def _random_transaction(rng):
    def key(table):
        if table == "h":
            return {"pk": {"S": rng.choice("abc")}}
        return {"pk": {"S": rng.choice("ab")}, "sk": {"S": rng.choice("xyz")}}

    def condition():
        return rng.choice([{}, {"ConditionExpression": "attribute_not_exists(pk)"},
                           {"ConditionExpression": "attribute_exists(pk)"},
                           {"ConditionExpression": "n < :three", "ExpressionAttributeValues": {":three": {"N": "3"}}}])

    def op():
        kind = rng.choice(["Put", "Update", "Delete", "ConditionCheck"])
        body = {"TableName": rng.choice(["t"] * 5 + ["h"] * 4 + ["missing"]), **condition()}
        if rng.random() < 0.3:
            body["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        if kind == "Put":
            body["Item"] = {**key(body["TableName"]), "n": {"N": str(rng.randrange(5))}, "s": {"SS": ["p", "q"][: rng.randrange(1, 3)]}}
        else:
            body["Key"] = key(body["TableName"])
        if kind == "Update":
            values = body.setdefault("ExpressionAttributeValues", {})
            values[":one"] = {"N": "1"}
            body["UpdateExpression"] = rng.choice(["SET n = :one", "ADD n :one", "REMOVE s"])
        if kind == "ConditionCheck" and "ConditionExpression" not in body:
            body["ConditionExpression"] = "attribute_exists(pk)"
        return {kind: body}

    return [op() for _ in range(rng.randrange(1, 5))]


@pytest.fixture
def copied_tables(monkeypatch):
    """Names of the moto tables deep-copied (by anyone) while the test runs."""
    copied = []
    real_deepcopy = copy.deepcopy

    def counting_deepcopy(obj, memo=None):
        if isinstance(obj, moto_models.Table):
            copied.append(obj.name)
        return real_deepcopy(obj, memo)

    monkeypatch.setattr(copy, "deepcopy", counting_deepcopy)
    return copied


@pytest.mark.parametrize("streams", [None, {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}],
                         ids=["no stream", "stream"])
def test_item_undo_matches_motos_deep_copy_on_random_transactions(copied_tables, streams):
    """Both ways run side by side from the same state: the same error and the same tables after
    every transaction. The undo side never deep-copies a table, except with a stream (whose
    records only moto's own snapshot rolls back: then the stream records must match too)."""
    original = moto_models.DynamoDBBackend.transact_write_items
    theirs, ours = _backend(streams), _backend(streams)
    rng = random.Random(5)
    outcomes = set()
    for _ in range(600):
        items = _random_transaction(rng)
        expected = _outcome(lambda: original(theirs, copy.deepcopy(items)))
        copied_tables.clear()
        got = _outcome(lambda: dynamo.transact_with_item_undo(original, ours, copy.deepcopy(items)))
        if not streams:
            assert copied_tables == []
        assert got == expected, items
        assert _state(ours) == _state(theirs), items
        assert all(isinstance(table, moto_models.Table) for table in ours.tables.values())
        if streams:
            assert ([len(t.stream_shard.items) for t in ours.tables.values()]
                    == [len(t.stream_shard.items) for t in theirs.tables.values()])
        outcomes.add(expected and expected[0])
    assert moto_models.copy is copy  # moto's module has its own copy module back
    assert {None, "TransactionCanceledException", "MultipleTransactionsException", "MockValidationException"} >= outcomes
    assert {None, "TransactionCanceledException", "MultipleTransactionsException"} <= outcomes


def test_connections_are_kept_alive_and_bodies_framed(moto_server, monkeypatch):
    """The stand-in keeps a connection alive across calls (as AWS endpoints do), frames every
    reply with Content-Length, and closes when the client asks."""
    import http.client
    import json
    import os

    from devicegate import awsjson

    env = {**os.environ, **dynamo.LOCAL_CREDENTIALS}
    client = awsjson.Client("dynamodb", "us-east-1", moto_server.endpoint, env=env)
    name = f"keepalive-{uuid.uuid4().hex[:8]}"
    client.call("CreateTable", {"TableName": name, "BillingMode": "PAY_PER_REQUEST",
                                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}]})
    for i in range(5):
        client.call("PutItem", {"TableName": name, "Item": {"pk": {"S": str(i)}, "v": {"S": "x" * 1000 * i}}})
    got = client.call("GetItem", {"TableName": name, "Key": {"pk": {"S": "4"}}})
    assert got["Item"]["v"]["S"] == "x" * 4000 and client.connections_opened == 1
    with pytest.raises(awsjson.ServiceError) as missing:  # an error reply keeps the connection too
        client.call("GetItem", {"TableName": name + "-nope", "Key": {"pk": {"S": "4"}}})
    assert missing.value.code == "ResourceNotFoundException" and client.connections_opened == 1

    host, port = moto_server.endpoint.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/moto-api/", headers={"Connection": "close"})
    reply = conn.getresponse()
    body = reply.read()
    assert reply.status == 200 and int(reply.headers["Content-Length"]) == len(body) and reply.will_close


@pytest.mark.parametrize("raw,status", [
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabcGET /smuggled HTTP/1.1\r\n\r\n", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\nab", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000\r\n\r\nab", 413),
    (b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\n\r\n", 500),
])
def test_the_keep_alive_front_frames_requests_strictly(raw, status):
    """Found by review: whatever is not framed by exactly one Content-Length or plain chunked
    encoding is refused and the connection closed, so no leftover bytes become a request; an
    app failure is a 500 that also ends the connection."""
    import socket
    import threading

    seen = []

    def app(environ, start_response):
        seen.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("app failure")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok:" + environ["wsgi.input"].read()]

    server = dynamo._WsgiServer(("127.0.0.1", 0), app)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with socket.create_connection(server.server_address, timeout=5) as sock:
            sock.sendall(raw)
            reply = b""
            while chunk := sock.recv(65536):  # ends: the server closes the connection
                reply += chunk
        assert reply.startswith(f"HTTP/1.1 {status} ".encode()) and reply.count(b"HTTP/1.1 ") == 1, reply[:300]
        assert seen == (["/boom"] if status == 500 else [])
        # chunked and plain bodies that are framed right still arrive whole, on one connection
        with socket.create_connection(server.server_address, timeout=5) as sock:
            sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
                         b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nfg")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.count(b"HTTP/1.1 200 ") == 2 and b"ok:abcde" in reply and reply.endswith(b"ok:fg"), reply
    finally:
        server.shutdown()
        server.server_close()
