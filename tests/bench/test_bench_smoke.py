"""The benchmark harness runs and reports every figure of its cheap sections (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECTIONS = "scep_inprocess,sso,storage,coldstart"


def _median(d, *path):
    for key in path:
        d = d[key]
    return d["median"] if isinstance(d, dict) and "median" in d else d


def test_quick_run_reports_every_figure(tmp_path):
    out, md = tmp_path / "results.json", tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--sections", SECTIONS, "--out", str(out),
                           "--markdown", str(md)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for path in [
        ("scep_inprocess", "handler", "wall_per_enrollment"),
        ("scep_inprocess", "handler", "cpu_per_enrollment"),
        ("scep_inprocess", "handler", "store_wall_per_enrollment"),
        ("scep_inprocess", "crypto_floor", "cpu_per_enrollment"),
        ("sso", "ours", "wall_per_login"),
        ("sso", "ours", "wall_excluding_store"),
        ("sso", "ours", "cpu_excluding_store"),
        ("sso", "from_memory", "wall_per_login"),
        ("sso", "from_memory", "cpu_per_login"),
        ("sso", "from_memory_warm_caches", "cpu_per_login"),
        ("sso", "floor_after_waits", "cpu_per_login"),
        ("sso", "floor", "cpu_per_login"),
        ("sso", "lasso", "wall_per_login"),
        ("sso", "pysaml2", "wall_per_login"),
        ("coldstart", "handlers", "health", "import"),
        ("coldstart", "handlers", "health", "third_party_alone"),
        ("coldstart", "handlers", "scep", "import_plus_init"),
        # awslambdaric comes with tests/requirements-bench.txt: the runtime figures are always there
        ("coldstart", "lambda_runtime", "handlers", "health", "import"),
        ("coldstart", "lambda_runtime", "handlers", "scep", "third_party_alone_after_init"),
    ]:
        value = _median(r, *path)
        assert isinstance(value, (int, float)) and value > 0, path
    assert r["scep_inprocess"]["profile"]["buckets_ms_per_request"]
    assert r["sso"]["profile"]["top_tottime"]
    assert r["sso"]["ours"]["signatures_in_response"] == r["sso"]["lasso"]["signatures_in_response"] == 2
    assert r["sso"]["from_memory"]["signatures_in_response"] == 2
    # BatchGetItem (certificate + compliance) and the replay guard's conditional PutItem
    assert r["sso"]["from_memory"]["store_calls_per_login"] == r["sso"]["ours"]["store_calls_per_login"] == 2
    assert r["sso"]["profile_from_memory"]["top_tottime"]
    # the floor and lasso targets are judged on the store-from-memory figure, and the page says so
    assert r["targets"]["sso_vs_floor"]["judged_on"].startswith("from_memory")
    assert r["targets"]["sso_vs_floor"]["ratio"] == round(
        _median(r, "sso", "from_memory", "cpu_per_login") / _median(r, "sso", "floor", "cpu_per_login"), 3)
    assert r["targets"]["sso_vs_lasso"]["judged_on"].startswith("from_memory")
    login = r["storage"]["login_allowed"]
    assert login["total"] == login["read_calls"] + login["writes"] > 0
    assert login["reads"] == 2 and login["read_calls"] == 1  # certificate + compliance, one BatchGetItem
    for case in ("first_sync", "nothing_changed", "one_host_changed"):
        assert r["storage"]["sync"][case]["total"] >= 0
    assert {"scep_cpu_per_enrollment", "scep_throughput"}.isdisjoint(r["targets"])  # not run in this subset
    for key in ("sso_vs_floor", "sso_vs_lasso", "sso_vs_pysaml2", "cold_start", "cold_start_in_lambda_runtime",
                "storage_per_login"):
        assert isinstance(r["targets"][key], dict) and r["targets"][key], key
    assert r["targets"]["sso_vs_floor"]["met"] in (True, False)
    text = md.read_text()
    assert "## Figures and targets" in text and "Optimisation candidates" in text
    assert "store answered from memory" in text and "Which figure the targets use" in text
    assert "after the Lambda runtime's bootstrap" in text
    assert r["sso"]["from_memory"]["caches"].startswith("cold") and "cold per-device caches" in text
