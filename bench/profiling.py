"""cProfile a batch of requests and say where the time goes: by library bucket and by function."""

from __future__ import annotations

import cProfile
import pstats

BUCKETS = (
    # (bucket, test on (filename, function name)); first match wins
    ("socket wait (DynamoDB/moto round trips)", lambda f, n: f == "~" and any(
        s in n for s in ("recv_into", "'_socket.socket", "sendall", "connect", "'select.", "poll"))),
    ("cryptography (OpenSSL via Rust)", lambda f, n: "cryptography" in f or "cryptography" in n or "_rust" in n),
    ("asn1crypto", lambda f, n: "asn1crypto" in f),
    ("botocore/boto3/urllib3 (Python)", lambda f, n: any(s in f for s in ("botocore", "boto3", "urllib3", "s3transfer",
                                                                         "dateutil", "jmespath"))),
    ("lxml/signxml (XML, c14n, XMLDSig)", lambda f, n: "signxml" in f or "lxml" in f or "lxml" in n),
    ("devicegate (own code)", lambda f, n: "devicegate" in f),
    ("stdlib: json/logging/re/http/ssl/other", lambda f, n: True),
)


def _bucket(filename: str, name: str) -> str:
    for label, test in BUCKETS:
        if test(filename, name):
            return label
    return "other"


def profile_calls(fn, n: int, top: int = 18) -> dict:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt
    buckets: dict[str, float] = {}
    rows = []
    for (filename, line, name), (cc, nc, tt, ct, callers) in stats.stats.items():
        label = _bucket(filename, name)
        buckets[label] = buckets.get(label, 0.0) + tt
        rows.append((tt, ct, nc, f"{_short(filename)}:{line}({name})" if filename != "~" else name))
    by_tottime = sorted(rows, reverse=True)[:top]
    by_cum = sorted(rows, key=lambda r: r[1], reverse=True)
    # cumulative view of our own functions and the big library entry points (skip wrappers)
    cum_rows = [r for r in by_cum if not any(s in r[3] for s in ("<lambda>", "profile_calls", "<listcomp>", "wrapped",
                                                                 "counting"))][:top]
    return {
        "requests": n,
        "total_ms_per_request": round(total / n * 1000, 3),
        "buckets_ms_per_request": {k: round(v / n * 1000, 3) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])},
        "top_tottime": [{"ms_per_request": round(tt / n * 1000, 3), "calls_per_request": round(nc / n, 2), "function": f}
                        for tt, ct, nc, f in by_tottime],
        "top_cumulative": [{"ms_per_request": round(ct / n * 1000, 3), "calls_per_request": round(nc / n, 2),
                            "function": f} for tt, ct, nc, f in cum_rows],
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lambdas/", "lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
