"""Coverage-guided fuzzing of AuthnRequests on both bindings through the IdP Lambda.

The first input byte picks the shape; the rest is:
  0: AuthnRequest XML, DEFLATEd and signed with Okta's key (HTTP-Redirect): reaches every check
  1: AuthnRequest XML, base64 in a form (HTTP-POST; signed seeds carry their XML signature)
  2: a raw HTTP-Redirect query string (the octets the signature covers)
  3: a raw HTTP-POST form body
"""

import base64
import sys
from datetime import datetime, timezone
from urllib.parse import urlencode

import _common

from devicegate.saml import handler as saml_handler
from tests.fuzz import targets


def main():
    world = _common.start_world()
    now = datetime.now(timezone.utc)
    saml_handler._idp().clock = lambda: now  # seeds stay fresh however long the run
    from tests.fuzz.test_fuzz_saml import _signed_redirect

    request_id, xml = targets.authn_xml(world, now=now)
    signed = base64.b64decode(targets.signed_post_b64(world, xml, request_id))
    params = targets.redirect_params(xml, world.idp.sp_key, relay="state")
    query = "&".join(f"{k}={v}" for k, vs in params.items() for v in vs)
    _common.write_seeds(sys.argv, [b"\x00" + xml, b"\x01" + signed, b"\x02" + query.encode(),
                                   b"\x03" + urlencode({"SAMLRequest": base64.b64encode(signed)}).encode()])

    def test_one_input(data: bytes):
        if not data:
            return
        mode, rest = data[0] % 4, data[1:]
        if mode == 0:
            event = _signed_redirect(world, rest)
        elif mode == 1:
            event = targets.post_event(world, urlencode({"SAMLRequest": base64.b64encode(rest)}).encode())
        elif mode == 2:
            event = targets.redirect_event(world, {})
            event["multiValueQueryStringParameters"] = _split(rest.decode("latin-1"))
        else:
            event = targets.post_event(world, rest)
        targets.check_saml(world, event, expect=lambda root: None, trace_memory=False)

    _common.run(test_one_input)


def _split(query: str) -> dict:
    out: dict = {}
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            out.setdefault(name, []).append(value)
    return out


if __name__ == "__main__":
    main()
