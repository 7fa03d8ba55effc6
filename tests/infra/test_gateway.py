"""The two load balancers, as the mocked `pulumi up` declares them."""

import hashlib

from cryptography import x509

from devicegate.routes import ROUTES
from infra.gateway import TLS_POLICY

LISTENER = "aws:lb/listener:Listener"
RULE = "aws:lb/listenerRule:ListenerRule"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"


def https_listeners(d):
    return {r.inputs["tags"]["devicegate:listener"]: r for r in d.of_type(LISTENER) if r.inputs["protocol"] == "HTTPS"}


def http_listeners(d):
    return {r.inputs["tags"]["devicegate:listener"]: r for r in d.of_type(LISTENER) if r.inputs["protocol"] == "HTTP"}


def test_mtls_verify_with_our_trust_store_on_the_device_listener_only(deployment):
    d = deployment
    trust_store = d.one("aws:lb/trustStore:TrustStore")
    listeners = https_listeners(d)
    assert set(listeners) == {"public", "device"}
    mutual = listeners["device"].inputs["mutualAuthentication"]
    assert mutual["mode"] == "verify"
    assert mutual["trustStoreArn"] == trust_store.outputs["arn"]
    assert mutual["ignoreClientCertificateExpiry"] is False
    assert mutual["advertiseTrustStoreCaNames"] == "on"
    assert "mutualAuthentication" not in listeners["public"].inputs
    # Only one listener in the whole stack does mTLS.
    assert [r.name for r in d.of_type(LISTENER) if r.inputs.get("mutualAuthentication")] == ["device-https"]


def test_trust_store_pins_the_ca_bundle_version(deployment):
    d = deployment
    trust_store = d.one("aws:lb/trustStore:TrustStore")
    bundle = d.one("aws:s3/bucketObjectv2:BucketObjectv2", "ca-bundle")
    bucket = d.one("aws:s3/bucket:Bucket")
    assert trust_store.inputs["caCertificatesBundleS3Bucket"] == bucket.outputs["bucket"]
    assert trust_store.inputs["caCertificatesBundleS3Key"] == bundle.inputs["key"] == "truststore/ca-bundle.pem"
    assert trust_store.inputs["caCertificatesBundleS3ObjectVersion"] == bundle.outputs["versionId"]
    assert bundle.inputs["content"] == d.outputs["caCertificatePem"]
    x509.load_pem_x509_certificate(bundle.inputs["content"].encode())
    assert len(trust_store.inputs["name"]) <= 32
    # The trust store is only created once the bucket policy lets ELB read the bundle.
    assert d.one("aws:s3/bucketPolicy:BucketPolicy").urn in trust_store.dependencies
    # Versioned before the upload, so the bundle has a version id to pin.
    assert d.one("aws:s3/bucketVersioning:BucketVersioning").urn in bundle.dependencies


def test_the_revocation_list_is_published_by_the_crl_function_at_deployment(deployment):
    """devicegate.crl owns the trust store's revocation entries (it replaces them all), so the
    deployment invokes it rather than declaring an entry of its own that it would delete."""
    d = deployment
    assert not d.of_type("aws:lb/trustStoreRevocation:TrustStoreRevocation")
    invocation = d.one("aws:lambda/invocation:Invocation")
    crl = d.one("aws:lambda/function:Function", "crl")
    assert invocation.inputs["functionName"] == crl.inputs["name"]
    assert invocation.inputs.get("lifecycleScope", "CREATE_ONLY") == "CREATE_ONLY"
    # A new CA or trust store publishes again (a trigger change replaces the invocation).
    ca_pem = d.outputs["caCertificatePem"]
    assert invocation.inputs["triggers"] == {"ca": hashlib.sha256(ca_pem.encode()).hexdigest(),
                                             "trust_store": d.one("aws:lb/trustStore:TrustStore").outputs["arn"]}
    assert d.depends_on(invocation, crl)
    assert d.depends_on(invocation, d.one("aws:iam/rolePolicy:RolePolicy", "crl"))
    assert d.depends_on(invocation, d.one("aws:lb/trustStore:TrustStore"))


def test_routes_per_load_balancer_are_exactly_routes_py(deployment):
    d = deployment
    listeners = https_listeners(d)
    groups = {r.outputs["arn"]: r for r in d.of_type(TARGET_GROUP)}
    functions = {r.outputs["arn"]: r.inputs["name"] for r in d.of_type("aws:lambda/function:Function")}
    attachments = {r.inputs["targetGroupArn"]: r.inputs["targetId"]
                   for r in d.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment")}
    hosts = {"public": "devicegate.example.com", "device": "okta.devicegate.example.com"}
    by_arn = {r.outputs["arn"]: name for name, r in listeners.items()}

    declared = set()
    for rule in d.of_type(RULE):
        listener = by_arn[rule.inputs["listenerArn"]]
        conditions = {k: v for c in rule.inputs["conditions"] for k, v in c.items()}
        assert conditions["hostHeader"]["values"] == [hosts[listener]]
        (path,) = conditions["pathPattern"]["values"]
        (action,) = rule.inputs["actions"]
        assert action["type"] == "forward"
        function_name = functions[attachments[action["targetGroupArn"]]]
        assert groups[action["targetGroupArn"]].inputs["tags"]["devicegate:listener"] == listener
        declared.add((listener, path, function_name.rsplit("-", 1)[1]))
    assert declared == {(r.listener, r.path, r.function) for r in ROUTES}
    device_paths = {path for listener, path, _ in declared if listener == "device"}
    public_paths = {path for listener, path, _ in declared if listener == "public"}
    assert {"/saml/sso", "/saml/recheck"} <= device_paths
    assert not {"/saml/sso", "/saml/recheck"} & public_paths
    # Priorities are unique per listener.
    for listener in listeners.values():
        priorities = [r.inputs["priority"] for r in d.of_type(RULE) if r.inputs["listenerArn"] == listener.outputs["arn"]]
        assert len(priorities) == len(set(priorities))


def test_default_404_on_both_and_http_only_redirects(deployment):
    d = deployment
    for listener in https_listeners(d).values():
        (action,) = listener.inputs["defaultActions"]
        assert action["type"] == "fixed-response"
        assert action["fixedResponse"]["statusCode"] == "404"
        assert listener.inputs["sslPolicy"] == TLS_POLICY
        assert listener.inputs["port"] == 443
        assert listener.inputs["routingHttpResponseStrictTransportSecurityHeaderValue"].startswith("max-age=")
        assert listener.inputs["routingHttpResponseXContentTypeOptionsHeaderValue"] == "nosniff"
        assert "routingHttpResponseContentSecurityPolicyHeaderValue" not in listener.inputs  # pages set their own
    http = http_listeners(d)
    assert set(http) == {"public", "device"}
    for listener in http.values():
        (action,) = listener.inputs["defaultActions"]
        assert action["type"] == "redirect"
        assert action["redirect"] == {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}


def test_load_balancers_drop_invalid_headers_and_are_internet_facing(deployment):
    albs = deployment.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert len(albs) == 2
    for alb in albs:
        assert alb.inputs["dropInvalidHeaderFields"] is True
        assert alb.inputs["internal"] is False
        assert alb.inputs["loadBalancerType"] == "application"
        assert len(alb.inputs["subnets"]) == 2
    group = deployment.one("aws:ec2/securityGroup:SecurityGroup")
    assert sorted(rule["fromPort"] for rule in group.inputs["ingress"]) == [80, 443]
    assert group.inputs.get("egress", []) == []


def test_lambda_target_groups_and_elb_invoke_permissions(deployment):
    d = deployment
    groups = d.of_type(TARGET_GROUP)
    assert len(groups) == len({(r.listener, r.function) for r in ROUTES})
    for group in groups:
        assert group.inputs["targetType"] == "lambda"
        assert group.inputs["lambdaMultiValueHeadersEnabled"] is True
        assert group.inputs["healthCheck"]["enabled"] is False
    elb_permissions = [p for p in d.of_type("aws:lambda/permission:Permission")
                       if p.inputs["principal"] == "elasticloadbalancing.amazonaws.com"]
    assert sorted(p.inputs["sourceArn"] for p in elb_permissions) == sorted(g.outputs["arn"] for g in groups)
    for permission in elb_permissions:
        assert permission.inputs["action"] == "lambda:InvokeFunction"
        assert permission.inputs["sourceAccount"] == "123456789012"
    # Each attachment waits for its permission (ELB checks it when registering the target).
    permission_urns = {p.urn for p in elb_permissions}
    for attachment in d.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment"):
        assert permission_urns & set(attachment.dependencies)


def test_one_certificate_for_both_hosts_validated_in_the_zone_and_alias_records(deployment):
    d = deployment
    cert = d.one("aws:acm/certificate:Certificate")
    assert cert.inputs["domainName"] == "devicegate.example.com"
    assert cert.inputs["subjectAlternativeNames"] == ["okta.devicegate.example.com"]
    assert cert.inputs["validationMethod"] == "DNS"
    records = {r.name: r for r in d.of_type("aws:route53/record:Record")}
    options = {o["domainName"]: o for o in cert.outputs["domainValidationOptions"]}
    for listener, host in (("public", "devicegate.example.com"), ("device", "okta.devicegate.example.com")):
        validation = records[f"tls-validation-{listener}"]
        assert validation.inputs["zoneId"] == "Z0123456789ABCDEFGHIJ"
        assert validation.inputs["name"] == options[host]["resourceRecordName"]
        assert validation.inputs["records"] == [options[host]["resourceRecordValue"]]
        alias = records[f"{listener}-alias"]
        alb = d.one("aws:lb/loadBalancer:LoadBalancer", listener)
        assert alias.inputs["name"] == host and alias.inputs["type"] == "A"
        assert alias.inputs["aliases"][0]["name"] == alb.outputs["dnsName"]
        assert alias.inputs["aliases"][0]["zoneId"] == alb.outputs["zoneId"]
    validation = d.one("aws:acm/certificateValidation:CertificateValidation")
    assert sorted(validation.inputs["validationRecordFqdns"]) == sorted(
        records[f"tls-validation-{n}"].outputs["fqdn"] for n in ("public", "device"))
    for listener in https_listeners(d).values():
        assert listener.inputs["certificateArn"] == cert.outputs["arn"]
        assert validation.urn in listener.dependencies  # served only once validated
