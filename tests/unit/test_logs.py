"""devicegate.logs: a module's logger is logging's logger of that name, reached on first use; and what the
handlers load at import (not logging, threading or settings) and what their first request loads."""

from __future__ import annotations

import logging
import subprocess
import sys

from devicegate import logs


def test_stand_in_logs_to_the_named_logger(caplog):
    log = logs.getLogger("devicegate.test_logs")
    with caplog.at_level(logging.INFO, logger="devicegate.test_logs"):
        log.info("hello %s", "there")
        log.warning("careful")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("devicegate.test_logs", "INFO", "hello there"), ("devicegate.test_logs", "WARNING", "careful")]
    assert log.isEnabledFor(logging.CRITICAL) and log.name == "devicegate.test_logs"


def test_handlers_import_without_logging_or_threading():
    """What the stand-in and _thread.allocate_lock are for: a bare interpreter importing a
    handler loads neither (the Lambda runtime has them loaded already)."""
    code = ("import sys; import devicegate.scep.handler, devicegate.saml.handler, devicegate.crl; "
            "print(sorted({'logging', 'threading'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_settings_are_loaded_by_the_first_request_not_the_import():
    """The handlers import settings in their set-up (and for ConfigError): a fresh interpreter
    that imports them has not loaded it, and a misconfigured first request still gets the
    misconfiguration answer."""
    code = ("import os, sys\n"
            "for k in [k for k in os.environ if k.startswith('DEVICEGATE_')]: del os.environ[k]\n"
            "from devicegate.scep import handler as scep\n"
            "from devicegate.saml import handler as idp\n"
            "assert 'devicegate.settings' not in sys.modules\n"
            "r = scep.lambda_handler({'httpMethod': 'GET', 'path': '/scep', 'queryStringParameters': "
            "{'operation': 'GetCACert'}, 'headers': {}}, None)\n"
            "assert r['statusCode'] == 503 and 'misconfigured' in r['body'], r\n"
            "r = idp.lambda_handler({'httpMethod': 'GET', 'path': '/saml/metadata', 'multiValueHeaders': {}}, None)\n"
            "assert r['statusCode'] == 503 and 'misconfigured' in r['body'], r\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
