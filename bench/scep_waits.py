"""What the SCEP handler's two waits cost in CPU: the handler in-process against a local stack's own
moto and simulated Fleet, with the store write and the Fleet lookup each either real or answered
from memory. Thread CPU per enrollment (``python -m bench.scep_waits``; not part of ``-m bench``)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import common, scep_bench


def main(n: int = 150, rounds: int = 2) -> None:
    from cryptography import x509

    from devicegate import store as store_mod
    from devicegate.local import stack as stack_mod
    from devicegate.local import tools
    from devicegate.scep import handler

    work = Path(tempfile.mkdtemp(prefix="scep-waits-"))
    state = work / "stack"
    stack = stack_mod.LocalStack(state)
    endpoints = stack.start()
    try:
        pool = common.KeyPool(size=4)
        ca = x509.load_pem_x509_certificate(endpoints["scep_ca"].encode())

        def run(label: str, count: int = n) -> None:
            hosts = [str(uuid.uuid4()).upper() for _ in range(count)]
            for host in hosts:
                tools.fleet_add_host(state, host)
            events = [scep_bench._event(scep_bench.build_request(ca, pool.next(), endpoints["scep_challenge"], h))
                      for h in hosts]
            cpu, wall = time.thread_time(), time.perf_counter()
            for event in events:
                handler.lambda_handler(event, None)
            print(f"{label:34s} {(time.thread_time() - cpu) / count * 1000:6.2f} ms CPU "
                  f"{(time.perf_counter() - wall) / count * 1000:6.2f} ms wall per enrollment", flush=True)

        run("(warm-up)", 30)
        real_call = store_mod.Store._call
        for _ in range(rounds):
            authority, _ = handler._authority()
            real_known = authority.host_known
            run("real store write, real Fleet")
            authority.host_known = lambda uuid: True
            run("real store write, no Fleet call")
            answers: dict = {}
            store_mod.Store._call = lambda self, op, **kw: answers[op] if op in answers else answers.setdefault(
                op, real_call(self, op, **kw))  # the first real answer, replayed
            run("store from memory, no Fleet call")
            authority.host_known = real_known
            run("store from memory, real Fleet")
            store_mod.Store._call = real_call
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)  # its CA keys included


if __name__ == "__main__":
    if any(not a.isdigit() for a in sys.argv[1:]) or len(sys.argv) > 3:
        sys.exit("usage: python -m bench.scep_waits [ENROLLMENTS_PER_RUN (150) [ROUNDS (2)]]")
    main(*(int(a) for a in sys.argv[1:]))
