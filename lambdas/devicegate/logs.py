"""Module loggers that import ``logging`` when they first log, not when their module is imported.

In the Lambda runtime ``logging`` (and ``threading``, ``traceback``) are loaded before a handler
is, so this changes nothing there; in a bare interpreter (the local stack, the CLI, a runtime
that has not loaded them) they are some 3 ms of a cold start that nothing on the import path
needs. ``getLogger(name).info(...)`` and every other attribute of the ``logging.Logger`` of that
name are reached through the stand-in, which tests may patch like the logger itself."""

from __future__ import annotations


class LazyLogger:
    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, attribute: str):
        import logging

        return getattr(logging.getLogger(self.name), attribute)


def getLogger(name: str) -> LazyLogger:  # noqa: N802 - logging's name, for the call sites
    return LazyLogger(name)
