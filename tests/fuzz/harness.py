"""What every fuzz input is held to, whoever generates it (hypothesis here, atheris in bench/fuzz).

* ``bounded(fn, *args)``: runs one input under a wall-clock and a tracemalloc budget. The time
  bound catches hangs and blow-ups (quadratic parsers, decompression bombs), not slowness; the
  memory bound is the peak of Python allocations made while the input ran.
* ``ErrorLog``: devicegate's handlers turn an unexpected exception into a polite 503 or a SCEP
  "internal error" after ``log.exception``; a fuzz input that reaches one of those paths is a
  crash even though nothing raised, so every ERROR record from ``devicegate`` counts as one.
* ``fuzz_settings(n)``: deterministic hypothesis settings; DEVICEGATE_FUZZ_EXAMPLES replaces
  every test's example count, DEVICEGATE_FUZZ_SEED switches to that seed instead of the fixed
  derandomized run.
"""

from __future__ import annotations

import logging
import os
import time
import tracemalloc
from contextlib import contextmanager

from hypothesis import HealthCheck, seed, settings

MAX_SECONDS = float(os.environ.get("DEVICEGATE_FUZZ_MAX_SECONDS", "2.0"))
MAX_PEAK_BYTES = int(os.environ.get("DEVICEGATE_FUZZ_MAX_MIB", "64")) * 1024 * 1024


class BudgetExceeded(AssertionError):
    pass


def bounded(fn, *args, max_seconds: float = MAX_SECONDS, max_peak: int = MAX_PEAK_BYTES, trace_memory: bool = True,
            **kwargs):
    """fn(*args, **kwargs), failing if it took longer than max_seconds or allocated more than max_peak."""
    started_tracing = trace_memory and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    try:
        if trace_memory:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - base if trace_memory else 0
    finally:
        if started_tracing:
            tracemalloc.stop()
    if elapsed > max_seconds:
        raise BudgetExceeded(f"one input took {elapsed:.2f}s (limit {max_seconds}s)")
    if peak > max_peak:
        raise BudgetExceeded(f"one input allocated a peak of {peak / 2**20:.1f} MiB (limit {max_peak / 2**20:.0f} MiB)")
    return result


class ErrorLog(logging.Handler):
    """Collects ERROR records from devicegate's loggers while installed."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @contextmanager
    def watching(self):
        logger = logging.getLogger("devicegate")
        logger.addHandler(self)
        old_level = logger.level
        if logger.getEffectiveLevel() > logging.ERROR:
            logger.setLevel(logging.ERROR)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(old_level)

    def take(self) -> list[str]:
        out = []
        for record in self.records:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
            out.append(f"{record.name}: {text}")
        self.records.clear()
        return out


@contextmanager
def no_errors_logged():
    """Fail if devicegate logged an ERROR (a swallowed crash) inside the block."""
    log = ErrorLog()
    with log.watching():
        yield log
    errors = log.take()
    assert not errors, f"devicegate logged errors (a swallowed exception): {errors}"


def examples(default: int) -> int:
    value = os.environ.get("DEVICEGATE_FUZZ_EXAMPLES")
    return int(value) if value else default


def fuzz_settings(default_examples: int):
    """Decorator: hypothesis settings for one fuzz test (deterministic unless a seed is given)."""
    fixed_seed = os.environ.get("DEVICEGATE_FUZZ_SEED")
    configured = settings(
        max_examples=examples(default_examples),
        derandomize=fixed_seed is None,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )

    def apply(test):
        test = configured(test)
        return seed(int(fixed_seed))(test) if fixed_seed is not None else test

    return apply
