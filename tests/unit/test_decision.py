"""The compliance decision, rule by rule (pure function: no I/O)."""

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from devicegate.compliance.decision import ALLOW, BLOCK, UNKNOWN, FailMode, HostCompliance, PolicyResult, Rules, decide

NOW = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)


def host(*results, synced=NOW - timedelta(minutes=5), users=("alice@example.com",)):
    return HostCompliance("UUID", "alice-mbp", None, tuple(results), synced, users)


def p(pid, result, critical=False):
    return PolicyResult(pid, f"Policy {pid}", result, critical, f"Fix {pid}")


def test_all_passing_allows():
    assert decide(host(p("1", "pass"), p("2", "pass")), enforced={"1", "2"}, now=NOW).outcome == ALLOW


def test_failing_enforced_policy_blocks_and_names_it():
    d = decide(host(p("1", "fail"), p("2", "pass")), enforced={"1", "2"}, now=NOW)
    assert d.outcome == BLOCK and [f.policy_id for f in d.failing] == ["1"]
    assert d.reasons[0].code == "policy_failing" and "Policy 1" in d.reasons[0].text


def test_failing_policy_that_is_not_enforced_does_not_block():
    assert decide(host(p("1", "fail")), enforced={"2"}, now=NOW).outcome == ALLOW


def test_no_result_follows_fleet_unless_strict():
    h = host(p("1", None))
    assert decide(h, enforced={"1"}, now=NOW).outcome == ALLOW
    d = decide(h, enforced={"1"}, now=NOW, rules=Rules(strict=True))
    assert d.outcome == BLOCK and d.reasons[0].code == "policy_no_result"
    # an enforced policy the host has no row for at all counts as no result
    assert decide(host(), enforced={"9"}, now=NOW, rules=Rules(strict=True)).outcome == BLOCK
    assert decide(host(), enforced={"9"}, now=NOW).outcome == ALLOW


def test_stale_data_fails_closed_by_default_and_open_when_configured():
    h = host(p("1", "pass"), synced=NOW - timedelta(hours=3))
    d = decide(h, enforced={"1"}, now=NOW)
    assert d.outcome == UNKNOWN and d.reasons[0].code == "stale"
    assert decide(h, enforced={"1"}, now=NOW, rules=Rules(fail_mode=FailMode.OPEN)).outcome == ALLOW
    assert decide(host(p("1", "pass"), synced=None), enforced={"1"}, now=NOW).outcome == UNKNOWN


def test_no_data_is_unknown():
    assert decide(None, enforced={"1"}, now=NOW).outcome == UNKNOWN


def test_bypass_only_without_critical_failures():
    h = host(p("1", "fail"), p("2", "pass"))
    blocked = decide(h, enforced={"1", "2"}, now=NOW)
    assert blocked.outcome == BLOCK and blocked.bypass_possible
    passed = decide(h, enforced={"1", "2"}, now=NOW, bypass_available=True)
    assert passed.outcome == ALLOW and passed.bypass_used
    critical = host(p("1", "fail", critical=True))
    d = decide(critical, enforced={"1"}, now=NOW, bypass_available=True)
    assert d.outcome == BLOCK and not d.bypass_possible and not d.bypass_used


def test_device_user_rule():
    h = host(p("1", "pass"))
    rules = Rules(require_device_user=True)
    assert decide(h, enforced={"1"}, now=NOW, rules=rules, okta_user="Alice@Example.com").outcome == ALLOW
    d = decide(h, enforced={"1"}, now=NOW, rules=rules, okta_user="mallory@example.com")
    assert d.outcome == UNKNOWN and d.reasons[0].code == "not_device_user"
    assert decide(h, enforced={"1"}, now=NOW, okta_user="mallory@example.com").outcome == ALLOW


results = st.lists(st.builds(p, st.sampled_from("123456"), st.sampled_from(["pass", "fail", None]), st.booleans()),
                   max_size=6, unique_by=lambda r: r.policy_id)


@given(results, st.frozensets(st.sampled_from("123456")), st.booleans(), st.booleans())
def test_properties(rs, enforced, strict, bypass):
    d = decide(host(*rs), enforced=enforced, now=NOW, rules=Rules(strict=strict), bypass_available=bypass)
    failing = [r for r in rs if r.policy_id in enforced and (r.result == "fail" or (strict and r.result is None))]
    missing_strict = strict and any(pid not in {r.policy_id for r in rs} for pid in enforced)
    if not failing and not missing_strict:
        assert d.outcome == ALLOW and not d.bypass_used
    elif any(r.critical for r in failing) or not bypass:
        assert d.outcome == BLOCK
    else:
        assert d.outcome == ALLOW and d.bypass_used


def test_device_user_match_is_ascii_case_insensitive_only():
    h = host(p("1", "pass"), users=("kate@example.com", "strasse@example.com"))
    rules = Rules(require_device_user=True)
    assert decide(h, enforced={"1"}, now=NOW, rules=rules, okta_user="KATE@example.com").outcome == ALLOW
    assert decide(h, enforced={"1"}, now=NOW, rules=rules, okta_user="\u212aate@example.com").outcome == UNKNOWN
    assert decide(h, enforced={"1"}, now=NOW, rules=rules, okta_user="stra\u00dfe@example.com").outcome == UNKNOWN


def test_fail_open_still_blocks_what_the_stale_data_shows_failing():
    stale = NOW - timedelta(hours=3)
    rules = Rules(fail_mode=FailMode.OPEN)
    assert decide(host(p("1", "pass"), synced=stale), enforced={"1"}, now=NOW, rules=rules).outcome == ALLOW
    d = decide(host(p("1", "fail", critical=True), synced=stale), enforced={"1"}, now=NOW, rules=rules)
    assert d.outcome == BLOCK and not d.bypass_possible
