"""python3-lasso as the IdP, timed by itself. Run with the system Python (/usr/bin/python3):

    /usr/bin/python3 bench/lasso_idp.py CONFIG.json

CONFIG holds the IdP metadata/key/cert paths, the SP metadata path and a list of signed
HTTP-Redirect AuthnRequest query strings (made by the caller with the SP key, as Okta would).
For each query, timed: process the request (parse + verify the redirect signature), validate
it, build the Assertion for the e-mail NameID, and build the signed POST Response. Prints JSON:
per-login times (ms) and the number of ds:Signature elements in the last Response.
"""

import base64
import json
import re
import sys
import time
from datetime import datetime, timedelta, timezone

import lasso


def main(path):
    cfg = json.load(open(path))
    server = lasso.Server(cfg["idp_metadata"], cfg["idp_key"], None, cfg["idp_cert"])
    server.signatureMethod = lasso.SIGNATURE_METHOD_RSA_SHA256
    server.addProvider(lasso.PROVIDER_ROLE_SP, cfg["sp_metadata"])
    walls, cpus = [], []
    last = None
    for query in cfg["queries"]:
        w, c = time.perf_counter(), time.process_time()
        login = lasso.Login(server)
        login.setSignatureHint(lasso.PROFILE_SIGNATURE_HINT_FORCE)
        login.processAuthnRequestMsg(query)
        login.validateRequestMsg(True, True)
        name_id = lasso.Saml2NameID()
        name_id.content = cfg["user"]
        name_id.format = lasso.SAML2_NAME_IDENTIFIER_FORMAT_EMAIL
        login.nameIdentifier = name_id
        now = datetime.now(timezone.utc)
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        login.buildAssertion(lasso.SAML2_AUTHN_CONTEXT_X509, now.strftime(fmt), None,
                             (now - timedelta(seconds=60)).strftime(fmt), (now + timedelta(minutes=5)).strftime(fmt))
        login.buildAuthnResponseMsg()
        body = login.msgBody
        walls.append((time.perf_counter() - w) * 1000)
        cpus.append((time.process_time() - c) * 1000)
        last = body
    xml = base64.b64decode(last).decode("utf-8", "replace")
    print(json.dumps({
        "wall_ms": walls, "cpu_ms": cpus,
        "signatures_in_response": len(re.findall(r"<(?:[A-Za-z0-9_]+:)?Signature[\s>]", xml)),
        "assertion_signed": "Assertion" in xml and xml.find("<ds:Signature", xml.find("Assertion")) > 0,
        "response_bytes": len(xml),
        "sample_response": xml if cfg.get("keep_sample") else None,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
