"""devicegate's policy pack: ``pulumi preview --policy-pack policy`` (or ``pulumi up --policy-pack policy``).

Every policy is mandatory: a violation stops the update. The rules live in devicegate_policies.py
(importable without starting the analyzer, which is what the tests do).
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from devicegate_policies import POLICIES

PolicyPack(
    name="devicegate",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
