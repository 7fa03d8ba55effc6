"""The README's login walkthrough, as commands against a real local stack process."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.stack_helpers import running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "login")


def dg(*args, expect=0):
    result = subprocess.run([sys.executable, "-m", "devicegate", "--json", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == expect, result.stdout + result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_enroll_login_block_and_recover(stack, tmp_path):
    state = str(stack.state_dir)
    host = "5F0C3E8A-1B2C-4D5E-8F90-A1B2C3D4E5F6"
    dg("local", "fleet", "add-host", "--state-dir", state, "--uuid", host, "--hostname", "alice-mbp",
       "--email", "alice@example.com")
    dg("local", "fleet", "set-policy", "--state-dir", state, "--host", host, "--policy", "FileVault enabled",
       "--result", "pass", "--critical", "--resolution", "Turn on FileVault.")
    report = dg("local", "sync", "--state-dir", state)
    assert report["complete"] and report["hosts_seen"] >= 1 and report["written"] >= 1
    enrolled = dg("local", "enroll", "--state-dir", state, "--out", str(tmp_path / "mac"), "--uuid", host)
    cert, key = enrolled["cert"], enrolled["key"]
    login = ("local", "login", "--state-dir", state, "--cert", cert, "--key", key)

    for binding in ("redirect", "post"):
        allowed = dg(*login, "--binding", binding)
        assert allowed["outcome"] == "allowed" and allowed["details"]["NameID"] == "alice@example.com"
        assert "verified" in allowed["details"]["Signature"]

    dg("local", "fleet", "set-policy", "--state-dir", state, "--host", host, "--policy", "FileVault enabled",
       "--result", "fail", "--critical")
    dg("local", "sync", "--state-dir", state)
    blocked = dg(*login, expect=3)
    assert blocked["outcome"] == "blocked" and "FileVault enabled" in blocked["page"]
    assert "Turn on FileVault." in blocked["page"] and "alice-mbp" in blocked["page"]

    refused = dg("local", "login", "--state-dir", state, expect=3)
    assert refused["outcome"] == "refused" and "handshake" in json.dumps(refused["details"])

    no_subject = dg(*login, "--user", "", expect=3)
    assert no_subject["status"] == 400 and "did not say who" in no_subject["page"]

    result = subprocess.run([sys.executable, "-m", "devicegate", "local", "enroll", "--state-dir", state,
                             "--out", str(tmp_path / "other")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not known to Fleet" in result.stderr, "only Fleet's hosts enroll"


def test_commands_explain_a_missing_stack(tmp_path):
    result = subprocess.run([sys.executable, "-m", "devicegate", "local", "login", "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no running local stack" in result.stderr and "./dev up" in result.stderr


def test_profile_for_the_local_stack(stack, tmp_path):
    import plistlib

    out = tmp_path / "devicegate.mobileconfig"
    summary = dg("profile", "--state-dir", str(stack.state_dir), "--out", str(out))
    assert summary["scope"] == "User" and out.stat().st_mode & 0o077 == 0
    profile = plistlib.loads(out.read_bytes())
    scep = next(p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.security.scep")
    assert scep["PayloadContent"]["URL"] == stack.endpoints["scep_url"]
    assert scep["PayloadContent"]["Challenge"] == stack.endpoints["scep_challenge"]
    assert stack.endpoints["scep_challenge"] not in json.dumps(summary), "the summary never repeats the challenge"


def test_json_anywhere_and_set_policy_keeps_criticality(stack):
    state = str(stack.state_dir)
    host = "7A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"
    subprocess.run([sys.executable, "-m", "devicegate", "local", "fleet", "add-host", "--state-dir", state, "--uuid", host],
                   check=True, capture_output=True, timeout=60)
    first = json.loads(subprocess.run(
        [sys.executable, "-m", "devicegate", "local", "fleet", "set-policy", "--state-dir", state, "--host", host,
         "--policy", "Disk space", "--result", "pass", "--critical", "--json"], check=True, capture_output=True,
        text=True, timeout=60).stdout)
    again = json.loads(subprocess.run(
        [sys.executable, "-m", "devicegate", "local", "fleet", "set-policy", "--state-dir", state, "--host", host,
         "--policy", "Disk space", "--result", "fail", "--json"], check=True, capture_output=True, text=True,
        timeout=60).stdout)
    assert first["policy"]["critical"] is True and again["policy"]["critical"] is True


def test_the_fleet_commands_speak_plainly_without_json(stack):
    state = str(stack.state_dir)
    host = "7A0C3E8A-1B2C-4D5E-8F90-A1B2C3D4E5F7"

    def text(*args):
        result = subprocess.run([sys.executable, "-m", "devicegate", "local", "fleet", *args, "--state-dir", state],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    added = text("add-host", "--uuid", host.lower(), "--hostname", "bob-mbp", "--team", "Design")
    assert added.startswith(f"host {host} added to the simulated Fleet (id ") and "'bob-mbp'" in added and "'Design'" in added
    set_ = text("set-policy", "--host", host, "--policy", "Firewall on", "--result", "fail", "--critical")
    assert re.fullmatch(rf"host {host}: policy 'Firewall on' \(id \d+, critical\) is now fail\n", set_)
    listing = text("list")
    assert f"  {host}  bob-mbp  team Design\n      fail  Firewall on\n" in listing
    assert re.search(r"^policies \(\d+\):\n(.*\n)*\s+\d+  Firewall on  \(Design, critical\)$", listing, re.M)
    assert text("remove-host", "--uuid", host) == f"host {host} removed (the next sync revokes its certificates)\n"
    state_json = dg("local", "fleet", "list", "--state-dir", state)  # --json: the simulator's state as it is
    assert all(h["uuid"] != host for h in state_json["hosts"].values()) and "results" in state_json
