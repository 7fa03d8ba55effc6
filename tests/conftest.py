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


def pytest_collection_modifyitems(config, items):
    # tests/interop/ drives real peer programs: every test there is an interop test.
    for item in items:
        if "interop" in item.path.parts:
            item.add_marker(pytest.mark.interop)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped interop test is a failure: a missing peer must not pass silently."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and item.get_closest_marker("interop"):
        report.outcome = "failed"
        report.longrepr = f"interop test skipped in CI (peer missing?): {report.longrepr}"
