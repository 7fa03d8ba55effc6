"""DynamoDB access: one table, typed records, conditional writes.

Key design (pk / sk, both strings):

    CERT#<serial hex>    CERT          a certificate we issued
    HOST#<UUID>          CERT#<hex>    host -> its certificates (query by pk)
    SCEPTX#<sha256>      SCEPTX        a SCEP transaction and the certificate it produced
    SAMLREQ#<sha256>     SAMLREQ       an AuthnRequest ID already answered (replay guard, TTL)
    PENDING#<sha256>     PENDING       a blocked login waiting for "check again" (TTL)
    BYPASS#<UUID>        BYPASS        a one-time bypass used by this host (TTL = the window)
    COMPLIANCE           HOST#<UUID>   the host's policy results as last synced from Fleet
                                       (one partition, so a sync lists every host in one query)
    FLEETHOST#<id>       FLEETHOST     Fleet's host id -> UUID (for the policy webhook)
    SYNC                 STATE         the last sync's report

Serials are keyed as lowercase hex without leading zeros, whatever form a header carried.
``expires_at`` (epoch seconds) is the table's TTL attribute.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from dataclasses import field
from datetime import datetime, timezone

from .memo import remember
from .record import frozen

TTL_ATTRIBUTE = "expires_at"


class StoreUnavailable(Exception):
    """DynamoDB could not be reached or kept throttling: callers fail closed."""


class AlreadyRecorded(Exception):
    """A conditional write found the item already there."""


@frozen
class CertificateRecord:
    serial: int
    host_uuid: str
    status: str  # "active" | "revoked"
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    der: bytes = field(repr=False)
    subject: str = ""
    transaction_key: str = ""
    kind: str = "enroll"  # "enroll" | "renewal"
    renewed_from: int | None = None
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    first_used_at: datetime | None = None  # first allowed login with it (starts the grace of older ones)
    last_used_at: datetime | None = None  # an allowed login with it, recorded at most hourly

    def __init__(self, serial: int, host_uuid: str, status: str, not_before: datetime, not_after: datetime,
                 issued_at: datetime, der: bytes, subject: str = "", transaction_key: str = "",
                 kind: str = "enroll", renewed_from: int | None = None, revoked_at: datetime | None = None,
                 revocation_reason: str | None = None, first_used_at: datetime | None = None,
                 last_used_at: datetime | None = None):
        self.__dict__.update(serial=serial, host_uuid=host_uuid, status=status, not_before=not_before,
                             not_after=not_after, issued_at=issued_at, der=der, subject=subject,
                             transaction_key=transaction_key, kind=kind, renewed_from=renewed_from,
                             revoked_at=revoked_at, revocation_reason=revocation_reason,
                             first_used_at=first_used_at, last_used_at=last_used_at)

    def is_active(self, now: datetime) -> bool:
        return self.status == "active" and self.not_before <= now < self.not_after


@frozen
class Transaction:
    key: str
    csr_sha256: str
    requester_spki_sha256: str
    serial: int

    def __init__(self, key: str, csr_sha256: str, requester_spki_sha256: str, serial: int):
        self.__dict__.update(key=key, csr_sha256=csr_sha256, requester_spki_sha256=requester_spki_sha256,
                             serial=serial)


def serial_key(serial: int) -> str:
    return format(serial, "x")


def _client(endpoint: str | None):
    from . import awsjson

    # Bounded well inside the 30 s Lambda timeout: 3 attempts in all, at most
    # 3 x (2 + 3) s + 3 s backoff. awsjson's own client when the environment has the
    # credentials (as in Lambda), else boto3's with the same bounds.
    return awsjson.client("dynamodb", endpoint, connect_timeout=2, read_timeout=3, max_attempts=3)


def _failure(exc: Exception) -> tuple[str, list, bool]:
    """(AWS error code, transaction cancellation reasons, whether it is a DynamoDB failure at
    all) for an exception from either client: awsjson's, or boto3's (then botocore is loaded)."""
    from . import awsjson

    if isinstance(exc, awsjson.ServiceError):
        return exc.code, exc.response.get("CancellationReasons", []), True
    if isinstance(exc, awsjson.AwsError):
        return "", [], True
    botocore_exceptions = sys.modules.get("botocore.exceptions")
    if botocore_exceptions is not None:
        if isinstance(exc, botocore_exceptions.ClientError):
            return (exc.response.get("Error", {}).get("Code", ""), exc.response.get("CancellationReasons", []), True)
        if isinstance(exc, botocore_exceptions.BotoCoreError):
            return "", [], True
    return "", [], False


def _ts(value: datetime) -> dict:
    return {"S": value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")}


def _parse_ts(item: dict, name: str) -> datetime | None:
    raw = item.get(name, {}).get("S")
    return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


class Store:
    def __init__(self, table: str, client=None, endpoint: str | None = None):
        self.table = table
        self._client = client or _client(endpoint or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"))

    # -------------------------------------------------------------- low level

    def _call(self, operation: str, **kwargs):
        try:
            return getattr(self._client, operation)(**kwargs)
        except Exception as exc:  # noqa: BLE001 - sorted by _failure; anything else is re-raised
            code, reasons, failed = _failure(exc)
            if not failed:
                raise
            if code in ("ConditionalCheckFailedException",):
                raise AlreadyRecorded(str(exc)) from None
            if code == "TransactionCanceledException":
                reasons = [r.get("Code") for r in reasons]
                if "ConditionalCheckFailed" in reasons:
                    raise AlreadyRecorded(f"transaction cancelled: {reasons}") from None
            raise StoreUnavailable(f"DynamoDB {operation} failed: {code or exc}") from None

    def _get(self, pk: str, sk: str) -> dict | None:
        response = self._call(
            "get_item", TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
        )
        return response.get("Item")

    # -------------------------------------------------------------- certificates

    def get_certificate(self, serial: int) -> CertificateRecord | None:
        item = self._get(f"CERT#{serial_key(serial)}", "CERT")
        return _certificate_from_item(item) if item else None

    def get_certificate_and_compliance(self, serial: int, host_uuid: str):
        """``(get_certificate(serial), get_compliance(host_uuid))`` in one round trip: a login's two
        reads as one strongly consistent BatchGetItem (the same read units as two GetItems). Keys
        DynamoDB leaves unprocessed are asked for again, then read one by one."""
        wanted = {("CERT#" + serial_key(serial), "CERT"): None, ("COMPLIANCE", f"HOST#{host_uuid}"): None}
        pending = [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in wanted]
        for _attempt in range(3):
            response = self._call("batch_get_item",
                                  RequestItems={self.table: {"Keys": pending, "ConsistentRead": True}})
            for item in response.get("Responses", {}).get(self.table, ()):
                key = (item["pk"]["S"], item["sk"]["S"])
                if key in wanted:
                    wanted[key] = item
            pending = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys") or []
            if not pending:
                break
            time.sleep(random.uniform(0, 0.05 * 2 ** _attempt))  # throttled: back off, as AWS asks
        for key in pending:  # still unprocessed (throttled): one by one, as GetItem would
            wanted[(key["pk"]["S"], key["sk"]["S"])] = self._get(key["pk"]["S"], key["sk"]["S"])
        cert_item, compliance_item = wanted.values()
        return (_certificate_from_item(cert_item) if cert_item else None,
                _compliance_from_item(compliance_item) if compliance_item else None)

    def host_certificates(self, host_uuid: str) -> list[CertificateRecord]:
        serials = []
        kwargs = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": f"HOST#{host_uuid}"}, ":prefix": {"S": "CERT#"}},
        }
        while True:
            page = self._call("query", **kwargs)
            serials += [int(item["sk"]["S"][5:], 16) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        records = [self.get_certificate(s) for s in serials]
        return sorted((r for r in records if r), key=lambda r: r.issued_at)

    # -------------------------------------------------------------- SCEP transactions

    def get_transaction(self, key: str) -> Transaction | None:
        item = self._get(f"SCEPTX#{key}", "SCEPTX")
        if not item:
            return None
        return Transaction(
            key=key,
            csr_sha256=item["csr_sha256"]["S"],
            requester_spki_sha256=item["requester_spki_sha256"]["S"],
            serial=int(item["serial"]["S"], 16),
        )

    def record_issuance(self, transaction: Transaction, cert: CertificateRecord, replaces: str | None = None) -> None:
        """Record the transaction, the certificate and the host link, all or nothing.

        ``replaces``: the CSR digest of the transaction this one supersedes (a re-enrollment
        with the same key and transactionID). Raises AlreadyRecorded when another request
        changed the transaction first.
        """
        if replaces is None:
            condition = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "csr_sha256 = :previous",
                "ExpressionAttributeValues": {":previous": {"S": replaces}},
            }
        hex_serial = serial_key(cert.serial)
        expires = {"N": str(int(cert.not_after.timestamp()) + 86400)}
        cert_item = _certificate_item(cert)
        self._call(
            "transact_write_items",
            TransactItems=[
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "pk": {"S": f"SCEPTX#{transaction.key}"},
                            "sk": {"S": "SCEPTX"},
                            "csr_sha256": {"S": transaction.csr_sha256},
                            "requester_spki_sha256": {"S": transaction.requester_spki_sha256},
                            "serial": {"S": hex_serial},
                            TTL_ATTRIBUTE: expires,
                        },
                        **condition,
                    }
                },
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": cert_item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "pk": {"S": f"HOST#{cert.host_uuid}"},
                            "sk": {"S": f"CERT#{hex_serial}"},
                            TTL_ATTRIBUTE: expires,
                        },
                    }
                },
            ],
        )

    # -------------------------------------------------------------- SAML and compliance
    def remember_request(self, issuer: str, request_id: str, expires_at: datetime) -> None:
        """Record an AuthnRequest ID; AlreadyRecorded means it was seen before (a replay)."""
        self._call(
            "put_item",
            TableName=self.table,
            Item={
                "pk": {"S": f"SAMLREQ#{_digest(issuer, request_id)}"},
                "sk": {"S": "SAMLREQ"},
                TTL_ATTRIBUTE: {"N": str(int(expires_at.timestamp()))},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def put_pending(self, token: str, data: dict, expires_at: datetime) -> None:
        self._call(
            "put_item",
            TableName=self.table,
            Item={
                "pk": {"S": f"PENDING#{_digest(token)}"},
                "sk": {"S": "PENDING"},
                "data": {"S": json.dumps(data, separators=(",", ":"))},
                TTL_ATTRIBUTE: {"N": str(int(expires_at.timestamp()))},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get_pending(self, token: str, now: datetime) -> dict | None:
        item = self._get(f"PENDING#{_digest(token)}", "PENDING")
        # DynamoDB deletes expired items lazily: the TTL is checked here too.
        if not item or int(item[TTL_ATTRIBUTE]["N"]) <= now.timestamp():
            return None
        return json.loads(item["data"]["S"])

    def finish_pending(self, token: str) -> None:
        """Consume a pending login; AlreadyRecorded when another request consumed it first."""
        try:
            self._call(
                "delete_item",
                TableName=self.table,
                Key={"pk": {"S": f"PENDING#{_digest(token)}"}, "sk": {"S": "PENDING"}},
                ConditionExpression="attribute_exists(pk)",
            )
        except AlreadyRecorded:
            raise AlreadyRecorded("the pending login was already used") from None

    def bypass_used(self, host_uuid: str, now: datetime) -> bool:
        item = self._get(f"BYPASS#{host_uuid}", "BYPASS")
        return bool(item) and int(item[TTL_ATTRIBUTE]["N"]) > now.timestamp()

    def use_bypass(self, host_uuid: str, now: datetime, window_seconds: int) -> None:
        """Take the host's one bypass for the window; AlreadyRecorded if it is taken."""
        self._call(
            "put_item",
            TableName=self.table,
            Item={
                "pk": {"S": f"BYPASS#{host_uuid}"},
                "sk": {"S": "BYPASS"},
                "used_at": _ts(now),
                TTL_ATTRIBUTE: {"N": str(int(now.timestamp()) + window_seconds)},
            },
            ConditionExpression="attribute_not_exists(pk) OR #ttl <= :now",
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues={":now": {"N": str(int(now.timestamp()))}},
        )

    def get_compliance(self, host_uuid: str):
        """(HostCompliance, enforced policy ids) or None when the host has no data."""
        item = self._get("COMPLIANCE", f"HOST#{host_uuid}")
        return _compliance_from_item(item) if item else None

    def put_compliance(self, host, enforced: frozenset[str] | set[str], *, expect_version: int | None = None,
                       fleet_id: int | None = None) -> None:
        """Write a host's compliance. ``expect_version``: only if the item still has that version
        (0: only if there is no item yet) — a read-modify-write that loses no concurrent
        update; AlreadyRecorded otherwise."""
        item = _compliance_item(host, enforced, fleet_id)
        kwargs = {}
        # Every write changes the version, so a concurrent read-modify-write notices and re-reads.
        item["version"] = {"N": str(time.time_ns())}
        if expect_version == 0:  # nothing there yet (or an item from before versions existed)
            kwargs = {"ConditionExpression": "attribute_not_exists(version)"}
        elif expect_version is not None:
            kwargs = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(expect_version)}},
            }
        self._call("put_item", TableName=self.table, Item=item, **kwargs)

    def get_compliance_versioned(self, host_uuid: str):
        """(HostCompliance, enforced ids, version, fleet id) from one read, for read-modify-write."""
        item = self._get("COMPLIANCE", f"HOST#{host_uuid}")
        if not item:
            return None
        host, enforced = _compliance_from_item(item)
        fleet_id = item.get("fleet_id", {}).get("N")
        return host, enforced, int(item.get("version", {}).get("N", "0")), int(fleet_id) if fleet_id else None

    def all_compliance(self) -> dict[str, tuple]:
        """UUID -> (HostCompliance, enforced ids, fleet id, version) for every host with data."""
        out = {}
        kwargs = {"TableName": self.table, "KeyConditionExpression": "pk = :pk",
                  "ExpressionAttributeValues": {":pk": {"S": "COMPLIANCE"}}, "ConsistentRead": True}
        while True:
            page = self._call("query", **kwargs)
            for item in page.get("Items", []):
                host, enforced = _compliance_from_item(item)
                fleet_id = item.get("fleet_id", {}).get("N")
                version = int(item.get("version", {}).get("N", "0"))
                out[host.host_uuid] = (host, enforced, int(fleet_id) if fleet_id else None, version)
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def delete_compliance(self, host_uuid: str) -> None:
        self._call("delete_item", TableName=self.table, Key={"pk": {"S": "COMPLIANCE"}, "sk": {"S": f"HOST#{host_uuid}"}})

    def put_fleet_host(self, fleet_id: int, host_uuid: str) -> None:
        self._call("put_item", TableName=self.table, Item={
            "pk": {"S": f"FLEETHOST#{fleet_id}"}, "sk": {"S": "FLEETHOST"}, "host_uuid": {"S": host_uuid}})

    def fleet_host_uuid(self, fleet_id: int) -> str | None:
        item = self._get(f"FLEETHOST#{fleet_id}", "FLEETHOST")
        return item["host_uuid"]["S"] if item else None

    def revoke_certificate(self, serial: int, reason: str, now: datetime) -> bool:
        """Mark a certificate revoked (effective at once in the IdP). False if already revoked
        or unknown."""
        try:
            self._call(
                "update_item",
                TableName=self.table,
                Key={"pk": {"S": f"CERT#{serial_key(serial)}"}, "sk": {"S": "CERT"}},
                UpdateExpression="SET #s = :revoked, revoked_at = :now, revocation_reason = :reason",
                ConditionExpression="attribute_exists(pk) AND #s <> :revoked",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":revoked": {"S": "revoked"}, ":now": _ts(now), ":reason": {"S": reason[:200]}},
            )
        except AlreadyRecorded:
            return False
        return True

    def mark_use(self, serial: int, now: datetime, seen: datetime | None) -> None:
        """Record an allowed login with a certificate (and its first one). ``seen`` is the
        last use the caller read: a concurrent login that recorded one first wins, quietly."""
        condition = "attribute_exists(pk) AND " + (
            "attribute_not_exists(last_used_at)" if seen is None else "last_used_at = :seen")
        values = {":now": _ts(now)} | ({} if seen is None else {":seen": _ts(seen)})
        try:
            self._call(
                "update_item",
                TableName=self.table,
                Key={"pk": {"S": f"CERT#{serial_key(serial)}"}, "sk": {"S": "CERT"}},
                UpdateExpression="SET last_used_at = :now, first_used_at = if_not_exists(first_used_at, :now)",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except AlreadyRecorded:
            pass

    def revoked_certificates(self) -> list[CertificateRecord]:
        """Every revoked certificate (a scan: run by the daily CRL job, never on a login)."""
        return self.all_certificates(status="revoked")

    def all_certificates(self, status: str | None = None) -> list[CertificateRecord]:
        """Every certificate record, or those with ``status`` (a scan: jobs and the CLI only)."""
        out = []
        kwargs = {
            "TableName": self.table,
            "FilterExpression": "sk = :cert" + (" AND #s = :status" if status else ""),
            "ExpressionAttributeValues": {":cert": {"S": "CERT"}},
        }
        if status:
            kwargs["ExpressionAttributeNames"] = {"#s": "status"}
            kwargs["ExpressionAttributeValues"][":status"] = {"S": status}
        while True:
            page = self._call("scan", **kwargs)
            out += [_certificate_from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def put_sync_report(self, report: dict) -> None:
        self._call("put_item", TableName=self.table, Item={
            "pk": {"S": "SYNC"}, "sk": {"S": "STATE"}, "report": {"S": json.dumps(report, default=str)}})

    def sync_report(self) -> dict | None:
        item = self._get("SYNC", "STATE")
        return json.loads(item["report"]["S"]) if item else None


def _compliance_item(host, enforced, fleet_id: int | None) -> dict:
    rows = [
        {
            "id": r.policy_id, "name": r.name, "result": r.result, "critical": r.critical,
            "resolution": r.resolution, "enforced": r.policy_id in enforced,
        }
        for r in host.results
    ]
    item = {
        "pk": {"S": "COMPLIANCE"},
        "sk": {"S": f"HOST#{host.host_uuid}"},
        "host_uuid": {"S": host.host_uuid},
        "results": {"S": json.dumps(rows, separators=(",", ":"))},
    }
    if host.hostname:
        item["hostname"] = {"S": host.hostname}
    if host.team_id:
        item["team_id"] = {"S": host.team_id}
    if host.synced_at:
        item["synced_at"] = _ts(host.synced_at)
    if host.device_users:
        item["device_users"] = {"SS": sorted(set(host.device_users))}
    if fleet_id is not None:
        item["fleet_id"] = {"N": str(fleet_id)}
    return item


# The "results" attribute holds nothing host-specific (policy, outcome, resolution, enforced), so
# hosts with the same results share one text, and a text always parses to the same immutable rows:
# each distinct text is parsed once per container. Keyed on the whole text; failures are never
# kept; bounded (when full it starts over).
_RESULTS_CACHE_MAX = 256
_results_cache: dict[str, tuple] = {}


def _results_from_text(text: str) -> tuple:
    """(PolicyResult rows, enforced policy ids) of a compliance item's "results" JSON."""
    parsed = _results_cache.get(text)
    if parsed is not None:
        return parsed
    from .compliance.decision import PolicyResult

    rows = json.loads(text)
    results = tuple(
        PolicyResult(
            policy_id=str(r["id"]), name=r["name"], result=r.get("result"),
            critical=bool(r.get("critical")), resolution=r.get("resolution"),
        )
        for r in rows
    )
    parsed = (results, frozenset(str(r["id"]) for r in rows if r.get("enforced")))
    return remember(_results_cache, text, parsed, _RESULTS_CACHE_MAX)


def _compliance_from_item(item: dict):
    from .compliance.decision import HostCompliance

    results, enforced = _results_from_text(item["results"]["S"])
    host = HostCompliance(
        host_uuid=item["host_uuid"]["S"],
        hostname=item.get("hostname", {}).get("S"),
        team_id=item.get("team_id", {}).get("S"),
        results=results,
        synced_at=_parse_ts(item, "synced_at"),
        device_users=tuple(item.get("device_users", {}).get("SS", [])),
    )
    return host, enforced


def _certificate_item(cert: CertificateRecord) -> dict:
    item = {
        "pk": {"S": f"CERT#{serial_key(cert.serial)}"},
        "sk": {"S": "CERT"},
        "serial": {"S": serial_key(cert.serial)},
        "host_uuid": {"S": cert.host_uuid},
        "status": {"S": cert.status},
        "not_before": _ts(cert.not_before),
        "not_after": _ts(cert.not_after),
        "issued_at": _ts(cert.issued_at),
        "der": {"B": cert.der},
        "subject": {"S": cert.subject},
        "transaction_key": {"S": cert.transaction_key},
        "kind": {"S": cert.kind},
        # Keep the record a day past expiry so late logins get a precise answer.
        TTL_ATTRIBUTE: {"N": str(int(cert.not_after.timestamp()) + 86400)},
    }
    if cert.renewed_from is not None:
        item["renewed_from"] = {"S": serial_key(cert.renewed_from)}
    return item


def _certificate_from_item(item: dict) -> CertificateRecord:
    renewed = item.get("renewed_from", {}).get("S")
    return CertificateRecord(
        serial=int(item["serial"]["S"], 16),
        host_uuid=item["host_uuid"]["S"],
        status=item["status"]["S"],
        not_before=_parse_ts(item, "not_before"),
        not_after=_parse_ts(item, "not_after"),
        issued_at=_parse_ts(item, "issued_at"),
        der=bytes(item["der"]["B"]),
        subject=item["subject"]["S"],
        transaction_key=item["transaction_key"]["S"],
        kind=item["kind"]["S"],
        renewed_from=int(renewed, 16) if renewed else None,
        revoked_at=_parse_ts(item, "revoked_at"),
        revocation_reason=item.get("revocation_reason", {}).get("S"),
        first_used_at=_parse_ts(item, "first_used_at"),
        last_used_at=_parse_ts(item, "last_used_at"),
    )


def create_table(client, table: str) -> None:
    """The table as infra declares it (used by the local stack and tests)."""
    client.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=table)
    client.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
