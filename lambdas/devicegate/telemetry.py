"""Structured records: one JSON line per event, written to standard output on Lambda.

On Lambda, standard output goes to the function's CloudWatch log group as it is (the runtime
does not wrap ``print`` output, unlike ``logging`` records), so a line carrying an ``_aws``
block is also an embedded-metric-format (EMF) record: CloudWatch turns it into metrics, and
the same line is the audit record ``devicegate audit`` reads back with a filter pattern.

Outside Lambda (the local stack, the CLI running a handler's code) records go to the
``devicegate.telemetry`` logger instead, so they never mix with a command's own output, and the
local stack adds a sink that appends every record to ``<state>/audit.jsonl``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from _thread import allocate_lock  # threading.Lock itself, without importing threading
from typing import Callable

from . import logs

NAMESPACE = "devicegate"

log = logs.getLogger("devicegate.telemetry")
_sinks: list[Callable[[str], None]] = []
_lock = allocate_lock()


def add_sink(sink: Callable[[str], None]) -> None:
    with _lock:
        _sinks.append(sink)


def remove_sink(sink: Callable[[str], None]) -> None:
    with _lock:
        if sink in _sinks:
            _sinks.remove(sink)


def emf(record: dict, *, function: str, metrics: dict[str, str], dimensions: tuple[str, ...] = ()) -> dict:
    """``record`` plus the EMF block declaring ``metrics`` (name -> unit), which must be keys
    of ``record``, per ``Function`` and each of ``dimensions``."""
    missing = [name for name in (*metrics, *dimensions) if name not in record]
    if missing:
        raise ValueError(f"EMF record lacks {missing}")
    sets = [["Function"]] + [["Function", d] for d in dimensions]
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": sets,
                "Metrics": [{"Name": name, "Unit": unit} for name, unit in metrics.items()],
            }],
        },
        "Function": function,
        **record,
    }


# What json.dumps(record, default=str, separators=(",", ":"), ensure_ascii=True) builds on every
# call; encode() keeps no state between calls, so one serves every record (and every thread).
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"), ensure_ascii=True)


def emit(record: dict) -> None:
    """Write one record as one line (standard output, then every sink). Never raises: a
    record that cannot be written must not turn a decision into an error."""
    try:
        line = _ENCODER.encode(record)
    except (TypeError, ValueError) as exc:
        line = json.dumps({"event": "telemetry_error", "error": str(exc)[:200]})
    with _lock:
        sinks = list(_sinks)
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            try:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
        else:
            log.info(line)
    for sink in sinks:
        try:
            sink(line)
        except Exception:  # noqa: BLE001 - a broken sink loses its copy only
            pass


class FileSink:
    """Appends lines to a file (0600), rotating it to ``<name>.1`` past ``max_bytes``."""

    def __init__(self, path, max_bytes: int = 16 * 1024 * 1024):
        from pathlib import Path

        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = allocate_lock()

    def __call__(self, line: str) -> None:
        data = (line + "\n").encode("ascii")
        with self._lock:
            try:
                if self.path.stat().st_size + len(data) > self.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            except FileNotFoundError:
                pass
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
