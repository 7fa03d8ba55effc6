"""A plain-HTTP origin for the device site (``okta.<domain>``) behind a self-hosted mTLS proxy.

    devicegate local origin --state-dir DIR --device-url https://okta.example.com \\
        --serial-header X-SSL-Client-Serial --serial-format decimal|hex [--leaf-header X-SSL-Client-Cert] \\
        [--listen 127.0.0.1:8080]

The proxy (Caddy, nginx: ``deploy/proxies/``) terminates TLS, requires and verifies the client
certificate against the SCEP CA and forwards the request here with the certificate in headers it
sets itself. Each request becomes the same ALB event the local gateway builds
(:func:`devicegate.alb.build_event`, through the gateway's own request handler) and goes to the
same handler functions, run with the running local stack's settings (``DIR/endpoints.json``)
except ``DEVICEGATE_SERIAL_HEADER``/``_SERIAL_FORMAT``/``_LEAF_HEADER`` (the proxy's headers) and
``DEVICEGATE_SSO_URL`` (``--device-url``: the URL browsers reach the proxy at, which Okta's
AuthnRequest names as its Destination).

Routes: only the device listener's (``/saml/sso``, ``/saml/recheck``, ``/healthz``); the rest
is the fixed 404. The public site (SCEP, metadata, webhook) needs no client certificate and stays
on the stack's public listener (the public ALB in AWS), so nothing public ever runs behind an
origin that believes certificate headers.

Trust: the origin believes whoever connects to it about the client certificate, so
* it binds loopback unless ``--allow-non-loopback`` is given (then only the proxy may reach it);
* it forwards no ``X-Amzn-Mtls-*``/``X-Amzn-Tls-*`` header (nor any other the ALB sets itself)
  except the configured serial and leaf headers, and answers 400 without a serial;
* the proxy must overwrite those headers on every request, never pass a client's through.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .gateway import Route, _Handler, _Server, forwardable_headers, trace_id

_HEADER = re.compile(r"x-[a-z0-9][a-z0-9-]*")
_NOT_CERTIFICATE_HEADERS = ("x-forwarded-", "x-amzn-trace-id", "x-amzn-tls-")


class OriginError(ValueError):
    """A refused option: the message says which and why."""


@dataclass(frozen=True)
class OriginConfig:
    host: str
    port: int
    device_url: str  # https://okta.<domain>[:port], as browsers reach the proxy
    serial_header: str
    serial_format: str
    leaf_header: str | None = None

    @property
    def certificate_headers(self) -> frozenset[str]:
        return frozenset(h for h in (self.serial_header, self.leaf_header) if h)

    @property
    def forwarded_port(self) -> str:
        return str(urlsplit(self.device_url).port or 443)


def _header_name(option: str, value: str) -> str:
    name = value.strip().lower()
    if not _HEADER.fullmatch(name) or name.startswith(_NOT_CERTIFICATE_HEADERS):
        raise OriginError(f"{option} {value!r}: use an X- header of its own, such as X-SSL-Client-Serial")
    return name


def parse_config(*, listen: str, device_url: str, serial_header: str, serial_format: str,
                 leaf_header: str | None = None, allow_non_loopback: bool = False) -> OriginConfig:
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise OriginError(f"--listen {listen!r}: give HOST:PORT, such as 127.0.0.1:8080")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise OriginError(f"--listen {listen!r}: the host must be an IP address or localhost") from None
    if not loopback and not allow_non_loopback:
        raise OriginError(
            f"--listen {listen!r} is not a loopback address. Anyone who can connect to the origin can claim "
            "any device certificate; if only the proxy can reach that address, add --allow-non-loopback"
        )
    parts = urlsplit(device_url)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise OriginError(f"--device-url {device_url!r}: give the proxy's https://HOST[:PORT], no path")
    if serial_format not in ("hex", "decimal"):
        raise OriginError(f"--serial-format {serial_format!r}: hex (nginx) or decimal (Caddy)")
    serial = _header_name("--serial-header", serial_header)
    leaf = _header_name("--leaf-header", leaf_header) if leaf_header else None
    if leaf == serial:
        raise OriginError("--leaf-header and --serial-header must differ")
    return OriginConfig(host, int(port_text), f"https://{parts.netloc}", serial, serial_format, leaf)


def origin_environment(endpoints: dict, config: OriginConfig) -> dict[str, str]:
    """The running stack's handler settings, with the proxy's certificate headers and URL."""
    from .. import alb
    from .stack import tool_environment

    return {
        **tool_environment(endpoints),
        "DEVICEGATE_OKTA_SP_CERT": endpoints["okta"]["sp_cert"],  # left out of endpoints' settings
        "DEVICEGATE_SSO_URL": f"{config.device_url}/saml/sso",
        "DEVICEGATE_SERIAL_HEADER": config.serial_header,
        "DEVICEGATE_SERIAL_FORMAT": config.serial_format,
        # without a leaf header the ALB's name stays: the origin never forwards it
        "DEVICEGATE_LEAF_HEADER": config.leaf_header or alb.LEAF_HEADER,
    }


class _OriginHandler(_Handler):
    server_version = "devicegate-origin"

    def _forwarded_headers(self) -> list[tuple[str, str]] | None:
        config: OriginConfig = self.server.gateway.config
        headers = forwardable_headers(self.headers, keep=config.certificate_headers)
        if not any(name == config.serial_header and value.strip() for name, value in headers):
            return None  # the proxy sent no certificate: misconfigured, so fail closed (400)
        if config.leaf_header and not any(name == config.leaf_header and value.strip() for name, value in headers):
            return None  # configured to send the leaf and did not: a proxy that drops it fails closed too
        # The proxy sets X-Forwarded-For itself (deploy/proxies); its right-most entry is the client.
        forwarded_for = self.headers.get_all("X-Forwarded-For") or [self.client_address[0]]
        return headers + [
            ("x-forwarded-for", forwarded_for[-1]),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", config.forwarded_port),
            ("x-amzn-trace-id", trace_id()),
        ]


class Origin:
    """The device routes over plain HTTP, for :class:`devicegate.local.gateway._Server`."""

    def __init__(self, routes: list[Route], config: OriginConfig):
        self.routes = [r for r in routes if r.listener == "device"]
        self.config = config
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def context_for(self, listener: str) -> None:
        return None  # plain HTTP: the proxy terminated TLS

    def route_for(self, listener: str, path: str) -> Route | None:
        return next((r for r in self.routes if r.matches(path)), None)

    def start(self) -> Origin:
        self._server = _Server((self.config.host, self.config.port), self, "device", handler_class=_OriginHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="devicegate-origin", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._thread.join(timeout=5)
            self._server = None


def run(state_dir: Path, config: OriginConfig) -> int:
    """Serve until SIGINT or SIGTERM; restart it when the stack restarts (new endpoints)."""
    from .. import routes as routes_mod
    from .tools import endpoints

    from .. import telemetry

    e = endpoints(state_dir)
    os.environ.update(origin_environment(e, config))
    # its decisions go to the stack's audit log too (`devicegate audit` reads them from there)
    sink = telemetry.FileSink(Path(e.get("audit_log") or Path(state_dir) / "audit.jsonl"))
    telemetry.add_sink(sink)
    routes = [Route(r.listener, r.path, r.load_handler(), name=f"devicegate-{r.function}")
              for r in routes_mod.ROUTES if r.listener == "device"]
    from .signals import wait_for_stop

    origin = Origin(routes, config).start()
    try:
        print(f"devicegate origin for {config.device_url} listening on {origin.url} "
              f"(serial: {config.serial_header}, {config.serial_format}; leaf: {config.leaf_header or 'none'})",
              flush=True)
        wait_for_stop()
    finally:
        origin.stop()
        telemetry.remove_sink(sink)
        print("devicegate origin stopped", file=sys.stderr, flush=True)
    return 0
