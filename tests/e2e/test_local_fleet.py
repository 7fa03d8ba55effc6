"""Fleet to login on the real local stack: a failing policy blocks after a sync or at once via
the webhook; "check again" refreshes the host from Fleet and resumes the same login; stale data
follows fail_mode."""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.parse
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from html import unescape

import boto3
import pytest

from devicegate.local import tools
from tests.stack_helpers import StackProcess, enrolled_device, request, running_stack, set_result, tls_context


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # no scheduled sync during the test: every sync here is one the test asked for
    yield from running_stack(tmp_path_factory, "fleet", args=("--sync-interval", "3600"))


def sso(stack, device_ctx, user="ada@example.com"):
    e = stack.endpoints
    status, headers, _ = request(f"{e['okta']['login_url']}?user={urllib.parse.quote(user)}", tls_context(e["tls_ca"]))
    assert status == 302
    parts = urllib.parse.urlsplit(headers["location"])
    return request(headers["location"], device_ctx, raw_path=f"{parts.path}?{parts.query}")


def deliver(stack, page: bytes):
    """Post the auto-POST form to the local Okta's ACS, as the browser would."""
    e = stack.endpoints
    text = page.decode()
    form = {"SAMLResponse": unescape(re.search(r'name="SAMLResponse"\s+value="([^"]+)"', text).group(1))}
    status, _, body = request(e["okta"]["acs_url"], tls_context(e["tls_ca"]), "POST", urllib.parse.urlencode(form).encode(),
                              {"Content-Type": "application/x-www-form-urlencoded"})
    return status, body.decode()


def block_token(page: bytes) -> str:
    return unescape(re.search(r'name="token"\s+value="([^"]+)"', page.decode()).group(1))


def recheck(stack, device_ctx, token: str):
    """The block page's "check again" button."""
    e = stack.endpoints
    status, _, page = request(e["device_url"] + "/saml/recheck", device_ctx, "POST",
                              urllib.parse.urlencode({"token": token, "action": "recheck"}).encode(),
                              {"Content-Type": "application/x-www-form-urlencoded", "Origin": e["device_url"]})
    return status, page


@contextmanager
def fleet_faults(stack, kind: str, count: int = 1000, **extra):
    """The simulated Fleet's API answers with this fault (every path) until the block ends."""
    tools._fleet_admin(stack.endpoints, "POST", "/_sim/faults", {"path": "/api/*", "kind": kind, "count": count, **extra})
    try:
        yield
    finally:
        tools._fleet_admin(stack.endpoints, "DELETE", "/_sim/faults")


def test_webhook_blocks_at_once_and_check_again_lets_the_same_login_through(stack, tmp_path):
    e = stack.endpoints
    device = enrolled_device(stack, tmp_path / "mac")
    ctx = device.context(e["tls_ca"])
    assert sso(stack, ctx)[0] == 200

    # Fleet sees the failure and posts its webhook: blocked with no sync in between
    tools.fleet_set_policy(stack.state_dir, device.uuid, "FileVault enabled", "fail", critical=True)
    state = tools.fleet_state(stack.state_dir)
    policy_id = next(p["id"] for p in state["policies"].values() if p["name"] == "FileVault enabled")
    sim_ctx = tls_context(e["tls_ca"])
    status, _, body = request(f"{e['fleet']['url']}/_sim/webhook/{policy_id}", sim_ctx,
                              headers={"Authorization": f"Bearer {e['fleet']['token']}"})
    assert status == 200
    status, _, reply = request(e["fleet"]["webhook_url"], tls_context(e["tls_ca"]), "POST", body,
                               {"Content-Type": "application/json"})
    assert status == 200 and json.loads(reply)["marked_failing"] >= 1
    status, _, page = sso(stack, ctx)
    assert status == 403 and b"FileVault enabled" in page
    token = block_token(page)

    # fixed in Fleet: "check again" pulls the host from Fleet (no sync) and answers the same login
    tools.fleet_set_policy(stack.state_dir, device.uuid, "FileVault enabled", "pass", critical=True)
    status, page = recheck(stack, ctx, token)
    assert status == 200 and b"SAMLResponse" in page
    status, accepted = deliver(stack, page)
    assert status == 200 and "accepted the device factor" in accepted and "ada@example.com" in accepted


def test_a_sync_blocks_the_next_login(stack, tmp_path):
    e = stack.endpoints
    device = enrolled_device(stack, tmp_path / "mac")
    ctx = device.context(e["tls_ca"])
    set_result(stack, device.uuid, "FileVault enabled", "fail")
    status, _, page = sso(stack, ctx)
    assert status == 403 and b"How to fix FileVault enabled." in page
    set_result(stack, device.uuid, "FileVault enabled", "pass")
    assert sso(stack, ctx)[0] == 200


def test_removing_the_host_in_fleet_revokes_its_certificate(stack, tmp_path):
    e = stack.endpoints
    device = enrolled_device(stack, tmp_path / "mac")
    tools.fleet_remove_host(stack.state_dir, device.uuid)
    report = tools.sync_now(stack.state_dir)
    assert report["revoked"] >= 1
    # the IdP refuses it at once; the local sync also republishes the CRL, so within a second the
    # listener refuses the handshake as well
    deadline = time.monotonic() + 10
    while True:
        try:
            status, _, page = sso(stack, device.context(e["tls_ca"]))
        except (ssl.SSLError, ConnectionError):
            break
        assert status == 403 and b"revoked" in page
        assert time.monotonic() < deadline, "the republished CRL never reached the listener"
        time.sleep(0.2)


def _age(stack, uuid, hours):
    e = stack.endpoints
    ddb = boto3.client("dynamodb", endpoint_url=e["dynamodb"]["endpoint"], region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    old = (datetime.now(timezone.utc) - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
    ddb.update_item(TableName=e["dynamodb"]["table"], Key={"pk": {"S": "COMPLIANCE"}, "sk": {"S": f"HOST#{uuid}"}},
                    UpdateExpression="SET synced_at = :t", ExpressionAttributeValues={":t": {"S": old}})


def test_stale_data_fails_closed_by_default(stack, tmp_path):
    device = enrolled_device(stack, tmp_path / "mac")
    _age(stack, device.uuid, hours=3)
    status, _, page = sso(stack, device.context(stack.endpoints["tls_ca"]))
    assert status == 403 and b"out of date" in page


def test_stale_data_fails_open_when_configured(tmp_path):
    proc = StackProcess(tmp_path / "state", env={"DEVICEGATE_FAIL_MODE": "open"}, args=("--sync-interval", "3600"))
    proc.start()
    try:
        device = enrolled_device(proc, tmp_path / "mac")
        _age(proc, device.uuid, hours=3)
        assert sso(proc, device.context(proc.endpoints["tls_ca"]))[0] == 200
    finally:
        assert proc.stop() == 0


def test_pointing_the_stack_at_another_fleet(tmp_path):
    """--fleet-url/--fleet-token-file (+ a private CA): the stack uses that Fleet, not its own."""
    from devicegate.local import pki
    from devicegate.local.fleet_sim import SimulatedFleet

    ca_key = pki.new_key()
    ca = pki.self_signed_ca("their Fleet's CA", ca_key)
    server_key = pki.new_key()
    server = pki.server_certificate(ca, ca_key, server_key, ["127.0.0.1"])
    for name, text in (("ca.pem", pki.pem_cert(ca)), ("server.pem", pki.pem_cert(server)),
                       ("server.key", pki.pem_key(server_key)), ("token", "their-api-token\n")):
        (tmp_path / name).write_text(text)
    theirs = SimulatedFleet(tmp_path / "theirs.json", token="their-api-token", certfile=str(tmp_path / "server.pem"),
                            keyfile=str(tmp_path / "server.key"))
    theirs.start()
    uuid = "0E8A5C4D-1111-4222-8333-944455556666"
    theirs.add_host(uuid, "their-mac", email="ada@example.com")
    theirs.set_policy(uuid, "FileVault enabled", "fail", critical=True)
    proc = StackProcess(tmp_path / "state", args=("--fleet-url", theirs.url, "--fleet-token-file", str(tmp_path / "token"),
                                                  "--fleet-ca-bundle", str(tmp_path / "ca.pem"), "--sync-interval", "3600"))
    e = proc.start()
    try:
        assert e["fleet"]["mode"] == "real" and e["fleet"]["url"] == theirs.url and e["fleet"]["token"] is None
        report = tools.sync_now(proc.state_dir)
        assert report["complete"] and report["hosts_seen"] == 1 and report["hosts_failing"] == 1
        enrolled = tools.enroll(proc.state_dir, tmp_path / "mac", uuid)  # known to their Fleet
        ctx = tls_context(e["tls_ca"], enrolled.cert_path.read_text(), enrolled.key_path.read_text())
        assert sso(proc, ctx)[0] == 403
        with pytest.raises(tools.ToolError, match="real Fleet"):
            tools.fleet_add_host(proc.state_dir, uuid)
    finally:
        assert proc.stop() == 0
        theirs.stop()


def test_single_host_refresh_from_the_cli(stack, tmp_path):
    import subprocess
    import sys

    device = enrolled_device(stack, tmp_path / "mac")
    tools.fleet_set_policy(stack.state_dir, device.uuid, "FileVault enabled", "fail", critical=True)
    out = subprocess.run([sys.executable, "-m", "devicegate", "local", "sync", "--state-dir", str(stack.state_dir),
                          "--host", device.uuid], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "FileVault enabled: fail" in out.stdout, out.stderr
    assert sso(stack, device.context(stack.endpoints["tls_ca"]))[0] == 403


# ---------------------------------------------------------------- Fleet down or slow


def test_fleet_down_during_a_sync_keeps_the_last_good_state(stack, tmp_path):
    device = enrolled_device(stack, tmp_path / "mac")
    ctx = device.context(stack.endpoints["tls_ca"])
    tools.fleet_set_policy(stack.state_dir, device.uuid, "FileVault enabled", "fail", critical=True)
    with fleet_faults(stack, "500"):
        report = tools.sync_now(stack.state_dir)
    assert not report["complete"] and report["errors"] and report["deleted"] == report["revoked"] == 0
    assert sso(stack, ctx)[0] == 200, "a failed sync replaces nothing: the last good state stands"
    assert tools.sync_now(stack.state_dir)["complete"]
    assert sso(stack, ctx)[0] == 403, "Fleet back: the next sync brings its news"


def test_fleet_slow_on_check_again_keeps_the_last_good_state(stack, tmp_path):
    device = enrolled_device(stack, tmp_path / "mac")
    ctx = device.context(stack.endpoints["tls_ca"])
    set_result(stack, device.uuid, "FileVault enabled", "fail")
    status, _, page = sso(stack, ctx)
    assert status == 403
    token = block_token(page)
    tools.fleet_set_policy(stack.state_dir, device.uuid, "FileVault enabled", "pass", critical=True)
    # Fleet answers too late for "check again" (3 s per try): the stored, failing, state decides
    with fleet_faults(stack, "timeout", count=4, seconds=4):
        status, page = recheck(stack, ctx, token)
    assert status == 403 and b"FileVault enabled" in page and b"SAMLResponse" not in page
    status, page = recheck(stack, ctx, token)  # Fleet answers again: the same login goes through
    assert status == 200 and b"SAMLResponse" in page


def test_fleet_down_on_check_again_with_stale_data_fails_closed(stack, tmp_path):
    device = enrolled_device(stack, tmp_path / "mac")
    ctx = device.context(stack.endpoints["tls_ca"])
    _age(stack, device.uuid, hours=3)
    status, _, page = sso(stack, ctx)
    assert status == 403 and b"out of date" in page
    token = block_token(page)
    with fleet_faults(stack, "500"):
        status, page = recheck(stack, ctx, token)
    assert status == 403 and b"out of date" in page and b"SAMLResponse" not in page
    status, page = recheck(stack, ctx, token)  # Fleet back: the refresh makes the data fresh
    assert status == 200 and b"SAMLResponse" in page
