"""DynamoDB API calls per login, per enrollment and per sync (nothing changed / one host changed),
counted at botocore's single entry point for API calls."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from . import common


def per_login_and_enrollment(world: common.World, pool: common.KeyPool) -> dict:
    from devicegate.saml import handler as saml_handler
    from devicegate.scep import handler as scep_handler

    from . import scep_bench, sso_bench

    host, cert = sso_bench.enrolled_device(world)
    out = {}
    with common.CallCounter() as counter:
        saml_handler.lambda_handler(sso_bench.sso_event(sso_bench.redirect_query(world)[1], cert), None)  # warm
        scep_handler.lambda_handler(scep_bench._event(scep_bench.build_request(
            world.ca_cert, pool.next(), world.CHALLENGE, str(uuid.uuid4()).upper())), None)
        counter.reset()
        result = saml_handler.lambda_handler(sso_bench.sso_event(sso_bench.redirect_query(world)[1], cert), None)
        assert result["statusCode"] == 200
        out["login_allowed"] = counter.dynamodb()
        out["login_other_aws_calls"] = counter.other_services()
        counter.reset()
        scep_handler.lambda_handler(scep_bench._event(scep_bench.build_request(
            world.ca_cert, pool.next(), world.CHALLENGE, str(uuid.uuid4()).upper())), None)
        out["enrollment"] = counter.dynamodb()
        out["enrollment_other_aws_calls"] = counter.other_services()
    return out


def per_sync(world: common.World, hosts: int = 20) -> dict:
    """The sync Lambda's handler against a simulated Fleet of `hosts` hosts (HTTPS, in this process)."""
    import os

    import boto3

    from devicegate import settings
    from devicegate.compliance import sync
    from devicegate.local import pki
    from devicegate.local.fleet_sim import SimulatedFleet

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        d = Path(tmp)
        ca_key = pki.new_key()
        ca = pki.self_signed_ca("bench TLS CA", ca_key)
        key = pki.new_key()
        (d / "ca.pem").write_text(pki.pem_cert(ca))
        (d / "server.pem").write_text(pki.pem_cert(pki.server_certificate(ca, ca_key, key, ["127.0.0.1"])))
        (d / "server.key").write_text(pki.pem_key(key))
        token = uuid.uuid4().hex
        fleet = SimulatedFleet(d / "state.json", token=token, certfile=str(d / "server.pem"),
                               keyfile=str(d / "server.key")).start()
        try:
            uuids = [str(uuid.uuid4()).upper() for _ in range(hosts)]
            for i, h in enumerate(uuids):
                fleet.add_host(h, f"mac-{i}", f"user{i}@example.com")
                fleet.set_policy(h, "FileVault enabled", "pass", critical=True)
                fleet.set_policy(h, "Firewall on", "pass")
            secret = f"fleet-token-{uuid.uuid4().hex[:6]}"
            boto3.client("secretsmanager", endpoint_url=world.moto.endpoint, region_name="us-east-1").create_secret(
                Name=secret, SecretString=token)
            saved = dict(os.environ)
            os.environ.update({"DEVICEGATE_FLEET_URL": fleet.url, "DEVICEGATE_FLEET_TOKEN_SECRET": secret,
                               "DEVICEGATE_FLEET_CA_BUNDLE": str(d / "ca.pem")})
            settings.load_fleet.cache_clear()
            try:
                with common.CallCounter() as counter:
                    sync.lambda_handler({"source": "bench"}, None)
                    first = counter.dynamodb()
                    counter.reset()
                    sync.lambda_handler({"source": "bench"}, None)
                    unchanged = counter.dynamodb()
                    fleet.set_policy(uuids[3], "Firewall on", "fail")
                    counter.reset()
                    sync.lambda_handler({"source": "bench"}, None)
                    one = counter.dynamodb()
            finally:
                os.environ.clear()
                os.environ.update(saved)
                settings.load_fleet.cache_clear()
        finally:
            fleet.stop()
    return {"hosts": hosts, "first_sync": first, "nothing_changed": unchanged, "one_host_changed": one}
