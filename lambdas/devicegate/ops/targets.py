"""Where the operations commands act: a running local stack, or an AWS deployment.

``--state-dir DIR``  the local stack (its ``endpoints.json``);
``--outputs FILE``   a deployment: the JSON of ``pulumi stack output --json --show-secrets``,
                     with AWS credentials from the usual boto3 chain and, for the Okta checks
                     and the key rotation, ``OKTA_API_TOKEN`` in the environment.

Both expose the same operations, so every command is one code path with two back ends; what
is the same on both (the table, the HTTPS checks) is shared.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path


class OpsError(RuntimeError):
    """A command could not do its job; the message says why and what to do."""


@dataclass(frozen=True)
class Deployment:
    kind: str  # "local" | "aws"
    public_url: str
    device_url: str
    scep_url: str
    metadata_url: str
    sso_url: str
    scep_ca_pem: str
    idp_cert_pem: str
    tls_ca_pem: str | None  # None: the system's trust store (a real deployment's ACM certificates)


def target_from_args(args):
    state_dir = getattr(args, "state_dir", None) or os.environ.get("DEVICEGATE_STATE_DIR") or None
    outputs = getattr(args, "outputs", None) or os.environ.get("DEVICEGATE_OUTPUTS") or None
    if (state_dir is None) == (outputs is None):
        raise OpsError("say where: --state-dir DIR (a local stack) or --outputs FILE (a deployment's "
                       "`pulumi stack output --json --show-secrets`), not both")
    if state_dir is not None:
        return LocalTarget(Path(state_dir))
    return AwsTarget(Path(outputs), region=getattr(args, "region", None))


# ------------------------------------------------------------------------------ local


class LocalTarget:
    kind = "local"

    def __init__(self, state_dir: Path):
        from ..local import tools

        self.state_dir = Path(state_dir)
        try:
            self.e = tools.endpoints(self.state_dir)
        except tools.ToolError as exc:
            raise OpsError(str(exc)) from None
        pid = self.e.get("pid")
        if isinstance(pid, int) and not _alive(pid):
            raise OpsError(f"the local stack of {self.state_dir} (pid {pid}) is not running; its endpoints.json "
                           "is left over. Start it with ./dev up")

    def deployment(self) -> Deployment:
        e = self.e
        return Deployment("local", e["public_url"], e["device_url"], e["scep_url"], e["metadata_url"], e["sso_url"],
                          e["scep_ca"], _current_idp_cert(self), e["tls_ca"])

    def store(self):
        from ..local import tools

        return tools._store(self.state_dir)

    def secret(self, secret_id: str) -> str:
        return self._secrets().get_secret_value(SecretId=secret_id)["SecretString"]

    def put_secret(self, secret_id: str, value: str) -> None:
        self._secrets().put_secret_value(SecretId=secret_id, SecretString=value)

    def _secrets(self):
        import boto3

        from ..local import dynamo

        return boto3.client("secretsmanager", endpoint_url=self.e["dynamodb"]["endpoint"],
                            region_name=dynamo.LOCAL_CREDENTIALS.get("AWS_DEFAULT_REGION", "us-east-1"),
                            aws_access_key_id=dynamo.LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=dynamo.LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    @property
    def idp_key_secret_id(self) -> str:
        return self.e["settings"]["DEVICEGATE_IDP_KEY_SECRET"]

    def publish_crl(self) -> dict:
        from ..local import tools

        result = tools.publish_crl(self.state_dir)
        return {"revoked": len(result["revoked_serials"]), "revoked_serials": result["revoked_serials"],
                "published_to": [result["path"]]}

    def sync(self, host_uuid: str | None) -> dict:
        from ..local import tools

        try:
            return tools.sync_now(self.state_dir, host_uuid)
        except tools.ToolError as exc:
            raise OpsError(str(exc)) from None

    def profile(self) -> bytes:
        from ..profile import build_profile

        e = self.e
        return build_profile(organization="devicegate", scep_url=e["scep_url"], challenge=e["scep_challenge"],
                             ca_cert_pem=e["scep_ca"], device_url=e["device_url"])

    def audit_records(self, since: datetime) -> list[dict]:
        path = Path(self.e.get("audit_log") or self.state_dir / "audit.jsonl")
        lines: list[str] = []
        for candidate in (path.with_name(path.name + ".1"), path):
            try:
                lines += candidate.read_text(encoding="ascii", errors="replace").splitlines()
            except FileNotFoundError:
                continue
        return _decisions(lines, since)

    def published_crl(self) -> bytes:
        return (self.state_dir / "ca" / "crl.pem").read_bytes()

    def trust_bundle(self) -> bytes:
        return (self.state_dir / "ca" / "scep-ca.pem").read_bytes()  # what the device listener trusts

    def revocation_mismatch(self, listed: int) -> str | None:
        return None  # the device listener loads DIR/ca/crl.pem itself

    def max_data_age_seconds(self) -> int:
        return int(self.e.get("settings", {}).get("DEVICEGATE_MAX_DATA_AGE_SECONDS") or 7200)

    def okta_trust(self) -> list[str]:
        """The IdP certificates the local Okta verifies Responses with."""
        from ..local import okta

        return okta.trusted_idp_certs(self.state_dir, self.e["idp_cert"])

    def set_okta_trust(self, cert_pem: str) -> dict:
        from ..local import okta

        okta.set_trusted_idp_cert(self.state_dir, cert_pem)
        return {"okta": "local Okta now verifies with the new certificate"}

    def okta_checks(self) -> list[tuple[str, str, str]]:
        trusted = self.okta_trust()
        current = _current_idp_cert(self)
        ok = _same_cert(trusted[0], current)
        return [("okta idp certificate", "ok" if ok else "fail",
                 "local Okta verifies with the IdP's signing certificate" if ok
                 else "local Okta trusts another certificate than the one the IdP signs with")]


# ------------------------------------------------------------------------------ AWS


class AwsTarget:
    kind = "aws"

    REQUIRED = ("publicUrl", "deviceUrl", "scepUrl", "metadataUrl", "ssoUrl", "caCertificatePem",
                "idpCertificatePem", "tableName", "functionNames")

    def __init__(self, outputs_path: Path, region: str | None = None):
        try:
            self.o = json.loads(Path(outputs_path).read_text())
        except (OSError, ValueError) as exc:
            raise OpsError(f"--outputs {outputs_path}: cannot read it ({exc}). Fix: "
                           "pulumi stack output --json --show-secrets > outputs.json") from None
        missing = [k for k in self.REQUIRED if k not in self.o]
        if missing:
            raise OpsError(f"--outputs {outputs_path}: missing {', '.join(missing)}. Fix: export them from an "
                           "up-to-date stack (pulumi up, then pulumi stack output --json --show-secrets)")
        self.region = region or self.o.get("region") or None

    def _client(self, service: str):
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name=self.region,
                            config=Config(connect_timeout=5, read_timeout=60, retries={"mode": "standard"}))

    def deployment(self) -> Deployment:
        o = self.o
        return Deployment("aws", o["publicUrl"], o["deviceUrl"], o["scepUrl"], o["metadataUrl"], o["ssoUrl"],
                          o["caCertificatePem"], o["idpCertificatePem"], None)

    def store(self):
        from ..store import Store

        return Store(self.o["tableName"], client=self._client("dynamodb"))

    @property
    def idp_key_secret_id(self) -> str:
        if not self.o.get("idpKeySecretId"):
            raise OpsError("the outputs have no idpKeySecretId: run pulumi up with this version first")
        return self.o["idpKeySecretId"]

    def secret(self, secret_id: str) -> str:
        return self._client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]

    def put_secret(self, secret_id: str, value: str) -> None:
        self._client("secretsmanager").put_secret_value(SecretId=secret_id, SecretString=value)

    def _invoke(self, short: str, payload: dict) -> dict:
        name = self.o["functionNames"].get(short)
        if not name:
            raise OpsError(f"the outputs name no {short!r} function")
        reply = self._client("lambda").invoke(FunctionName=name, InvocationType="RequestResponse",
                                              Payload=json.dumps(payload).encode())
        body = reply["Payload"].read()
        try:
            result = json.loads(body or b"null")
        except ValueError:
            result = body.decode("utf-8", "replace")
        if reply.get("FunctionError"):
            message = result.get("errorMessage") if isinstance(result, dict) else result
            raise OpsError(f"the {short} function failed: {message} (see its log group)")
        return result

    def publish_crl(self) -> dict:
        result = self._invoke("crl", {"source": "devicegate crl publish"})
        return {"revoked": result.get("revoked"), "published_to": sorted(result.get("versions", {})),
                "replaced_revocation_ids": result.get("replaced_revocation_ids", [])}

    def sync(self, host_uuid: str | None) -> dict:
        return self._invoke("sync", {"source": "devicegate sync now"} | ({"host": host_uuid} if host_uuid else {}))

    def profile(self) -> bytes:
        if not self.o.get("mobileconfig"):
            raise OpsError("the outputs hold no mobileconfig: export with --show-secrets")
        return self.o["mobileconfig"].encode()

    def audit_records(self, since: datetime) -> list[dict]:
        group = self.o.get("logGroups", {}).get("idp") or f"/aws/lambda/{self.o['functionNames']['idp']}"
        logs = self._client("logs")
        kwargs = {"logGroupName": group, "startTime": int(since.timestamp() * 1000),
                  "filterPattern": '{ $.event = "decision" }'}
        lines = []
        while True:
            page = logs.filter_log_events(**kwargs)
            lines += [e["message"] for e in page.get("events", [])]
            if not page.get("nextToken") or len(lines) > 100_000:
                return _decisions(lines, since)
            kwargs["nextToken"] = page["nextToken"]

    def published_crl(self) -> bytes:
        from ..crl import CRL_KEY

        bucket = self.o.get("crlBucket")
        if not bucket:
            raise OpsError("the outputs have no crlBucket: run pulumi up with this version first")
        return self._client("s3").get_object(Bucket=bucket, Key=CRL_KEY + ".pem")["Body"].read()

    def trust_bundle(self) -> bytes:
        arn = self.o.get("trustStoreArn")
        if not arn:
            raise OpsError("the outputs have no trustStoreArn")
        location = self._client("elbv2").get_trust_store_ca_certificates_bundle(TrustStoreArn=arn)["Location"]
        with urllib.request.urlopen(location, timeout=30) as reply:  # a pre-signed S3 URL
            return reply.read()

    def revocation_mismatch(self, listed: int) -> str | None:
        """The trust store's revocation list must be the published CRL (the crl function writes
        S3 first, then replaces the list: a failure in between leaves the old list in force)."""
        arn = self.o.get("trustStoreArn")
        lists = self._client("elbv2").describe_trust_store_revocations(TrustStoreArn=arn).get(
            "TrustStoreRevocations", [])
        if len(lists) != 1:
            return f"the trust store has {len(lists)} revocation lists, not 1"
        entries = lists[0].get("NumberOfRevokedEntries")
        if entries != listed:
            return f"the trust store's revocation list has {entries} entries, the published CRL {listed}"
        return None

    def max_data_age_seconds(self) -> int:
        return int(self.o.get("maxDataAgeSeconds") or 7200)

    # -------------------------------------------------------------- Okta

    def _okta(self, method: str, path: str, body: dict | None = None):
        token = os.environ.get("OKTA_API_TOKEN", "").strip()
        org = (self.o.get("oktaOrgUrl") or "").rstrip("/")
        if not token or not org:
            raise OpsError("the Okta checks need OKTA_API_TOKEN in the environment and oktaOrgUrl in the outputs")
        request = urllib.request.Request(
            f"{org}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"SSWS {token}", "Accept": "application/json",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                data = reply.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise OpsError(f"Okta {method} {path}: HTTP {exc.code} {detail}") from None
        except OSError as exc:
            raise OpsError(f"Okta {method} {path}: {exc}") from None
        return json.loads(data) if data else None

    def okta_trust(self) -> list[str]:
        idp = self._okta("GET", f"/api/v1/idps/{self.o['oktaIdpId']}")
        kid = idp["protocol"]["credentials"]["trust"]["kid"]
        key = self._okta("GET", f"/api/v1/idps/credentials/keys/{urllib.parse.quote(kid)}")
        return [_pem_from_x5c(key["x5c"][0])]

    def set_okta_trust(self, cert_pem: str) -> dict:
        """Upload the certificate as an IdP key and make the devicegate IdP trust it."""
        idp_id = self.o["oktaIdpId"]
        key = self._okta("POST", "/api/v1/idps/credentials/keys", {"x5c": [_x5c(cert_pem)]})
        idp = self._okta("GET", f"/api/v1/idps/{idp_id}")
        idp["protocol"]["credentials"]["trust"]["kid"] = key["kid"]
        self._okta("PUT", f"/api/v1/idps/{idp_id}", idp)
        return {"okta": f"IdP {idp_id} now trusts key {key['kid']}", "kid": key["kid"]}

    def okta_checks(self) -> list[tuple[str, str, str]]:
        checks = []
        try:
            idp = self._okta("GET", f"/api/v1/idps/{self.o['oktaIdpId']}")
        except OpsError as exc:
            return [("okta idp", "fail", str(exc))]
        endpoints = idp.get("protocol", {}).get("endpoints", {})
        sso = endpoints.get("sso", {}).get("url")
        issuer = idp.get("protocol", {}).get("credentials", {}).get("trust", {}).get("issuer")
        checks.append(("okta idp", "ok" if idp.get("status") == "ACTIVE" else "fail",
                       f"{idp.get('name')}: status {idp.get('status')}"))
        checks.append(("okta idp sso url", "ok" if sso == self.o["ssoUrl"] else "fail", f"{sso}"))
        checks.append(("okta idp issuer", "ok" if issuer == self.o["metadataUrl"] else "fail", f"{issuer}"))
        try:
            trusted = self.okta_trust()[0]
            same = _same_cert(trusted, _current_idp_cert(self))
            checks.append(("okta idp certificate", "ok" if same else "fail",
                           "Okta verifies with the IdP's signing certificate" if same
                           else "Okta trusts another certificate than the one the IdP signs with"))
        except (OpsError, KeyError, IndexError) as exc:
            checks.append(("okta idp certificate", "fail", str(exc)))
        authenticator_id = self.o.get("oktaAuthenticatorId")
        if not authenticator_id:
            checks.append(("okta factor-only usage", "warn",
                           "no IdP authenticator yet: set the IdP's usage to Factor only in the Admin Console, "
                           "then devicegate:idpFactorOnly true and pulumi up (see manualSteps)"))
            return checks
        try:
            auth = self._okta("GET", f"/api/v1/authenticators/{authenticator_id}")
        except OpsError as exc:
            return checks + [("okta authenticator", "fail", str(exc))]
        bound = auth.get("provider", {}).get("configuration", {}).get("idpId")
        good = auth.get("key") == "external_idp" and auth.get("status") == "ACTIVE" and bound == self.o["oktaIdpId"]
        checks.append(("okta authenticator", "ok" if good else "fail",
                       f"{auth.get('name')}: key {auth.get('key')}, status {auth.get('status')}, IdP {bound}"))
        # Okta's API has no field for an IdP's usage; Okta only lets an IdP authenticator use an
        # IdP whose usage is "Factor only", so an active one bound to ours is the evidence.
        checks.append(("okta factor-only usage", "ok" if good else "fail",
                       "inferred: an active IdP authenticator is bound to the devicegate IdP (the API has no "
                       "usage field)" if good else "no active IdP authenticator uses the devicegate IdP"))
        return checks


# ------------------------------------------------------------------------------ shared


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _decisions(lines: list[str], since: datetime) -> list[dict]:
    out = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("event") != "decision":
            continue
        try:
            moment = datetime.fromisoformat(record["time"])
        except (KeyError, TypeError, ValueError):
            continue
        if moment >= since:
            record.pop("_aws", None)
            out.append(record)
    out.sort(key=lambda r: r["time"])
    return out


def _current_idp_cert(target) -> str:
    """The certificate the IdP signs with now (its secret), else the deployment's output."""
    try:
        return json.loads(target.secret(target.idp_key_secret_id))["certificate"]
    except Exception:  # noqa: BLE001 - e.g. no read access to the secret: the output is next best
        return target.e["idp_cert"] if target.kind == "local" else target.o["idpCertificatePem"]


def _x5c(cert_pem: str) -> str:
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return base64.b64encode(x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(Encoding.DER)).decode()


def _pem_from_x5c(value: str) -> str:
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_der_x509_certificate(base64.b64decode(value)).public_bytes(Encoding.PEM).decode()


def _same_cert(a: str, b: str) -> bool:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(a.encode()) == x509.load_pem_x509_certificate(b.encode())
    except ValueError:
        return False


def since_arg(text: str) -> datetime:
    """``30m``, ``2h``, ``7d`` ago, or an ISO-8601 instant."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text and text[-1] in units and text[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(**{units[text[-1]]: int(text[:-1])})
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
