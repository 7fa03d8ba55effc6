"""The simulated Fleet itself: Fleet's shapes (checked against the fixtures), Fleet's pagination
and errors, persistence across restarts, admin operations and fault injection."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devicegate.local import pki
from devicegate.local.fleet_sim import SimError, SimulatedFleet

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fleet"
TOKEN = "sim-token-Hq2Wd9Kx4Lz7"
UUID_A = "5C2B9E4A-7D31-4F0B-9A6E-2E8D1C3B4A51"
UUID_B = "A1F03C77-0B2E-4D5C-8E9F-6B7A8C9D0E12"
UUID_C = "0F7E6D5C-4B3A-4928-9716-253443526170"


@pytest.fixture
def sim(tmp_path):
    s = SimulatedFleet(tmp_path / "state" / "fleet.json", token=TOKEN).start()
    yield s
    s.stop()


def call(sim, method, path, body=None, token=TOKEN, context=None):
    parts = urlsplit(sim.url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=5, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        doc = json.loads(raw) if resp.getheader("Content-Type", "").startswith("application/json") else raw.decode()
        return resp.status, doc, resp.headers
    finally:
        conn.close()


def get(sim, path, **kw):
    status, doc, _ = call(sim, "GET", path, **kw)
    assert status == 200, doc
    return doc


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def assert_same_keys(actual, expected, where="$"):
    """Same object keys at every level (list items compared by their first element)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        assert set(actual) == set(expected), (
            f"{where}: missing {sorted(set(expected) - set(actual))}, extra {sorted(set(actual) - set(expected))}")
        for key in expected:
            assert_same_keys(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list) and isinstance(actual, list):
        if expected and actual:
            assert_same_keys(actual[0], expected[0], f"{where}[0]")
    elif expected is not None and actual is not None:
        assert isinstance(actual, dict) == isinstance(expected, dict), where
        assert isinstance(actual, list) == isinstance(expected, list), where


@pytest.fixture
def fleet(sim):
    """A small fleet shaped like the fixtures: a team host with results, a host without a team."""
    sim.add_host(UUID_A, "ada-mbp.local", "ada@example.com", team="Workstations", display_name="Ada's MacBook Pro")
    sim.add_host(UUID_B, "grace-mba.local", None)
    sim.set_policy(UUID_A, "FileVault enabled", "fail", critical=True, resolution="Turn FileVault on.")
    sim.set_policy(UUID_B, "Gatekeeper enabled", "pass")
    sim.set_policy(UUID_A, "Screen lock after 5 minutes", "pass")
    return sim


# ------------------------------------------------------------------ shapes


def test_shapes_match_the_fixtures(fleet):
    sim = fleet
    assert_same_keys(get(sim, "/api/v1/fleet/hosts?page=0&per_page=2&order_key=id&order_direction=asc"),
                     fixture("hosts_list.json"))
    assert_same_keys(get(sim, "/api/v1/fleet/hosts?populate_policies=true&device_mapping=true"),
                     fixture("hosts_list_populated.json"))
    # the fixtures leave the software inventory out (README: "trimmed"); so does Fleet when asked
    detail = get(sim, "/api/v1/fleet/hosts/1?exclude_software=true")
    assert_same_keys(detail, fixture("host_detail.json"))
    assert_same_keys(get(sim, f"/api/v1/fleet/hosts/identifier/{UUID_A}?exclude_software=true"),
                     fixture("host_detail.json"))
    for path in ("/api/v1/fleet/hosts/1", f"/api/v1/fleet/hosts/identifier/{UUID_A}"):
        full = get(sim, path)["host"]
        assert {k for k in full if k != "software"} == set(detail["host"]) and len(full["software"]) > 100
    assert_same_keys(get(sim, "/api/v1/fleet/hosts/1/device_mapping"), fixture("device_mapping.json"))
    assert_same_keys(get(sim, "/api/v1/fleet/global/policies"), fixture("global_policies.json"))
    assert_same_keys(get(sim, "/api/v1/fleet/teams/1/policies"), fixture("team_policies.json"))
    assert_same_keys(get(sim, "/api/v1/fleet/teams"), fixture("teams.json"))
    assert_same_keys(sim.failing_policy_webhook(1), fixture("webhook_failing_policy.json"))
    assert_same_keys(get(sim, "/api/latest/fleet/hosts/1?exclude_software=true"),
                     fixture("host_detail.json"))  # Fleet's "latest" alias
    # The values that matter, too.
    responses = {p["name"]: p["response"] for p in detail["host"]["policies"]}
    assert responses == {"FileVault enabled": "fail", "Screen lock after 5 minutes": "pass", "Gatekeeper enabled": ""}
    assert detail["host"]["issues"]["failing_policies_count"] == 1
    assert detail["host"]["end_users"][0]["idp_username"] == "ada@example.com"


def test_error_shapes_match_the_fixtures(fleet):
    sim = fleet
    status, doc, _ = call(sim, "GET", "/api/v1/fleet/hosts", token=None)
    assert status == 401
    assert_same_keys(doc, fixture("error_401.json"))
    status, doc, _ = call(sim, "GET", "/api/v1/fleet/hosts", token="wrong")
    assert status == 401
    status, doc, _ = call(sim, "GET", "/api/v1/fleet/hosts/4242")
    assert status == 404 and "was not found" in doc["errors"][0]["reason"]
    assert_same_keys(doc, fixture("error_404.json"))
    status, doc, _ = call(sim, "GET", "/api/v1/fleet/hosts?page=x")
    assert status == 400 and doc["errors"][0]["reason"] == "non-int page value"
    assert_same_keys(doc, fixture("error_400.json"))
    sim.inject_fault("/api/v1/fleet/hosts", "429", 1, retry_after=12)
    status, doc, headers = call(sim, "GET", "/api/v1/fleet/hosts")
    assert status == 429 and headers["Retry-After"] == "12"
    assert doc == fixture("error_429.json")


def test_unknown_routes_and_methods(sim):
    status, body, _ = call(sim, "GET", "/api/v1/fleet/nothing-here")
    assert status == 404 and body == "404 page not found\n"
    status, body, _ = call(sim, "GET", "/elsewhere", token=None)
    assert status == 404
    status, _, _ = call(sim, "POST", "/api/v1/fleet/hosts", body={})
    assert status == 405


def test_without_the_flag_policies_have_no_conditional_access_keys(tmp_path):
    with SimulatedFleet(tmp_path / "f.json", token=TOKEN, conditional_access_flag=False) as sim:
        sim.add_host(UUID_A, "a.local")
        sim.set_policy(UUID_A, "FileVault enabled", "fail")
        policy, = get(sim, "/api/v1/fleet/global/policies")["policies"]
        assert "conditional_access_enabled" not in policy and "conditional_access_bypass_enabled" not in policy
        host_policy, = get(sim, "/api/v1/fleet/hosts/1")["host"]["policies"]
        assert "conditional_access_enabled" not in host_policy


# ------------------------------------------------------------------ Fleet's list semantics


def test_pagination_is_like_fleets(sim):
    with sim.batch():
        for i in range(45):
            sim.add_host(f"00000000-0000-4000-8000-{i:012d}", f"h{i:02d}.local")

    def ids(query):
        return [h["id"] for h in get(sim, "/api/v1/fleet/hosts" + query)["hosts"]]

    assert ids("") == list(range(1, 46))  # no paging parameters: everything
    assert ids("?page=0") == list(range(1, 21))  # a page without per_page: 20
    assert ids("?page=2") == list(range(41, 46))
    assert ids("?page=1&per_page=10") == list(range(11, 21))  # 0-based pages
    assert ids("?page=9&per_page=10") == []
    assert ids("?order_key=id&order_direction=desc&per_page=3&page=0") == [45, 44, 43]
    assert ids("?order_key=id&after=40") == [41, 42, 43, 44, 45]
    assert ids("?order_key=hostname&order_direction=desc&after=h03.local") == [3, 2, 1]
    for bad, reason in [("?page=-1", "negative page value"), ("?per_page=0", "invalid per_page value"),
                        ("?per_page=x", "non-int per_page value"), ("?order_direction=desc", "order_key must be"),
                        ("?policy_response=failing", "Missing policy_id"), ("?order_key=secret", "invalid order_key")]:
        status, doc, _ = call(sim, "GET", "/api/v1/fleet/hosts" + bad)
        assert status == 400 and reason in doc["errors"][0]["reason"], bad


def test_filters(fleet):
    sim = fleet
    sim.add_host(UUID_C, "linus-mbp.local", "linus@example.com", team="Workstations", hardware_serial="C02LINUS")
    sim.set_policy(UUID_C, "FileVault enabled", "pass")

    def ids(query):
        return [h["id"] for h in get(sim, "/api/v1/fleet/hosts" + query)["hosts"]]

    assert ids("?team_id=1") == [1, 3]
    assert ids("?team_id=0") == [2]
    assert ids("?policy_id=1&policy_response=failing") == [1]
    assert ids("?policy_id=1&policy_response=passing") == [3]
    assert ids("?policy_id=1") == [1, 3]
    assert ids("?query=linus@example") == [3]
    assert ids(f"?query={UUID_C.lower()}") == [3]
    for ident in (UUID_C, UUID_C.lower(), "linus-mbp.local", "C02LINUS"):
        assert get(sim, f"/api/v1/fleet/hosts/identifier/{ident}")["host"]["id"] == 3
    listed = get(sim, "/api/v1/fleet/hosts?populate_policies=true&device_mapping=true")["hosts"]
    assert listed[1]["device_mapping"] is None and listed[0]["device_mapping"][0]["email"] == "ada@example.com"
    assert "policies" not in get(sim, "/api/v1/fleet/hosts")["hosts"][0]
    team = get(sim, "/api/v1/fleet/teams/1/policies")
    assert [p["name"] for p in team["policies"]] == ["FileVault enabled", "Screen lock after 5 minutes"]
    assert [p["name"] for p in team["inherited_policies"]] == ["Gatekeeper enabled"]
    assert team["policies"][0]["failing_host_count"] == 1 and team["policies"][0]["passing_host_count"] == 1
    assert get(sim, "/api/v1/fleet/teams")["teams"][0]["host_count"] == 2


# ------------------------------------------------------------------ persistence


def test_state_survives_a_restart(tmp_path):
    path = tmp_path / "fleet.json"
    with SimulatedFleet(path, token=TOKEN) as first:
        first.add_host(UUID_A, "ada-mbp.local", "ada@example.com", team="Workstations")
        first.add_host(UUID_B, "grace-mba.local")
        first.set_policy(UUID_A, "FileVault enabled", "fail", critical=True)
        before = first.state()
        detail = get(first, "/api/v1/fleet/hosts/1")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["fleet.json"]  # no temporary files left behind
    with SimulatedFleet(path, token=TOKEN) as second:
        assert second.state() == before
        again = get(second, "/api/v1/fleet/hosts/1")
        assert again["host"]["policies"] == detail["host"]["policies"]
        assert second.add_host(UUID_C, "new.local")["id"] == 3  # ids keep counting


def test_a_corrupt_state_file_is_reported_not_discarded(tmp_path):
    path = tmp_path / "fleet.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SimulatedFleet(path, token=TOKEN)
    path.write_text('{"version": 99}')
    with pytest.raises(ValueError, match="state file"):
        SimulatedFleet(path, token=TOKEN)
    assert path.read_text() == '{"version": 99}'


def test_batch_writes_once(tmp_path, monkeypatch):
    from devicegate.local import fleet_sim

    sim = SimulatedFleet(tmp_path / "fleet.json", token=TOKEN)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(fleet_sim.os, "replace", lambda a, b: (replaced.append(b), real_replace(a, b))[1])
    with sim.batch():
        for i in range(10):
            sim.add_host(f"00000000-0000-4000-8000-{i:012d}", f"h{i}.local")
    assert len(replaced) == 1
    assert len(json.loads((tmp_path / "fleet.json").read_text())["hosts"]) == 10


# ------------------------------------------------------------------ admin operations


def test_admin_operations_over_http(sim):
    status, doc, _ = call(sim, "POST", "/_sim/hosts", {"uuid": UUID_A, "hostname": "ada-mbp.local",
                                                       "email": "ada@example.com", "team": "Workstations"})
    assert status == 200 and doc["host"]["team_name"] == "Workstations" and doc["host"]["team_id"] == 1
    status, doc, _ = call(sim, "POST", "/_sim/hosts", {"uuid": UUID_B, "hostname": "grace-mba.local"})
    assert status == 200 and doc["host"]["team_id"] is None
    # A policy named for a team host is created in its team, conditional access on ...
    status, doc, _ = call(sim, "POST", "/_sim/results", {"host_uuid": UUID_A, "policy": "FileVault enabled",
                                                         "result": "fail", "critical": True,
                                                         "resolution": "Turn FileVault on."})
    assert status == 200
    policy = doc["policy"]
    assert (policy["team_id"], policy["critical"], policy["conditional_access_enabled"], policy["resolution"]) == \
        (1, True, True, "Turn FileVault on.")
    # ... and for a host without a team, globally.
    status, doc, _ = call(sim, "POST", "/_sim/results", {"host_uuid": UUID_B, "policy": "Gatekeeper enabled",
                                                         "result": "pass"})
    assert doc["policy"]["team_id"] is None
    # A global policy with the same name is found from a team host too.
    status, doc, _ = call(sim, "POST", "/_sim/results", {"host_uuid": UUID_A.lower(), "policy": "Gatekeeper enabled",
                                                         "result": "fail", "critical": False})
    assert doc["policy"]["id"] == 2 and doc["policy"]["failing_host_count"] == 1
    # "none" clears a result; critical can be changed on an existing policy.
    call(sim, "POST", "/_sim/results", {"host_uuid": UUID_A, "policy": "FileVault enabled", "result": "none",
                                        "critical": False})
    state = get(sim, "/_sim/state")
    assert state["results"]["1"] == {"2": "fail"}
    assert state["policies"]["1"]["critical"] is False
    assert {t["name"] for t in state["teams"].values()} == {"Workstations"}
    webhook = get(sim, "/_sim/webhook/2")
    assert [h["hostname"] for h in webhook["hosts"]] == ["ada-mbp.local"]
    assert webhook["hosts"][0]["url"] == f"{sim.url}/hosts/1"
    status, doc, _ = call(sim, "DELETE", f"/_sim/hosts/{UUID_A}")
    assert status == 200 and doc == {"removed": True}
    assert call(sim, "GET", "/api/v1/fleet/hosts/1")[0] == 404
    assert "1" not in get(sim, "/_sim/state")["results"]
    assert call(sim, "DELETE", f"/_sim/hosts/{UUID_A}")[0] == 404


def test_admin_requests_are_checked(sim):
    assert call(sim, "GET", "/_sim/state", token=None)[0] == 401
    assert call(sim, "GET", "/_sim/state", token="wrong")[0] == 401
    sim.add_host(UUID_A, "a.local")
    for body, status in [({"host_uuid": UUID_A, "policy": "P", "result": "maybe"}, 400),
                         ({"host_uuid": UUID_B, "policy": "P", "result": "pass"}, 404),
                         ({"host_uuid": UUID_A, "policy": "", "result": "pass"}, 400),
                         ({"host_uuid": UUID_A, "policy": "P", "result": "pass", "critical": "yes"}, 400)]:
        assert call(sim, "POST", "/_sim/results", body)[0] == status, body
    assert call(sim, "POST", "/_sim/hosts", {"uuid": "../x", "hostname": "h"})[0] == 400
    assert call(sim, "POST", "/_sim/hosts", {"uuid": UUID_B, "hostname": "h", "email": "nobody"})[0] == 400
    assert call(sim, "POST", "/_sim/faults", {"path": "/api/v1/fleet/hosts", "kind": "explode"})[0] == 400
    assert call(sim, "GET", "/_sim/nothing")[0] == 404
    with pytest.raises(SimError):
        sim.set_policy(UUID_A, "P", "sometimes")


def test_updating_a_host_by_uuid_keeps_its_id(sim):
    first = sim.add_host(UUID_A, "a.local", "a@example.com")
    moved = sim.add_host(UUID_A.lower(), "a-renamed.local", "a@example.com", team="Servers")
    assert moved["id"] == first["id"] and moved["hostname"] == "a-renamed.local" and moved["team_name"] == "Servers"
    assert len(sim.state()["hosts"]) == 1


# ------------------------------------------------------------------ faults


def test_faults_apply_to_the_next_n_matching_requests(fleet):
    sim = fleet
    status, doc, _ = call(sim, "POST", "/_sim/faults", {"path": "/api/v1/fleet/hosts/*", "kind": "500", "count": 2})
    assert status == 200 and doc["fault"]["count"] == 2
    assert call(sim, "GET", "/api/v1/fleet/hosts")[0] == 200  # the glob does not match the list
    assert [call(sim, "GET", "/api/v1/fleet/hosts/1")[0] for _ in range(3)] == [500, 500, 200]
    assert get(sim, "/_sim/faults") == {"faults": []}
    sim.inject_fault("/api/v1/fleet/teams", "500", 5)
    assert call(sim, "DELETE", "/_sim/faults")[0] == 200
    assert call(sim, "GET", "/api/v1/fleet/teams")[0] == 200


def test_malformed_and_truncated_bodies(fleet):
    sim = fleet
    sim.inject_fault("/api/v1/fleet/hosts", "malformed", 1)
    parts = urlsplit(sim.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", "/api/v1/fleet/hosts", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    with pytest.raises(ValueError):
        json.loads(resp.read())
    conn.close()
    sim.inject_fault("/api/v1/fleet/hosts", "truncated", 1)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", "/api/v1/fleet/hosts", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    assert call(sim, "GET", "/api/v1/fleet/hosts")[0] == 200


def test_vanish_deletes_the_named_host_before_answering(fleet):
    sim = fleet
    sim.inject_fault("/api/v1/fleet/hosts", "vanish", 1, host_uuid=UUID_B)
    assert [h["uuid"] for h in get(sim, "/api/v1/fleet/hosts")["hosts"]] == [UUID_A]
    sim.inject_fault("/api/v1/fleet/hosts/*", "vanish", 1)
    assert call(sim, "GET", "/api/v1/fleet/hosts/1/device_mapping")[0] == 404
    assert sim.state()["hosts"] == {}


def test_the_simulator_serves_https_with_the_given_certificate(tmp_path):
    ca_key = pki.new_key()
    ca = pki.self_signed_ca("sim CA", ca_key)
    key = pki.new_key()
    (tmp_path / "c.pem").write_text(pki.pem_cert(pki.server_certificate(ca, ca_key, key, ["127.0.0.1"])))
    (tmp_path / "k.pem").write_text(pki.pem_key(key))
    with SimulatedFleet(tmp_path / "f.json", token=TOKEN, certfile=tmp_path / "c.pem", keyfile=tmp_path / "k.pem") as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cadata=pki.pem_cert(ca))
        assert call(sim, "GET", "/api/v1/fleet/teams", context=ctx)[1] == {"teams": []}
        with pytest.raises(ssl.SSLError):
            call(sim, "GET", "/api/v1/fleet/teams", context=ssl.create_default_context())


def test_the_fleet_process_stops_once_its_parent_is_gone(tmp_path):
    """A stack killed before the death signal was armed (or that it missed) leaves no Fleet behind:
    the process watches for its parent, named at spawn, to be gone."""
    import subprocess
    import sys

    (tmp_path / "token").write_text("t0ken\n")
    ready = tmp_path / "ready.json"
    env = {**os.environ, "DEVICEGATE_FLEET_SIM_PARENT": "999999999"}  # a parent that is not (any more) ours
    proc = subprocess.Popen([sys.executable, "-m", "devicegate.local.fleet_sim", "--state", str(tmp_path / "s.json"),
                             "--token-file", str(tmp_path / "token"), "--ready-file", str(ready)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert ready.exists()  # it did start and serve first
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_signals_in_quick_succession_stop_the_fleet_process(tmp_path):
    """SIGTERMs arriving together (the stack's stop, then the parent-death signal) used to
    deadlock a handler that set a threading.Event; the process must end on them."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "token").write_text("t0ken\n")
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "devicegate.local.fleet_sim", "--state", str(tmp_path / "s.json"),
                             "--token-file", str(tmp_path / "token"), "--ready-file", str(ready)],
                            env={**os.environ, "DEVICEGATE_FLEET_SIM_PARENT": str(os.getpid())},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read()
        for _ in range(20000):  # a burst: some land while an earlier one's handler runs
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
