"""The user-scope .mobileconfig: Apple's key names and types, stable UUIDs, the pieces point at
each other, and hostile input stays data."""

import hashlib
import json
import plistlib
import re
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from devicegate.profile import ProfileError, build_profile, profile_summary
from tests.unit.x509_fixtures import issue, make_ca

CHALLENGE = "chal-7f3a9c2e-only-in-scep"
DEVICE_URL = "https://okta.example.com"

# Apple's schema for each payload (github.com/apple/device-management, mdm/profiles/; published at
# developer.apple.com/documentation/devicemanagement/...). Common keys: CommonPayloadKeys.yaml.
COMMON_REQUIRED = {"PayloadType": str, "PayloadIdentifier": str, "PayloadUUID": str, "PayloadVersion": int}
COMMON_OPTIONAL = {"PayloadDisplayName": str, "PayloadDescription": str, "PayloadOrganization": str}
# TopLevel.yaml
TOP_LEVEL_KEYS = {
    "PayloadContent", "PayloadDescription", "PayloadDisplayName", "PayloadIdentifier", "PayloadOrganization",
    "PayloadUUID", "PayloadRemovalDisallowed", "PayloadType", "PayloadVersion", "PayloadScope", "RemovalDate",
    "DurationUntilRemoval", "PayloadExpirationDate", "TargetDeviceType", "ConsentText", "IsEncrypted",
    "EncryptedPayloadContent", "HasRemovalPasscode",
}
# com.apple.security.scep.yaml, PayloadContent subkeys (developer.apple.com/documentation/
# devicemanagement/scep/payloadcontent-data.dictionary). Note the spaces in "Key Type" and
# "Key Usage" and the lower-case s in "Keysize": Apple's spelling, not a typo here.
SCEP_CONTENT_KEYS = {
    "URL": str, "Name": str, "Subject": list, "Challenge": str, "Keysize": int, "Key Type": str,
    "Key Usage": int, "CAFingerprint": bytes, "Retries": int, "RetryDelay": int, "SubjectAltName": dict,
    "KeyIsExtractable": bool, "AllowAllAppsAccess": bool,
}
# ... SubjectAltName subkeys (scep/payloadcontent-data.dictionary/subjectaltname-data.dictionary).
SCEP_SAN_KEYS = {"rfc822Name", "dNSName", "uniformResourceIdentifier", "ntPrincipalName"}
# com.apple.security.root.yaml, com.apple.security.identitypreference.yaml,
# com.apple.ManagedClient.preferences.yaml: keys beyond the common ones.
PAYLOAD_KEYS = {
    "com.apple.security.root": {"PayloadContent": bytes, "PayloadCertificateFileName": str},
    "com.apple.security.scep": {"PayloadContent": dict},
    "com.apple.security.identitypreference": {"Name": str, "PayloadCertificateUUID": str},
    "com.apple.ManagedClient.preferences": {"PayloadContent": dict},
}


@pytest.fixture
def ca_pem(scep_ca):
    return scep_ca[0].public_bytes(Encoding.PEM).decode()


@pytest.fixture
def profile_bytes(ca_pem):
    return build_profile(scep_url="https://example.com/scep", challenge=CHALLENGE, ca_cert_pem=ca_pem,
                         device_url=DEVICE_URL)


@pytest.fixture
def profile(profile_bytes):
    return plistlib.loads(profile_bytes)


def by_type(profile, payload_type):
    [payload] = [p for p in profile["PayloadContent"] if p["PayloadType"] == payload_type]
    return payload


# ------------------------------------------------------------------------------ structure


def test_top_level_is_a_user_scope_configuration(profile, profile_bytes):
    assert profile_bytes.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist')
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadScope"] == "User"
    assert profile["PayloadVersion"] == 1 and type(profile["PayloadVersion"]) is int
    assert profile["PayloadIdentifier"] == "com.devicegate.conditional-access"
    assert profile["PayloadOrganization"] == "devicegate"
    for key in ("PayloadDisplayName", "PayloadDescription"):
        assert isinstance(profile[key], str) and profile[key]
    assert set(profile) <= TOP_LEVEL_KEYS
    assert [p["PayloadType"] for p in profile["PayloadContent"]] == [
        "com.apple.security.root", "com.apple.security.scep",
        "com.apple.security.identitypreference", "com.apple.ManagedClient.preferences",
    ]


def test_every_payload_has_the_required_keys_with_apples_types(profile):
    for payload in profile["PayloadContent"]:
        allowed = {**COMMON_REQUIRED, **COMMON_OPTIONAL, **PAYLOAD_KEYS[payload["PayloadType"]]}
        assert set(payload) <= set(allowed), set(payload) - set(allowed)
        for key, kind in {**COMMON_REQUIRED, **COMMON_OPTIONAL, **PAYLOAD_KEYS[payload["PayloadType"]]}.items():
            if key == "PayloadCertificateFileName" and key not in payload:
                continue
            assert type(payload[key]) is kind, (payload["PayloadType"], key, type(payload[key]))
        assert payload["PayloadVersion"] == 1
        assert payload["PayloadIdentifier"].startswith(profile["PayloadIdentifier"] + ".")
    identifiers = [p["PayloadIdentifier"] for p in profile["PayloadContent"]]
    assert len(set(identifiers)) == len(identifiers)


def test_uuids_are_unique_within_the_profile_and_well_formed(profile):
    uuids = [profile["PayloadUUID"], *(p["PayloadUUID"] for p in profile["PayloadContent"])]
    assert len(set(uuids)) == len(uuids) == 5
    for value in uuids:
        assert value == str(uuid.UUID(value)).upper()
        assert uuid.UUID(value).version == 5


def test_uuids_are_stable_across_calls_and_inputs_that_may_change(ca_pem):
    def uuids(**overrides):
        args = dict(scep_url="https://example.com/scep", challenge=CHALLENGE, ca_cert_pem=ca_pem, device_url=DEVICE_URL)
        parsed = plistlib.loads(build_profile(**{**args, **overrides}))
        return [parsed["PayloadUUID"], *(p["PayloadUUID"] for p in parsed["PayloadContent"])]

    first = uuids()
    assert uuids() == first
    # A rotated challenge, a renewed CA or a trailing slash is the same profile to Fleet and macOS.
    _, other_ca = make_ca("renewed SCEP CA")
    assert uuids(challenge="another-challenge") == first
    assert uuids(ca_cert_pem=other_ca.public_bytes(Encoding.PEM).decode()) == first
    assert uuids(device_url=DEVICE_URL + "/") == first
    assert uuids(device_url="https://OKTA.example.com:443/saml/sso") == first
    # Another device host or another identifier is another profile.
    assert set(uuids(device_url="https://okta.other.example")).isdisjoint(first)
    assert set(uuids(identifier="com.example.ca")).isdisjoint(first)


def test_the_same_inputs_give_the_same_bytes(ca_pem, profile_bytes):
    again = build_profile(scep_url="https://example.com/scep", challenge=CHALLENGE, ca_cert_pem=ca_pem,
                          device_url=DEVICE_URL)
    assert again == profile_bytes


# ------------------------------------------------------------------------------ payloads


def test_scep_payload_uses_exactly_apples_key_names(profile, scep_ca):
    content = by_type(profile, "com.apple.security.scep")["PayloadContent"]
    assert set(content) <= set(SCEP_CONTENT_KEYS), f"not Apple's SCEP keys: {set(content) - set(SCEP_CONTENT_KEYS)}"
    for key, value in content.items():
        assert type(value) is SCEP_CONTENT_KEYS[key], (key, type(value))
    assert content["URL"] == "https://example.com/scep"
    assert content["Challenge"] == CHALLENGE
    assert content["Subject"] == [[["CN", "devicegate device"]]]
    assert content["Key Type"] == "RSA"
    assert content["Keysize"] == 2048 and type(content["Keysize"]) is int
    assert content["Key Usage"] == 5 and type(content["Key Usage"]) is int  # signing (1) + encryption (4)
    assert content["Retries"] == 3 and content["RetryDelay"] == 10
    assert content["AllowAllAppsAccess"] is True
    assert content["KeyIsExtractable"] is False
    assert set(content["SubjectAltName"]) <= SCEP_SAN_KEYS
    assert content["SubjectAltName"] == {"uniformResourceIdentifier": "urn:device:apple:uuid:%HardwareUUID%"}
    # Apple's SCEP client knows MD5 and SHA-1 fingerprints only (the length picks the hash).
    ca_der = scep_ca[0].public_bytes(Encoding.DER)
    assert content["CAFingerprint"] == hashlib.sha1(ca_der).digest()
    assert len(content["CAFingerprint"]) == 20


def test_scep_keys_in_the_xml_are_spelled_as_apple_spells_them(profile_bytes):
    keys = set(re.findall(rb"<key>([^<]*)</key>", profile_bytes))
    for misspelling in (b"KeySize", b"KeyType", b"KeyUsage", b"Key Size", b"CAFingerPrint", b"SubjectAltNames",
                        b"UniformResourceIdentifier", b"RetryDelays", b"Challange"):
        assert misspelling not in keys
    assert {b"Key Type", b"Key Usage", b"Keysize", b"CAFingerprint", b"uniformResourceIdentifier"} <= keys


def test_the_ca_payload_holds_the_ca_der(profile, scep_ca):
    payload = by_type(profile, "com.apple.security.root")
    assert payload["PayloadContent"] == scep_ca[0].public_bytes(Encoding.DER)
    assert x509.load_der_x509_certificate(payload["PayloadContent"]) == scep_ca[0]


def test_the_identity_preference_points_at_the_scep_payload(profile):
    scep = by_type(profile, "com.apple.security.scep")
    preference = by_type(profile, "com.apple.security.identitypreference")
    assert preference["PayloadCertificateUUID"] == scep["PayloadUUID"]
    # macOS matches the request URL's parents down to "https://host/": the slash matters.
    assert preference["Name"] == "https://okta.example.com/"


def test_chrome_auto_selects_the_certificate_for_the_device_origin_by_issuer(profile, scep_ca):
    payload = by_type(profile, "com.apple.ManagedClient.preferences")
    assert set(payload["PayloadContent"]) == {"com.google.Chrome"}
    [forced] = payload["PayloadContent"]["com.google.Chrome"]["Forced"]
    [rule] = forced["mcx_preference_settings"]["AutoSelectCertificateForUrls"]
    assert isinstance(rule, str), "Chrome wants stringified JSON"
    ca_cn = scep_ca[0].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert json.loads(rule) == {"pattern": "https://okta.example.com", "filter": {"ISSUER": {"CN": ca_cn}}}


def test_a_non_default_port_stays_in_the_origin(ca_pem):
    parsed = plistlib.loads(build_profile(scep_url="https://127.0.0.1:8443/scep", challenge="c", ca_cert_pem=ca_pem,
                                          device_url="https://127.0.0.1:9443/saml/sso"))
    assert by_type(parsed, "com.apple.security.identitypreference")["Name"] == "https://127.0.0.1:9443/"
    chrome = by_type(parsed, "com.apple.ManagedClient.preferences")["PayloadContent"]["com.google.Chrome"]
    assert json.loads(chrome["Forced"][0]["mcx_preference_settings"]["AutoSelectCertificateForUrls"][0])["pattern"] \
        == "https://127.0.0.1:9443"


def test_the_challenge_is_only_in_the_scep_payload(profile, profile_bytes):
    assert profile_bytes.count(CHALLENGE.encode()) == 1
    for payload in profile["PayloadContent"]:
        if payload["PayloadType"] != "com.apple.security.scep":
            assert CHALLENGE.encode() not in plistlib.dumps(payload)
    top = {k: v for k, v in profile.items() if k != "PayloadContent"}
    assert CHALLENGE.encode() not in plistlib.dumps(top)
    scep = by_type(profile, "com.apple.security.scep")
    assert CHALLENGE.encode() not in plistlib.dumps({k: v for k, v in scep.items() if k != "PayloadContent"})


def test_xml_special_characters_are_escaped_and_round_trip(ca_pem):
    challenge = """a<b>&c"d'e]]>f"""
    organization = "Smith & Sons <IT>"
    subject_cn = "dev & <test>"
    data = build_profile(scep_url="https://example.com/scep?x=1&y=<2>", challenge=challenge, ca_cert_pem=ca_pem,
                         device_url=DEVICE_URL, organization=organization, subject_cn=subject_cn)
    assert b"a&lt;b&gt;&amp;c" in data and b"]]&gt;f" in data
    assert b"Smith &amp; Sons &lt;IT&gt;" in data
    assert b"<IT>" not in data and b"<test>" not in data
    parsed = plistlib.loads(data)
    content = by_type(parsed, "com.apple.security.scep")["PayloadContent"]
    assert content["Challenge"] == challenge
    assert content["URL"] == "https://example.com/scep?x=1&y=<2>"
    assert content["Subject"] == [[["CN", subject_cn]]]
    assert parsed["PayloadOrganization"] == organization
    assert all(p["PayloadOrganization"] == organization for p in parsed["PayloadContent"])


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scep_url": "http://example.com/scep"}, "scep_url must be an https:// URL"),
        ({"device_url": "okta.example.com"}, "device_url must be an https:// URL"),
        ({"device_url": "https://user:pw@okta.example.com"}, "credentials"),
        ({"device_url": "https://okta.example.com:99999"}, "not a URL"),
        ({"challenge": ""}, "challenge must be a non-empty string"),
        ({"challenge": " padded "}, "white space"),
        ({"challenge": "line\nbreak"}, "control characters"),
        ({"challenge": "nul\x00"}, "control characters"),
        ({"subject_cn": "x" * 65}, "longer than 64"),
        ({"identifier": "not reverse dns"}, "reverse-DNS"),
        ({"ca_cert_pem": "not a certificate"}, "PEM"),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(ca_pem, overrides, message):
    args = dict(scep_url="https://example.com/scep", challenge=CHALLENGE, ca_cert_pem=ca_pem, device_url=DEVICE_URL)
    with pytest.raises(ProfileError, match=message):
        build_profile(**{**args, **overrides})


def test_the_ca_must_be_one_ca_certificate(ca_pem):
    ca_key, ca = make_ca("some CA")
    _, leaf = issue(ca_key, ca, "5F0C3E8A-1B2C-4D5E-8F90-A1B2C3D4E5F6")
    args = dict(scep_url="https://example.com/scep", challenge=CHALLENGE, device_url=DEVICE_URL)
    with pytest.raises(ProfileError, match="not a CA certificate"):
        build_profile(ca_cert_pem=leaf.public_bytes(Encoding.PEM).decode(), **args)
    with pytest.raises(ProfileError, match="exactly one certificate"):
        build_profile(ca_cert_pem=ca_pem + ca.public_bytes(Encoding.PEM).decode(), **args)


# ------------------------------------------------------------------------------ summary


def test_the_summary_describes_the_profile_without_the_challenge(profile_bytes, scep_ca):
    summary = profile_summary(profile_bytes)
    assert CHALLENGE not in json.dumps(summary)
    assert summary["scope"] == "User" and summary["identifier"] == "com.devicegate.conditional-access"
    assert len(summary["payloads"]) == 4
    assert summary["scep"]["challenge_set"] is True
    assert summary["scep"]["ca_fingerprint_sha1"] == hashlib.sha1(scep_ca[0].public_bytes(Encoding.DER)).hexdigest()
    assert summary["ca"]["sha256"] == hashlib.sha256(scep_ca[0].public_bytes(Encoding.DER)).hexdigest()
    assert summary["identity_preference"]["certificate_uuid"] == summary["payloads"][1]["uuid"]
    assert summary["chrome_auto_select"][0]["pattern"] == "https://okta.example.com"


def test_the_summary_refuses_what_is_not_a_profile():
    with pytest.raises(ProfileError, match="not an XML property list"):
        profile_summary(b"<html>")
    with pytest.raises(ProfileError, match="not a configuration profile"):
        profile_summary(plistlib.dumps({"PayloadType": "com.apple.security.scep"}))
