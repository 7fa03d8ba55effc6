"""The compliance decision: a pure function of the host's policy results and the rules.

Outcomes:
* ``allow``   — no enforced policy fails (or a one-time bypass covers only non-critical ones);
* ``block``   — at least one enforced policy fails; the reasons name each one;
* ``unknown`` — we cannot tell (no data, stale data, user not on the device): a block.

Stale data (older than ``max_age``) is ``unknown`` when ``fail_mode`` is closed (the default);
when it is open, the stale results still count: what they show failing still blocks.

Fleet's rule is that a policy without a result (the host has not run it yet) does not fail
the host; ``strict`` turns a missing result into a failure.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from ..record import frozen

ALLOW, BLOCK, UNKNOWN = "allow", "block", "unknown"


class FailMode(str, Enum):
    CLOSED = "closed"
    OPEN = "open"


@frozen
class PolicyResult:
    policy_id: str
    name: str
    result: str | None  # "pass" | "fail" | None (no result yet)
    critical: bool = False
    resolution: str | None = None  # Fleet's resolution text, shown to the user

    def __init__(self, policy_id: str, name: str, result: str | None, critical: bool = False,
                 resolution: str | None = None):
        self.__dict__.update(policy_id=policy_id, name=name, result=result, critical=critical,
                             resolution=resolution)


@frozen
class HostCompliance:
    host_uuid: str
    hostname: str | None
    team_id: str | None
    results: tuple[PolicyResult, ...]
    synced_at: datetime | None
    device_users: tuple[str, ...] = ()  # emails/usernames Fleet maps to the host

    def __init__(self, host_uuid: str, hostname: str | None, team_id: str | None,
                 results: tuple[PolicyResult, ...], synced_at: datetime | None,
                 device_users: tuple[str, ...] = ()):
        self.__dict__.update(host_uuid=host_uuid, hostname=hostname, team_id=team_id, results=results,
                             synced_at=synced_at, device_users=device_users)


@frozen
class Rules:
    max_age: timedelta = timedelta(hours=2)
    fail_mode: FailMode = FailMode.CLOSED
    strict: bool = False  # a policy with no result fails the host
    require_device_user: bool = False  # the Okta user must be one of the device's users

    def __init__(self, max_age: timedelta = timedelta(hours=2),
                 fail_mode: FailMode = FailMode.CLOSED, strict: bool = False,
                 require_device_user: bool = False):
        self.__dict__.update(max_age=max_age, fail_mode=fail_mode, strict=strict,
                             require_device_user=require_device_user)


@frozen
class Reason:
    code: str  # machine-readable: policy_failing, policy_no_result, stale, no_data, not_device_user, bypass
    text: str  # what the user reads
    policy: PolicyResult | None = None

    def __init__(self, code: str, text: str, policy: PolicyResult | None = None):
        self.__dict__.update(code=code, text=text, policy=policy)


@frozen
class Decision:
    outcome: str
    reasons: tuple[Reason, ...] = ()
    failing: tuple[PolicyResult, ...] = ()
    bypass_used: bool = False
    bypass_possible: bool = False  # a bypass would let this login through (no critical failure)

    def __init__(self, outcome: str, reasons: tuple[Reason, ...] = (), failing: tuple[PolicyResult, ...] = (),
                 bypass_used: bool = False, bypass_possible: bool = False):
        self.__dict__.update(outcome=outcome, reasons=reasons, failing=failing, bypass_used=bypass_used,
                             bypass_possible=bypass_possible)

    @property
    def allowed(self) -> bool:
        return self.outcome == ALLOW


def _fold(user: str) -> str:
    return user.lower() if user.isascii() else user


def decide(
    host: HostCompliance | None,
    *,
    enforced: frozenset[str] | set[str],
    now: datetime,
    rules: Rules = Rules(),
    okta_user: str | None = None,
    bypass_available: bool = False,
) -> Decision:
    """Decide one login. ``enforced`` is the set of policy ids enforced for the host's team."""
    if host is None:
        return Decision(UNKNOWN, (Reason("no_data", "This device has no compliance data yet."),))

    if rules.require_device_user:
        # Case-insensitive for ASCII only: casefold() would make "\u212aate@" match "kate@".
        users = {_fold(u) for u in host.device_users}
        if okta_user is None or _fold(okta_user) not in users:
            return Decision(
                UNKNOWN,
                (Reason("not_device_user", "You are not a user of this device in Fleet."),),
            )

    stale = host.synced_at is None or now - host.synced_at > rules.max_age
    if stale and rules.fail_mode is FailMode.CLOSED:
        return Decision(UNKNOWN, (Reason("stale", "This device's compliance data is out of date."),))

    failing: list[PolicyResult] = []
    reasons: list[Reason] = []
    reported = {r.policy_id for r in host.results}
    # An enforced policy the host has no row for has no result either.
    unreported = [PolicyResult(pid, f"Policy {pid}", None) for pid in sorted(enforced) if pid not in reported]
    for result in (*host.results, *unreported):
        if result.policy_id not in enforced:
            continue
        if result.result == "fail":
            failing.append(result)
            reasons.append(Reason("policy_failing", f"{result.name} is failing.", result))
        elif result.result is None and rules.strict:
            failing.append(result)
            reasons.append(Reason("policy_no_result", f"{result.name} has not reported a result yet.", result))
    if not failing:
        # fail_mode open lets stale data through only when that data shows nothing failing
        return Decision(ALLOW, (Reason("stale", "This device's compliance data is out of date."),) if stale else ())

    bypass_possible = not any(p.critical for p in failing)
    if bypass_available and bypass_possible:
        return Decision(
            ALLOW,
            (*reasons, Reason("bypass", "Let through once: no failing policy is critical.")),
            tuple(failing),
            bypass_used=True,
            bypass_possible=True,
        )
    return Decision(BLOCK, tuple(reasons), tuple(failing), bypass_possible=bypass_possible)
