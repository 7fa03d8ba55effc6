"""DynamoDB access: one table, typed records, conditional writes.

Key design (pk / sk, both strings):

    CERT#<serial hex>    CERT          a certificate we issued
    HOST#<UUID>          CERT#<hex>    host -> its certificates (query by pk)
    SCEPTX#<sha256>      SCEPTX        a SCEP transaction and the certificate it produced

Serials are keyed as lowercase hex without leading zeros, whatever form a header carried.
``expires_at`` (epoch seconds) is the table's TTL attribute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

TTL_ATTRIBUTE = "expires_at"


class StoreUnavailable(Exception):
    """DynamoDB could not be reached or kept throttling: callers fail closed."""


class AlreadyRecorded(Exception):
    """A conditional write found the item already there."""


@dataclass(frozen=True)
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

    def is_active(self, now: datetime) -> bool:
        return self.status == "active" and self.not_before <= now < self.not_after


@dataclass(frozen=True)
class Transaction:
    key: str
    csr_sha256: str
    requester_spki_sha256: str
    serial: int


def serial_key(serial: int) -> str:
    return format(serial, "x")


def _client(endpoint: str | None):
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2,
        read_timeout=3,
        retries={"mode": "standard", "max_attempts": 3},
    )
    return boto3.client("dynamodb", endpoint_url=endpoint, config=config)


def _ts(value: datetime) -> dict:
    return {"S": value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")}


def _parse_ts(item: dict, name: str) -> datetime | None:
    raw = item.get(name, {}).get("S")
    return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None


class Store:
    def __init__(self, table: str, client=None, endpoint: str | None = None):
        self.table = table
        self._client = client or _client(endpoint or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"))

    # -------------------------------------------------------------- low level

    def _call(self, operation: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ConditionalCheckFailedException",):
                raise AlreadyRecorded(str(exc)) from None
            if code == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons:
                    raise AlreadyRecorded(f"transaction cancelled: {reasons}") from None
            raise StoreUnavailable(f"DynamoDB {operation} failed: {code or exc}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"DynamoDB {operation} failed: {exc}") from None

    def _get(self, pk: str, sk: str) -> dict | None:
        response = self._call(
            "get_item", TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
        )
        return response.get("Item")

    # -------------------------------------------------------------- certificates

    def get_certificate(self, serial: int) -> CertificateRecord | None:
        item = self._get(f"CERT#{serial_key(serial)}", "CERT")
        return _certificate_from_item(item) if item else None

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

    def record_issuance(self, transaction: Transaction, cert: CertificateRecord) -> None:
        """Record the transaction, the certificate and the host link, all or nothing.

        Raises AlreadyRecorded when the transaction exists (a concurrent retry won).
        """
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
                        "ConditionExpression": "attribute_not_exists(pk)",
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
