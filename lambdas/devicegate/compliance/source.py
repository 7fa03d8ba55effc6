"""Where the IdP gets a host's compliance: the store, refreshed from Fleet on "check again".

``StoreSource`` reads what the sync last wrote. ``FleetSource`` does the same for a login,
and for "check again" first pulls that one host from Fleet's API and writes it back; if
Fleet cannot be reached the last good state is used (and the staleness rule applies).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Protocol

from .. import logs
from .decision import HostCompliance

log = logs.getLogger(__name__)


class ComplianceSource(Protocol):
    def host(self, host_uuid: str, *, refresh: bool) -> tuple[HostCompliance, frozenset[str]] | None: ...


class StoreSource:
    def __init__(self, store):
        self.store = store

    def host(self, host_uuid: str, *, refresh: bool) -> tuple[HostCompliance, frozenset[str]] | None:
        return self.store.get_compliance(host_uuid)

    def login_store(self):
        """The store whose ``get_compliance`` is all ``host(..., refresh=False)`` does, so that a
        login may read it along with the certificate; None where that is not so."""
        return self.store if type(self).host in (StoreSource.host, FleetSource.host) else None


class FleetSource(StoreSource):
    def __init__(self, store, client, enforcement):
        super().__init__(store)
        self.client = client
        self.enforcement = enforcement

    def host(self, host_uuid: str, *, refresh: bool) -> tuple[HostCompliance, frozenset[str]] | None:
        if refresh:
            try:
                refreshed = refresh_host(self.client, self.store, self.enforcement, host_uuid)
                if refreshed is not None:
                    return refreshed
            except Exception as exc:  # noqa: BLE001 - Fleet down: keep the last good state
                log.warning("refreshing %s from Fleet failed, using stored data: %s", host_uuid, exc)
        return super().host(host_uuid, refresh=False)


def refresh_host(client, store, enforcement, host_uuid: str, now: datetime | None = None):
    """Pull one host from Fleet now and write it; None if Fleet does not know the host."""
    from .sync import Catalogue, compliance_from_detail

    detail = client.host_by_uuid(host_uuid)
    if detail is None:
        return None
    catalogue = Catalogue.fetch(client, teams=[detail.host.team_id])
    compliance, enforced = compliance_from_detail(detail, catalogue, enforcement, now or datetime.now(timezone.utc))
    store.put_compliance(compliance, enforced, fleet_id=detail.host.id)
    return compliance, enforced
