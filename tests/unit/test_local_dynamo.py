"""The local AWS endpoint under concurrency: moto's backends are not thread-safe, so the stack's
server serializes AWS requests (without it, concurrent TransactWriteItems got HTTP 500)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

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
