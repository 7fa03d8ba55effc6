"""Shared by the load and fault tests: timing, latency figures, and a direct look at the table."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


def timed(fn, *args, **kwargs):
    """(fn's result, seconds it took)."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def latency_summary(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p99_ms": round(p99 * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def record_figures(name: str, figures: dict) -> Path:
    """Print the figures (pytest -s shows them) and keep them in test-output/NAME.json."""
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{name}: " + json.dumps(figures))
    return path


class Table:
    """The stack's DynamoDB table, read straight from moto (never through a fault proxy)."""

    def __init__(self, endpoints: dict):
        import boto3

        from devicegate.local import dynamo

        creds = dynamo.LOCAL_CREDENTIALS
        self.name = endpoints["dynamodb"]["table"]
        self.client = boto3.client("dynamodb", endpoint_url=endpoints["dynamodb"]["endpoint"],
                                   region_name=creds["AWS_DEFAULT_REGION"], aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                                   aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])

    def _get(self, pk: str, sk: str) -> dict | None:
        return self.client.get_item(TableName=self.name, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                                    ConsistentRead=True).get("Item")

    def certificate(self, serial_hex: str) -> dict | None:
        return self._get(f"CERT#{serial_hex.lower()}", "CERT")

    def host_link(self, host_uuid: str, serial_hex: str) -> bool:
        return self._get(f"HOST#{host_uuid}", f"CERT#{serial_hex.lower()}") is not None
