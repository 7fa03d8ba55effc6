"""Which Fleet policies a host must pass.

``DEVICEGATE_ENFORCED_POLICIES``:
* empty (default): the policies Fleet marks for conditional access, per team — if the Fleet
  server has no such flag at all, the critical ones, with a warning (never "none");
* ``all-critical``: every policy marked critical;
* a JSON object naming policy ids or names per scope, where a scope is ``global``, a team id or
  a team name: ``{"global": ["FileVault enabled", 12], "Engineering": [31]}``.
"""

from __future__ import annotations

import json
from dataclasses import field

from .. import logs
from ..record import FACTORY, frozen

log = logs.getLogger(__name__)


@frozen
class Enforcement:
    mode: str = "conditional_access"  # | "critical" | "listed"
    listed: dict = field(default_factory=dict)  # scope -> frozenset of ids/names (strings)

    def __init__(self, mode: str = "conditional_access", listed: dict = FACTORY):
        self.__dict__.update(mode=mode, listed={} if listed is FACTORY else listed)

    @classmethod
    def parse(cls, text: str | None) -> "Enforcement":
        text = (text or "").strip()
        if not text or text == "conditional-access":
            return cls()
        if text == "all-critical":
            return cls(mode="critical")
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("use empty, all-critical, or a JSON object like {\"global\": [\"FileVault\"]}") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ValueError("the JSON must map scopes (global, team id or name) to lists of policy ids or names")
        listed = {str(scope): frozenset(str(item) for item in items) for scope, items in data.items()}
        return cls(mode="listed", listed=listed)

    def enforced(self, policies, team_id: int | None = None, team_name: str | None = None) -> frozenset[str]:
        """The ids (as strings) of the policies, among those that apply to the host, to enforce."""
        if self.mode == "listed":
            scopes = {"global"} | ({str(team_id)} if team_id is not None else set()) | ({team_name} if team_name else set())
            wanted = frozenset().union(*(self.listed.get(scope, frozenset()) for scope in scopes))
            return frozenset(str(p.id) for p in policies if str(p.id) in wanted or p.name in wanted)
        if self.mode == "conditional_access":
            flags = [p.conditional_access for p in policies]
            if any(flag is not None for flag in flags):
                return frozenset(str(p.id) for p in policies if p.conditional_access)
            if policies:
                log.warning("this Fleet server has no conditional-access flag on policies: enforcing the critical ones")
        return frozenset(str(p.id) for p in policies if p.critical)
