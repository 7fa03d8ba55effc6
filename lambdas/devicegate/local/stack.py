"""The local stack: the whole AWS side of devicegate on one laptop, on embedded defaults.

    devicegate local up --state-dir DIR

* key material created once in DIR and reused (SCEP CA, TLS CA + server certificate, IdP key,
  the local "Okta" SP identity, the SCEP challenge);
* a moto server process on loopback as the AWS endpoint (DynamoDB table + Secrets Manager),
  its requests journaled in DIR so a restart keeps every issued certificate;
* the two load balancers emulated by :mod:`devicegate.local.gateway`, dispatching real ALB
  events to the very same handler functions the Lambdas run;
* ``DIR/endpoints.json`` written atomically once all of that answers, removed on shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import routes as routes_mod
from .. import telemetry
from ..store import create_table
from . import dynamo, pki
from .gateway import Gateway, Route
from .okta import LocalOkta

log = logging.getLogger("devicegate.local")

TABLE = "devicegate"
CA_SECRET = "devicegate/scep-ca"
CHALLENGE_SECRET = "devicegate/scep-challenge"
IDP_KEY_SECRET = "devicegate/idp-signing-key"
FLEET_TOKEN_SECRET = "devicegate/fleet-api-token"
WEBHOOK_SECRET = "devicegate/fleet-webhook-secret"
OKTA_AUDIENCE = "https://okta.devicegate.test/saml2/service-provider/spdevicegatelocal"
OKTA_ACS_PATH = "/okta/sso/saml2"
OKTA_LOGIN_PATH = "/okta/login"
HOST = "127.0.0.1"
ROTATED_IDP_SECRET = "idp/signing-key.json"
AUDIT_LOG = "audit.jsonl"  # every decision and sync record, one JSON line each


@dataclass
class Material:
    scep_ca_pem: str
    scep_ca_path: Path
    scep_ca_secret: str
    tls_ca_pem: str
    tls_cert_path: Path
    tls_key_path: Path
    idp_cert_pem: str
    idp_secret: str
    sp_cert_pem: str
    sp_key_pem: str
    challenge: str
    webhook_secret: str


def prepare_material(state: Path) -> Material:
    """Create (first run) or load (later runs) everything the stack signs or trusts with."""
    scep_ca, scep_key = pki.load_or_create_pair(
        state / "ca", "scep-ca", lambda: _ca("devicegate local SCEP CA", scep=True)
    )
    tls_ca, tls_ca_key = pki.load_or_create_pair(state / "tls", "tls-ca", lambda: _ca("devicegate local TLS CA"))

    def server():
        key = pki.new_key()
        return pki.server_certificate(tls_ca, tls_ca_key, key, ["localhost", HOST]), key

    pki.load_or_create_pair(state / "tls", "server", server)
    idp_cert, idp_key = pki.load_or_create_pair(state / "idp", "idp", lambda: _signer("devicegate local IdP"))
    sp_cert, sp_key = pki.load_or_create_pair(state / "okta", "sp", lambda: _signer("devicegate local Okta SP"))
    challenge_path = state / "scep_challenge"
    if not challenge_path.exists():
        pki.write_private(challenge_path, secrets.token_urlsafe(24) + "\n")
    webhook_path = state / "fleet" / "webhook_secret"
    if not webhook_path.exists():
        pki.write_private(webhook_path, secrets.token_urlsafe(32) + "\n")
    idp_secret = json.dumps({"certificate": pki.pem_cert(idp_cert), "private_key": pki.pem_key(idp_key)})
    rotated = state / ROTATED_IDP_SECRET  # written by `devicegate rotate idp-key`: it wins from then on
    if rotated.exists():
        idp_secret = rotated.read_text()
    return Material(
        scep_ca_pem=pki.pem_cert(scep_ca),
        scep_ca_path=state / "ca" / "scep-ca.pem",
        scep_ca_secret=json.dumps({"certificate": pki.pem_cert(scep_ca), "private_key": pki.pem_key(scep_key)}),
        tls_ca_pem=pki.pem_cert(tls_ca),
        tls_cert_path=state / "tls" / "server.pem",
        tls_key_path=state / "tls" / "server.key",
        idp_cert_pem=json.loads(idp_secret)["certificate"],
        idp_secret=idp_secret,
        sp_cert_pem=pki.pem_cert(sp_cert),
        sp_key_pem=pki.pem_key(sp_key),
        challenge=challenge_path.read_text().strip(),
        webhook_secret=webhook_path.read_text().strip(),
    )


def _ca(name: str, scep: bool = False):
    key = pki.new_key()
    return pki.self_signed_ca(name, key, scep=scep), key


def _signer(name: str):
    key = pki.new_key()
    return pki.signing_certificate(name, key), key


def handler_environment(endpoint: str, *, public_url: str, device_url: str, sp_cert_pem: str,
                        fleet_url: str, fleet_ca_bundle: str | None) -> dict[str, str]:
    """What infra sets on the Lambdas, pointed at the local endpoint, listeners and Fleet."""
    return {
        **dynamo.LOCAL_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "DEVICEGATE_TABLE": TABLE,
        "DEVICEGATE_CA_SECRET": CA_SECRET,
        "DEVICEGATE_SCEP_CHALLENGE_SECRET": CHALLENGE_SECRET,
        # certmonger and scepclient cannot send URI SANs; locally a UUID CN names the host.
        "DEVICEGATE_ACCEPT_CN_UUID": "true",
        "DEVICEGATE_IDP_KEY_SECRET": IDP_KEY_SECRET,
        "DEVICEGATE_IDP_ENTITY_ID": f"{public_url}/saml/metadata",
        "DEVICEGATE_SSO_URL": f"{device_url}/saml/sso",
        "DEVICEGATE_OKTA_AUDIENCE": OKTA_AUDIENCE,
        "DEVICEGATE_OKTA_ACS_URL": f"{public_url}{OKTA_ACS_PATH}",
        "DEVICEGATE_OKTA_SP_CERT": sp_cert_pem,
        "DEVICEGATE_FLEET_URL": fleet_url,
        "DEVICEGATE_FLEET_TOKEN_SECRET": FLEET_TOKEN_SECRET,
        "DEVICEGATE_FLEET_CA_BUNDLE": fleet_ca_bundle or "",
        "DEVICEGATE_FLEET_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "DEVICEGATE_REQUIRE_KNOWN_HOST": "true",
        # a rotated IdP key is picked up within two seconds (60 by default in AWS)
        "DEVICEGATE_KEY_REFRESH_SECONDS": "2",
    }


def tool_environment(endpoints: dict) -> dict[str, str]:
    """The environment a local command needs to run a handler's code (the sync) itself: the
    running stack's own settings, so both syncs agree."""
    fleet = endpoints["fleet"]
    return {
        **endpoints.get("settings", {}),
        **dynamo.LOCAL_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoints["dynamodb"]["endpoint"],
        "DEVICEGATE_TABLE": endpoints["dynamodb"]["table"],
        "DEVICEGATE_FLEET_URL": fleet["url"],
        "DEVICEGATE_FLEET_TOKEN_SECRET": FLEET_TOKEN_SECRET,
        "DEVICEGATE_FLEET_CA_BUNDLE": fleet.get("ca_bundle") or "",
    }


def _ensure_aws_resources(endpoint: str, material: Material, fleet_token: str) -> None:
    import boto3

    kwargs = {"endpoint_url": endpoint, "region_name": dynamo.LOCAL_CREDENTIALS["AWS_DEFAULT_REGION"]}
    ddb = boto3.client("dynamodb", **kwargs)
    if TABLE not in ddb.list_tables().get("TableNames", []):
        create_table(ddb, TABLE)
    sm = boto3.client("secretsmanager", **kwargs)
    for name, value in (
        (CA_SECRET, material.scep_ca_secret),
        (CHALLENGE_SECRET, material.challenge),
        (IDP_KEY_SECRET, material.idp_secret),
        (FLEET_TOKEN_SECRET, fleet_token),
        (WEBHOOK_SECRET, material.webhook_secret),
    ):
        try:
            current = sm.get_secret_value(SecretId=name)["SecretString"]
        except sm.exceptions.ResourceNotFoundException:
            sm.create_secret(Name=name, SecretString=value)
            continue
        if current != value:
            sm.put_secret_value(SecretId=name, SecretString=value)


def _reset_handler_caches() -> None:
    # Handlers cache settings per "container"; the stack may have just changed the environment.
    from ..compliance import webhook
    from ..saml import handler as saml_handler
    from ..scep import handler as scep_handler

    scep_handler.reset()
    saml_handler.reset()
    webhook.reset()


def _fleet_check() -> str:
    """One quick call, so a wrong URL, token or CA bundle shows at start-up, not at the first sync."""
    from .. import settings as settings_mod

    try:
        settings_mod.load_fleet.cache_clear()
        fleet = settings_mod.load_fleet()
        client = settings_mod.fleet_client(fleet, settings_mod.Secrets(), interactive=True)
        client.global_policies()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported in the banner and endpoints.json
        return f"FAILED: {exc}"


class _LateOkta:
    """Routes are fixed before the ports are known; the local Okta is built once they are."""

    target: LocalOkta | None = None

    def login(self, event, context):
        return self.target.login_handler(event, context)

    def acs(self, event, context):
        return self.target.acs_handler(event, context)


class SyncLoop:
    """The scheduled sync, locally: the sync Lambda's handler every ``interval`` seconds."""

    def __init__(self, interval: float, state: Path | None = None):
        self.interval = interval
        self.state = state  # when set, a run that revoked certificates republishes the CRL
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="devicegate-sync", daemon=True)

    def _run(self) -> None:
        from ..compliance import sync

        while not self.stopping.is_set():
            try:
                report = sync.lambda_handler({"source": "local-schedule"}, None)
                if report["errors"]:
                    log.warning("sync finished with errors: %s", report["errors"][:3])
                if self.state is not None and (report.get("revoked") or report.get("superseded_revoked")):
                    publish_from_store(self.state)  # the crl Lambda's schedule in AWS; here at once
            except Exception:  # noqa: BLE001 - the loop outlives a bad run, like the schedule does
                log.exception("sync failed")
            self.stopping.wait(self.interval)

    def start(self) -> "SyncLoop":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)


def _crl_next_update(path: Path):
    """The CRL file's nextUpdate (aware UTC), or None when it is missing, unreadable or has none."""
    try:
        return x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
    except (OSError, ValueError):
        return None


def _crl_usable(path: Path, margin_hours: float = 0, next_update=...) -> bool:
    from datetime import datetime, timedelta, timezone

    if next_update is ...:
        next_update = _crl_next_update(path)
    return next_update is not None and next_update - timedelta(hours=margin_hours) > datetime.now(timezone.utc)


def publish_from_store(state: Path) -> Path:
    """Build the CRL from the revoked certificates in the table (the crl Lambda's job in AWS)."""
    from .. import settings as settings_mod
    from ..store import Store

    return write_crl(state, Store(settings_mod.table_name()).revoked_certificates())


def write_crl(state: Path, revoked) -> Path:
    """Sign a CRL with the local CA and write it where the device listener reads it."""
    from datetime import datetime, timezone

    from cryptography.hazmat.primitives.serialization import Encoding

    from ..crl import build_crl

    ca, key = pki.load_or_create_pair(state / "ca", "scep-ca", lambda: None)
    now = datetime.now(timezone.utc)
    crl = build_crl(ca, key, revoked, now=now, number=int(now.timestamp() * 1000))
    path = state / "ca" / "crl.pem"
    pki.write_private(path, crl.public_bytes(Encoding.PEM).decode("ascii"))  # atomic
    return path


class CrlWatch:
    """The local stand-in for the trust store's revocation list: when ``crl publish`` writes a
    new CRL, new handshakes on the device listener check against it (like ALB's)."""

    def __init__(self, path: Path, gateway: Gateway):
        self.path, self.gateway = path, gateway
        self.stopping = threading.Event()
        self.seen = path.stat().st_mtime_ns if path.exists() else 0
        self.thread = threading.Thread(target=self._run, name="devicegate-crl", daemon=True)

    def _run(self) -> None:
        parsed: tuple[int, object] | None = None  # (mtime_ns, nextUpdate): the file is parsed once per change
        while not self.stopping.wait(0.5):
            try:
                try:
                    current = self.path.stat().st_mtime_ns
                except FileNotFoundError:
                    current = None
                if parsed is None or parsed[0] != current:
                    parsed = (current, _crl_next_update(self.path))
                # like the daily publisher: a CRL a day from its nextUpdate is rebuilt
                if not _crl_usable(self.path, margin_hours=24, next_update=parsed[1]) and self.path.exists():
                    publish_from_store(self.path.parent.parent)
                mtime = self.path.stat().st_mtime_ns
                if mtime != self.seen:
                    self.gateway.reload_device_trust()
                    self.seen = mtime
                    log.info("device listener reloaded the CRL")
            except Exception:  # noqa: BLE001 - a half-written file is retried next tick
                log.exception("reloading the CRL failed")

    def start(self) -> "CrlWatch":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


class LocalStack:
    def __init__(self, state_dir: Path, *, public_port: int = 0, device_port: int = 0,
                 fleet_url: str | None = None, fleet_token_file: Path | None = None, sync_interval: float = 60.0,
                 fleet_ca_bundle: Path | None = None, aws_fault_proxy: bool = False):
        self.state = Path(state_dir).resolve()
        self.aws_fault_proxy = aws_fault_proxy
        self.fault_proxy = None
        self.public_port = public_port
        self.device_port = device_port
        self.fleet_url = fleet_url.rstrip("/") if fleet_url else None
        self.fleet_token_file = fleet_token_file
        self.fleet_ca_bundle = Path(fleet_ca_bundle).resolve() if fleet_ca_bundle else None
        self.sync_interval = sync_interval
        self.fleet_sim = None
        self.sync_loop: SyncLoop | None = None
        self.moto: dynamo.MotoServer | None = None
        self.gateway: Gateway | None = None
        self.endpoints: dict | None = None

    @property
    def endpoints_path(self) -> Path:
        return self.state / "endpoints.json"

    def start(self) -> dict:
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
        self.endpoints_path.unlink(missing_ok=True)
        material = prepare_material(self.state)
        try:
            fleet_url, fleet_token, fleet_ca, fleet_mode = self._fleet(material)
            self.moto = dynamo.MotoServer(log_path=self.state / "aws-requests.jsonl").start()
            aws_endpoint = self.moto.endpoint
            if self.aws_fault_proxy:  # failure tests: the handlers reach moto only through it
                from .faultproxy import FaultProxy

                self.fault_proxy = FaultProxy(self.moto.endpoint, host=HOST).start()
                aws_endpoint = self.fault_proxy.url
            routes = [Route(r.listener, r.path, r.load_handler(), name=f"devicegate-{r.function}") for r in routes_mod.ROUTES]
            okta = _LateOkta()
            routes += [
                Route("public", OKTA_LOGIN_PATH, okta.login, name="local-okta-login"),
                Route("public", OKTA_ACS_PATH, okta.acs, name="local-okta-acs"),
            ]
            crl_path = self.state / "ca" / "crl.pem"
            if not _crl_usable(crl_path):  # the device listener needs a valid CRL from the start
                write_crl(self.state, [])  # a placeholder until the real one is built below
            self.gateway = Gateway(
                routes,
                server_cert=material.tls_cert_path,
                server_key=material.tls_key_path,
                device_ca=material.scep_ca_path,
                device_crl=crl_path,
                host=HOST,
                public_port=self.public_port,
                device_port=self.device_port,
            ).start()
            public = f"https://{HOST}:{self.gateway.public_port}"
            device = f"https://{HOST}:{self.gateway.device_port}"
            os.environ.update(
                handler_environment(aws_endpoint, public_url=public, device_url=device,
                                    sp_cert_pem=material.sp_cert_pem, fleet_url=fleet_url, fleet_ca_bundle=fleet_ca)
            )
            _ensure_aws_resources(self.moto.endpoint, material, fleet_token)
            _reset_handler_caches()
            self.audit_sink = telemetry.FileSink(self.state / AUDIT_LOG)
            telemetry.add_sink(self.audit_sink)  # decisions and sync records, read by `devicegate audit`
            publish_from_store(self.state)  # the CRL always comes from the table, never a stale file
            self.gateway.reload_device_trust()
            okta.target = LocalOkta(
                audience=OKTA_AUDIENCE,
                acs_url=f"{public}{OKTA_ACS_PATH}",
                sso_url=f"{device}/saml/sso",
                idp_entity_id=f"{public}/saml/metadata",
                idp_cert=x509.load_pem_x509_certificate(material.idp_cert_pem.encode()),
                sp_key=serialization.load_pem_private_key(material.sp_key_pem.encode(), password=None),
                sp_cert_pem=material.sp_cert_pem,
                state_dir=self.state,
            )
        except BaseException:
            self.stop()
            raise
        self.endpoints = {
            "public_url": public,
            "device_url": device,
            "scep_url": f"{public}/scep",
            "metadata_url": f"{public}/saml/metadata",
            "sso_url": f"{device}/saml/sso",
            "tls_ca": material.tls_ca_pem,
            "scep_ca": material.scep_ca_pem,
            "idp_cert": material.idp_cert_pem,
            "scep_challenge": material.challenge,
            "okta": {
                "audience": OKTA_AUDIENCE,
                "acs_url": f"{public}{OKTA_ACS_PATH}",
                "login_url": f"{public}{OKTA_LOGIN_PATH}",
                "sp_cert": material.sp_cert_pem,
                "sp_key": material.sp_key_pem,
            },
            "dynamodb": {"endpoint": self.moto.endpoint, "table": TABLE},
            "fleet": {
                "mode": fleet_mode,
                "url": fleet_url,
                "ca_bundle": fleet_ca,
                # the simulated Fleet's admin token (the local CLI drives it); never a real one
                "token": fleet_token if fleet_mode == "simulated" else None,
                "webhook_url": f"{public}/fleet/webhook?secret={material.webhook_secret}",
                "webhook_secret": material.webhook_secret,
                "sync_interval_seconds": self.sync_interval,
            },
            "state_dir": str(self.state),
            "audit_log": str(self.state / AUDIT_LOG),
            "pid": os.getpid(),
            # the DEVICEGATE_* settings the handlers run with (ids and flags, no secret values)
            "settings": {k: v for k, v in sorted(os.environ.items())
                         if k.startswith("DEVICEGATE_") and k != "DEVICEGATE_OKTA_SP_CERT"},
            "fleet_check": _fleet_check(),
        }
        if self.fault_proxy is not None:
            self.endpoints["aws_fault_proxy"] = {"url": self.fault_proxy.url, "admin_url": self.fault_proxy.admin_url}
        self.sync_loop = SyncLoop(self.sync_interval, self.state).start()
        self.crl_watch = CrlWatch(self.state / "ca" / "crl.pem", self.gateway).start()
        pki.write_private(self.endpoints_path, json.dumps(self.endpoints, indent=2) + "\n")  # atomic
        return self.endpoints

    def _fleet(self, material: Material) -> tuple[str, str, str | None, str]:
        """(url, API token, CA bundle, mode): a real Fleet when given, else the simulated one."""
        if self.fleet_url:
            if not self.fleet_url.startswith("https://"):
                raise SystemExit(f"--fleet-url {self.fleet_url!r}: use the Fleet server's https:// URL")
            if self.fleet_token_file is None or not Path(self.fleet_token_file).is_file():
                raise SystemExit("--fleet-token-file: give a file holding a Fleet API token (an API-only user's)")
            token = Path(self.fleet_token_file).read_text().strip()
            if not token:
                raise SystemExit(f"--fleet-token-file {self.fleet_token_file}: the file is empty")
            if self.fleet_ca_bundle is not None and not self.fleet_ca_bundle.is_file():
                raise SystemExit(f"--fleet-ca-bundle {self.fleet_ca_bundle}: no such file")
            return self.fleet_url, token, str(self.fleet_ca_bundle) if self.fleet_ca_bundle else None, "real"
        from .fleet_sim import SimulatedFleetProcess

        token_path = self.state / "fleet" / "sim_token"
        if not token_path.exists():
            pki.write_private(token_path, secrets.token_urlsafe(32) + "\n")
        token = token_path.read_text().strip()
        # A process of its own, as a real Fleet is a server of its own: its work is not the
        # Lambdas' or the load balancers' (this process plays those).
        self.fleet_sim = SimulatedFleetProcess(self.state / "fleet" / "sim_state.json", token_file=token_path,
                                               certfile=material.tls_cert_path, keyfile=material.tls_key_path)
        self.fleet_sim.start()
        return self.fleet_sim.url, token, str(self.state / "tls" / "tls-ca.pem"), "simulated"

    def stop(self) -> None:
        if self.endpoints_path.exists():
            self.endpoints_path.unlink(missing_ok=True)
        if getattr(self, "audit_sink", None) is not None:
            telemetry.remove_sink(self.audit_sink)
            self.audit_sink = None
        if self.sync_loop is not None:
            self.sync_loop.stop()
            self.sync_loop = None
        if getattr(self, "crl_watch", None) is not None:
            self.crl_watch.stop()
            self.crl_watch = None
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.fault_proxy is not None:
            self.fault_proxy.stop()
            self.fault_proxy = None
        if self.moto is not None:
            self.moto.stop()
            self.moto = None
        if self.fleet_sim is not None:
            self.fleet_sim.stop()
            self.fleet_sim = None


def run(state_dir: Path, *, public_port: int = 0, device_port: int = 0, fleet_url: str | None = None,
        fleet_token_file: Path | None = None, sync_interval: float = 60.0, fleet_ca_bundle: Path | None = None,
        aws_fault_proxy: bool = False) -> int:
    """Run in the foreground until SIGINT or SIGTERM."""
    from .signals import wait_for_stop

    stack = LocalStack(state_dir, public_port=public_port, device_port=device_port, fleet_url=fleet_url,
                       fleet_token_file=fleet_token_file, sync_interval=sync_interval, fleet_ca_bundle=fleet_ca_bundle,
                       aws_fault_proxy=aws_fault_proxy)
    endpoints = stack.start()
    try:
        print(
            "devicegate local stack is up\n"
            f"  public (TLS)      {endpoints['public_url']}   SCEP: {endpoints['scep_url']}\n"
            f"  device (mTLS)     {endpoints['device_url']}\n"
            f"  DynamoDB (moto)   {endpoints['dynamodb']['endpoint']}  table {TABLE}\n"
            f"  Fleet ({endpoints['fleet']['mode']})  {endpoints['fleet']['url']}  sync every {stack.sync_interval:g}s\n"
            f"  Fleet check       {endpoints['fleet_check']}\n"
            f"  TLS CA            {stack.state / 'tls' / 'tls-ca.pem'}\n"
            f"  SCEP CA           {stack.state / 'ca' / 'scep-ca.pem'}\n"
            f"  SCEP challenge    {stack.state / 'scep_challenge'}\n"
            f"  endpoints         {stack.endpoints_path}\n"
            "Ctrl-C stops it; the state dir keeps the CA and issued certificates.",
            flush=True,
        )
        wait_for_stop()
    finally:
        stack.stop()
        print("devicegate local stack stopped", file=sys.stderr, flush=True)
    return 0
