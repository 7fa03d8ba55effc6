import os
import uuid

import boto3
import pytest

from devicegate import store as store_mod
from devicegate.local import dynamo, pki


@pytest.fixture(scope="session")
def moto_server():
    os.environ.update(dynamo.LOCAL_CREDENTIALS)
    with dynamo.MotoServer() as server:
        yield server


@pytest.fixture
def store(moto_server):
    name = f"t-{uuid.uuid4().hex[:12]}"
    client = boto3.client("dynamodb", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    store_mod.create_table(client, name)
    return store_mod.Store(name, endpoint=moto_server.endpoint)


@pytest.fixture(scope="session")
def scep_ca():
    key = pki.new_key()
    return pki.self_signed_ca("test SCEP CA", key, scep=True), key
