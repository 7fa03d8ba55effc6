"""Self-check of the interop harness (tests/interop/peers.py) against micromdm scepserver.

micromdm scepserver is the only SCEP server available before ours exists; these tests prove that
the harness drives the real clients correctly, so that later failures against our server are
about our server.  Observed behaviour (certmonger 0.79.17 / OpenSSL 3.0 / scep 2.1.0, Debian 12)
is asserted precisely; see the module docstring of peers.py.
"""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

try:  # tests/ and tests/interop/ are packages ...
    from tests.interop import peers
except ImportError:  # pragma: no cover - ... or pytest put tests/interop itself on sys.path
    import peers

SYSTEM_CA_BUNDLE = peers.SYSTEM_CA_BUNDLE
SYSTEM_OPENSSL_CNF = peers.SYSTEM_OPENSSL_CNF
Certmonger = peers.Certmonger
PeerTimeout = peers.PeerTimeout
HttpsReverseProxy = peers.HttpsReverseProxy
ScepServer = peers.ScepServer
missing_programs = peers.missing_programs
parse_getcert_list = peers.parse_getcert_list
scepclient = peers.scepclient

CERTMONGER_PROGRAMS = ("certmonger", "getcert", "dbus-daemon")


def require(*programs: str) -> None:
    missing = missing_programs(*programs)
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def needs(*programs: str, root_for: str | None = None):
    """skipif markers naming every missing program (and root, for the mount namespace)."""
    missing = missing_programs(*programs)
    marks = [pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")]
    if root_for:
        marks.append(pytest.mark.skipif(
            os.geteuid() != 0, reason=f"needs root for a private mount namespace ({root_for})"))

    def apply(fn):
        for mark in marks:
            fn = mark(fn)
        return fn
    return apply


def assert_gone(*pids: int | None) -> None:
    """The harness reaped what it started: no /proc entry left (not even a zombie)."""
    for pid in pids:
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} still exists"


def load_cert(path: str | Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def assert_issued_by(cert: x509.Certificate, ca_pem: str) -> None:
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    assert cert.issuer == ca.subject
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                           cert.signature_hash_algorithm)


def cn_of(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


CHALLENGE = "selfcheck-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def scep_server(tmp_path_factory):
    require("scepserver")
    with ScepServer(tmp_path_factory.mktemp("scepserver"), challenge=CHALLENGE) as srv:
        yield srv
    assert_gone(srv.pid)


# ---------------------------------------------------------------------------------------------


def test_parse_getcert_list():
    out = (
        "Number of certificates and requests being tracked: 1.\n"
        "Request ID 'req1':\n"
        "\tstatus: CA_REJECTED\n"
        "\tca-error: Transaction either is not permitted or is not supported by server.\n"
        "\tstuck: yes\n"
        "\tkey pair storage: type=FILE,location='/tmp/k.pem'\n"
        "\tsubject: \n"
        "\tissued: unknown\n"
    )
    info = parse_getcert_list(out)["req1"]
    assert info["status"] == "CA_REJECTED"
    assert info["stuck"] == "yes"
    assert info["ca-error"].startswith("Transaction either is not permitted")
    assert info["key pair storage"] == "type=FILE,location='/tmp/k.pem'"
    assert info["subject"] == ""


@pytest.mark.interop
@needs("scepserver", "scepclient")
def test_scepclient_enrolls_against_scepserver(scep_server, tmp_path):
    cn = f"host-{uuid.uuid4()}"
    res = scepclient(tmp_path, scep_server.url, CHALLENGE, cn)
    assert res.returncode == 0, res.stdout + res.stderr
    print(f"scepclient enrollment: {res.elapsed:.2f}s")
    assert res.cert_path.exists() and res.key_path.exists()
    cert = load_cert(res.cert_path)
    assert cn_of(cert) == cn
    assert_issued_by(cert, scep_server.ca_pem)

    # A wrong challenge: scepserver answers CertRep FAILURE badRequest, scepclient exits 1.
    bad = scepclient(tmp_path, scep_server.url, "wrong-" + CHALLENGE, cn)
    assert bad.cwd != res.cwd  # each run gets a fresh cwd
    assert bad.returncode == 1
    assert "badRequest" in bad.stdout + bad.stderr
    assert not bad.cert_path.exists()


@pytest.mark.interop
@needs("scepserver", *CERTMONGER_PROGRAMS)
def test_certmonger_refuses_scepserver_single_des_reply(scep_server, tmp_path):
    """Stock certmonger (OpenSSL 3 default provider only) against scepserver over HTTP.

    scepserver always encrypts the CertRep's EnvelopedData with single DES-CBC.  certmonger
    verifies the CertRep and then fails to decrypt it ("Error decrypting PKCS#7 with pkey",
    "error:0308010C:digital envelope routines::unsupported"), ends in NEED_GUIDANCE with
    stuck: yes and no ca-error.  A FAILURE CertRep is not encrypted, so a wrong challenge is
    read fine: CA_REJECTED with failInfo badRequest's text.
    """
    with Certmonger(tmp_path / "cm") as cm:
        assert cm.bind_mounts == []
        cm.add_scep_ca("scepserver", scep_server.url, scep_server.ca_pem)
        info = cm.enroll("scepserver", str(uuid.uuid4()), CHALLENGE, timeout=60)
        assert info["status"] == "NEED_GUIDANCE", info
        assert info["stuck"] == "yes"
        assert "ca-error" not in info
        assert not Path(info["cert-file"]).exists()
        log = cm.log_text()
        assert "Error decrypting PKCS#7 with pkey" in log
        assert "error:0308010C:digital envelope routines::unsupported" in log

        rejected = cm.enroll("scepserver", str(uuid.uuid4()), "wrong-" + CHALLENGE)
        assert rejected["status"] == "CA_REJECTED", rejected
        assert rejected["stuck"] == "yes"
        assert rejected["ca-error"] == (
            "Transaction either is not permitted or is not supported by server."
        )
        pids = cm.pid, cm.dbus_pid
    assert_gone(*pids)


@pytest.mark.interop
@needs("scepserver", *CERTMONGER_PROGRAMS, "unshare", "mount", root_for="openssl.cnf bind mount")
def test_certmonger_enrolls_against_scepserver_over_http(scep_server, tmp_path):
    """certmonger with OpenSSL's legacy provider (bind-mounted openssl.cnf) reaches MONITORING."""
    host_uuid = str(uuid.uuid4())
    with Certmonger(tmp_path / "cm", openssl_legacy=True) as cm:
        assert [dst for _, dst in cm.bind_mounts] == [SYSTEM_OPENSSL_CNF.resolve()]
        cm.add_scep_ca("scepserver", scep_server.url, scep_server.ca_pem)
        info = cm.enroll("scepserver", host_uuid, CHALLENGE, expect="MONITORING", timeout=60)
        assert info["stuck"] == "no"
        assert info["subject"] == f"CN={host_uuid}"
        assert info["eku"] == "id-kp-clientAuth"
        cert = load_cert(info["cert-file"])
        assert cn_of(cert) == host_uuid
        assert_issued_by(cert, scep_server.ca_pem)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
        assert cm.timings[info["id"]] < 30
        print(f"certmonger http enrollment: {cm.timings[info['id']]:.2f}s")
        pids = cm.pid, cm.dbus_pid
    assert_gone(*pids)


def _mountinfo(pid: int | str) -> str:
    return Path(f"/proc/{pid}/mountinfo").read_text()


@pytest.mark.interop
@needs("scepserver", *CERTMONGER_PROGRAMS, "unshare", "mount", root_for="CA bundle bind mount")
def test_certmonger_enrolls_over_https_through_reverse_proxy(scep_server, tmp_path):
    """HTTPS path: TLS proxy with a throw-away CA in front of scepserver.

    The TLS CA goes to getcert add-scep-ca -R (used for GetCACaps/GetCACert only) and into the
    copy of the system bundle bind-mounted over /etc/ssl/certs/ca-certificates.crt inside
    certmonger's private mount namespace (used for PKIOperation).  The bind mounts are visible
    to certmonger only, never to this process.
    """
    host_uuid = str(uuid.uuid4())
    with HttpsReverseProxy(scep_server.url, tmp_path / "proxy") as proxy:
        url = proxy.url_for("/scep")
        with Certmonger(tmp_path / "cm", tls_ca_pem=proxy.tls.ca_pem, openssl_legacy=True) as cm:
            assert SYSTEM_CA_BUNDLE.resolve() in [dst for _, dst in cm.bind_mounts]
            mine, theirs = _mountinfo("self"), _mountinfo(cm.pid)
            assert str(SYSTEM_CA_BUNDLE.resolve()) in theirs
            assert str(SYSTEM_CA_BUNDLE.resolve()) not in mine
            assert proxy.tls.ca_pem not in SYSTEM_CA_BUNDLE.read_text()

            cm.add_scep_ca("tls", url, scep_server.ca_pem, tls_ca_pem=proxy.tls.ca_pem)
            info = cm.enroll("tls", host_uuid, CHALLENGE, expect="MONITORING", timeout=60)
            assert info["subject"] == f"CN={host_uuid}"
            assert_issued_by(load_cert(info["cert-file"]), scep_server.ca_pem)
            print(f"certmonger https enrollment: {cm.timings[info['id']]:.2f}s")
            pids = cm.pid, cm.dbus_pid
        assert_gone(*pids)
        ops = [(r.method, r.path.split("&")[0], r.status) for r in proxy.requests]
        # certmonger sends PKIOperation as GET even though POSTPKIOperation is advertised.
        assert ("GET", "/scep?operation=PKIOperation", 200) in ops, ops
        assert proxy.errors == []

        # The Go client trusts the proxy via SSL_CERT_FILE.
        if not missing_programs("scepclient"):
            res = scepclient(tmp_path / "sc", url, CHALLENGE, host_uuid,
                             tls_ca_pem=proxy.tls.ca_pem)
            assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.interop
@needs("scepserver", *CERTMONGER_PROGRAMS, "unshare", "mount", root_for="openssl.cnf bind mount")
def test_certmonger_https_without_bundle_mount_is_unreachable(scep_server, tmp_path):
    """Negative control for the mount trick: with the TLS CA given only to -R, certmonger fetches
    the CA data but its PKIOperation request fails TLS verification: CA_UNREACHABLE, libcurl
    error 60."""
    with HttpsReverseProxy(scep_server.url, tmp_path / "proxy") as proxy:
        url = proxy.url_for("/scep")
        with Certmonger(tmp_path / "cm", openssl_legacy=True) as cm:  # no tls_ca_pem
            cm.add_scep_ca("tls", url, scep_server.ca_pem, tls_ca_pem=proxy.tls.ca_pem)
            info = cm.enroll("tls", str(uuid.uuid4()), CHALLENGE, timeout=60)
            assert info["status"] == "CA_UNREACHABLE", info
            assert info["ca-error"] == (
                f"Error 60 connecting to {url}: SSL peer certificate or SSH remote key was not OK."
            )
            pids = cm.pid, cm.dbus_pid
        assert_gone(*pids)
        ops = [r.path.split("&")[0] for r in proxy.requests]
        assert "/scep?operation=GetCACert" in ops  # the -R CA worked for the first requests
        assert "/scep?operation=PKIOperation" not in ops
        assert any("UNKNOWN_CA" in e for e in proxy.errors), proxy.errors


@pytest.mark.interop
@needs(*CERTMONGER_PROGRAMS)
def test_certmonger_request_before_ca_data_is_ca_unconfigured(tmp_path):
    """Why add_scep_ca() waits: until certmonger has fetched GetCACert it has no RA/encryption
    certificate, and a request made meanwhile ends stuck in CA_UNCONFIGURED.  Uses a listener
    that never answers, which also exercises the harness's timeout path."""
    ca_pem = peers.make_tls_material(tmp_path / "any").ca_pem  # any certificate will do for -N
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        url = f"http://127.0.0.1:{blackhole.getsockname()[1]}/scep"
        with Certmonger(tmp_path / "cm") as cm:
            with pytest.raises(PeerTimeout, match="did not fetch GetCACaps/GetCACert"):
                cm.add_scep_ca("silent", url, ca_pem, timeout=1.0)
            rid = cm.request("silent", str(uuid.uuid4()), CHALLENGE,
                             tmp_path / "k.pem", tmp_path / "c.pem")
            info = cm.wait(rid, timeout=30)
            assert info["status"] == "CA_UNCONFIGURED", info
            assert info["stuck"] == "yes"
            assert info["ca-error"] == "No RA certificate (-r) given, and no default known."
            pids = cm.pid, cm.dbus_pid
        assert_gone(*pids)
