"""The local AWS endpoint under concurrency: moto's backends are not thread-safe, so the stack's
server serializes AWS requests (without it, concurrent TransactWriteItems got HTTP 500)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devicegate import store as store_mod


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
# A cancelled transaction leaves the table exactly as it was, over HTTP as the Lambdas see it.

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
