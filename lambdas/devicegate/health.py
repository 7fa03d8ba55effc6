"""``/healthz``: answers without touching storage, so it says the function is up, nothing more."""

from __future__ import annotations

from . import alb


def lambda_handler(event, context):
    try:
        request = alb.Request.from_event(event)
    except alb.BadEvent as exc:
        return alb.Response(400, f"bad request: {exc}\n").to_event(multi_value="multiValueHeaders" in (event or {}))
    return alb.Response(200, "ok\n").to_event(request.multi_value)
