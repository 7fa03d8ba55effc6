"""xmlsafe's parser: one per thread, reused within it (an lxml parser is not for two threads at once)."""

from __future__ import annotations

import threading

from devicegate.saml import xmlsafe


def test_one_parser_per_thread_reused_within_it():
    mine = xmlsafe._parser()
    assert xmlsafe._parser() is mine
    theirs = []
    worker = threading.Thread(target=lambda: theirs.extend([xmlsafe._parser(), xmlsafe._parser()]))
    worker.start()
    worker.join()
    assert theirs[0] is theirs[1] and theirs[0] is not mine
    assert xmlsafe.parse(b"<a>x</a>").text == "x"
