"""Headless Chromium against the real local stack: a device certificate from our SCEP CA in NSS,
chosen automatically for the device host; login -> auto-POST -> the local Okta's ACS shows the
verified assertion; a failing host sees the block page (screenshot kept), fixes it, checks again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devicegate.local import tools
from tests.interop import browser
from tests.stack_helpers import fleet_host, running_stack

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    missing = browser.missing()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    yield from running_stack(tmp_path_factory, "browser")


def test_login_blocked_then_fixed_in_a_real_browser(stack, tmp_path):
    e = stack.endpoints
    host = fleet_host(stack, policies=(), hostname="Ada's MacBook Pro", email="ada@example.com", sync=False)
    tools.fleet_set_policy(stack.state_dir, host, "FileVault enabled", "fail", critical=True,
                           resolution="Open System Settings > Privacy & Security.\nTurn on FileVault.")
    tools.sync_now(stack.state_dir)
    device = tools.enroll(stack.state_dir, tmp_path / "mac", host)
    cert = x509.load_pem_x509_certificate(device.cert_path.read_bytes())
    key = serialization.load_pem_private_key(device.key_path.read_bytes(), password=None)
    scep_ca = x509.load_pem_x509_certificate(e["scep_ca"].encode())
    issuer_cn = scep_ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    login_url = e["okta"]["login_url"] + "?user=ada%40example.com&relay=from-the-browser"

    with browser.Chromium(trusted_cas=[e["tls_ca"].encode()], client_cert=browser.ClientCertificate(cert, key),
                          auto_select_origins=[e["device_url"]], issuer_cn=issuer_cn) as chromium:
        blocked = chromium.load(login_url)
        # kept after the run: test-output/ (gitignored) or $DEVICEGATE_TEST_OUTPUT
        out = Path(os.environ.get("DEVICEGATE_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output"))
        out.mkdir(parents=True, exist_ok=True)
        shot = out / "block_page.png"
        blocked.save_screenshot(shot)
        print(f"block page screenshot: {shot}")
        assert blocked.url.startswith(e["sso_url"]), blocked.navigations
        assert "This device is blocked" in blocked.text and "FileVault enabled" in blocked.text
        assert "Turn on FileVault." in blocked.text and "Ada's MacBook Pro" in blocked.text.replace("\u2019", "'")
        assert not [c for c in blocked.console if "Content Security Policy" in str(c)], blocked.console

        still = chromium.click("form:has(input[name=action][value=recheck]) button")
        assert "FileVault enabled" in still.text  # nothing changed yet

        tools.fleet_set_policy(stack.state_dir, host, "FileVault enabled", "pass", critical=True)
        tools.sync_now(stack.state_dir)
        fixed = chromium.click("form:has(input[name=action][value=recheck]) button")
        assert fixed.url == e["okta"]["acs_url"], fixed.navigations
        assert "accepted the device factor" in fixed.text and "ada@example.com" in fixed.text
        assert "from-the-browser" in fixed.text and "verified" in fixed.text

        direct = chromium.load(login_url)  # a fresh login now goes straight through the auto-POST
        assert direct.url == e["okta"]["acs_url"] and "accepted the device factor" in direct.text
        methods = [n.get("method") if isinstance(n, dict) else getattr(n, "method", None) for n in direct.navigations]
        assert "POST" in methods, direct.navigations


def test_without_a_device_certificate_the_browser_cannot_reach_the_device_host(stack):
    e = stack.endpoints
    with browser.Chromium(trusted_cas=[e["tls_ca"].encode()]) as chromium:
        page = chromium.load(e["okta"]["login_url"] + "?user=ada%40example.com")
    assert page.error and ("CERT" in page.error or "SOCKET" in page.error or "CONNECTION" in page.error), page.error
    assert os.path.exists(e["state_dir"])
