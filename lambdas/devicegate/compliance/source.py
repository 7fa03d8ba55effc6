"""Where the IdP gets a host's compliance: the store, refreshed from Fleet on "check again".

``StoreSource`` reads what the sync last wrote; ``refresh=True`` is where a Fleet-backed source
pulls the one host from Fleet's API first (the Fleet sync adds that source). Until then
"check again" re-reads the store, which tests and the local stack fill directly.
"""

from __future__ import annotations

from typing import Protocol

from .decision import HostCompliance


class ComplianceSource(Protocol):
    def host(self, host_uuid: str, *, refresh: bool) -> tuple[HostCompliance, frozenset[str]] | None: ...


class StoreSource:
    def __init__(self, store):
        self.store = store

    def host(self, host_uuid: str, *, refresh: bool) -> tuple[HostCompliance, frozenset[str]] | None:
        return self.store.get_compliance(host_uuid)
