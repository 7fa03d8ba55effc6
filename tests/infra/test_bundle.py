"""The Lambda bundle: only the target's manylinux wheels, no local stack, reproducible, and its
handlers import from the unpacked zip alone.

The wheels are downloaded from the package index once and cached in build/wheel-cache (shared
with `python -m infra.bundle`), so a second run of this file downloads nothing.
"""

import json
import os
import platform as host_platform
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from infra import bundle as bundle_mod
from infra.bundle import BundleError, build_bundle

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "wheel-cache"
EM_AARCH64, EM_X86_64 = 183, 62
SHARED_OBJECT = re.compile(r"\.so(?:\.\d+)*$")


def _report(label, bundle, seconds):
    print(
        f"\n[bundle] {label}: {bundle.path.name}\n"
        f"[bundle]   zipped {bundle.size:,} bytes ({bundle.size / 2**20:.1f} MiB), "
        f"unpacked {bundle.unpacked_size:,} bytes ({bundle.unpacked_size / 2**20:.1f} MiB), "
        f"built in {seconds:.1f}s"
    )


def _timed_build(label, **kwargs):
    started = time.monotonic()
    bundle = build_bundle(cache_dir=CACHE, **kwargs)
    _report(label, bundle, time.monotonic() - started)
    return bundle


@pytest.fixture(scope="module")
def arm64(tmp_path_factory):
    return _timed_build("arm64 py3.12", out_dir=tmp_path_factory.mktemp("arm64"))


@pytest.fixture(scope="module")
def arm64_from_copy(arm64, tmp_path_factory):
    """The same inputs from another directory, with other timestamps and permissions."""
    root = tmp_path_factory.mktemp("source-copy")
    shutil.copytree(REPO / "lambdas" / "devicegate", root / "devicegate",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "lambdas" / "requirements.txt", root / "requirements.txt")
    for index, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
        os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))
        path.chmod(0o600 if index % 2 else 0o755)
    return _timed_build("arm64 py3.12 again (copied source, cached wheels)", source=root,
                        requirements=root / "requirements.txt", out_dir=tmp_path_factory.mktemp("arm64-again"))


def _host_target():
    arch = host_platform.machine()
    if arch not in ("x86_64", "aarch64"):
        pytest.skip(f"no manylinux wheels for this machine ({arch})")
    return f"manylinux2014_{arch}", f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def host_bundle(tmp_path_factory):
    """A bundle for this machine and this interpreter, built by the same builder, unpacked."""
    platform, python_version = _host_target()
    bundle = _timed_build(f"{platform} py{python_version} (this machine)", out_dir=tmp_path_factory.mktemp("host"),
                          platform=platform, python_version=python_version)
    unpacked = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(bundle.path) as archive:
        archive.extractall(unpacked)
    return bundle, unpacked


def _elf_machine(head: bytes) -> int | None:
    if head[:4] != b"\x7fELF":
        return None
    assert head[4] == 2, "64-bit ELF expected"
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


# ------------------------------------------------------------------------------ contents


def test_every_binary_in_the_arm64_bundle_is_an_aarch64_elf(arm64):
    shared_objects, machines = [], {}
    with zipfile.ZipFile(arm64.path) as archive:
        for info in archive.infolist():
            with archive.open(info) as handle:
                machine = _elf_machine(handle.read(20))
            if SHARED_OBJECT.search(info.filename):
                shared_objects.append(info.filename)
                assert machine is not None, f"{info.filename} is not an ELF file"
            if machine is not None:
                machines[info.filename] = machine
    assert any("cryptography" in name for name in shared_objects)
    assert any(name.startswith("lxml/") for name in shared_objects)
    assert any("_cffi_backend" in name for name in shared_objects)
    wrong = {name: machine for name, machine in machines.items() if machine != EM_AARCH64}
    assert not wrong, f"ELF files not for aarch64 (e_machine {EM_AARCH64}): {wrong}"
    print(f"\n[bundle] {len(machines)} ELF files, all e_machine {EM_AARCH64} (aarch64)")


def _tag_fits_lambda_arm64(tag: str) -> bool:
    interpreter, abi, platform = tag.split("-")
    if platform == "any":
        return abi == "none" and (re.fullmatch(r"py3\d*", interpreter) is not None or interpreter == "cp312")
    manylinux = re.fullmatch(r"manylinux(?:2014|_2_(\d+))_aarch64", platform)
    if not manylinux or (manylinux.group(1) and int(manylinux.group(1)) > 28):
        return False  # Lambda's Amazon Linux 2023 has glibc 2.34; the builder stops at 2_28
    if abi == "abi3":
        cp = re.fullmatch(r"cp3(\d+)", interpreter)
        return cp is not None and int(cp.group(1)) <= 12
    return interpreter == "cp312" and abi in ("cp312", "none")


def test_every_distribution_is_a_wheel_for_lambda_arm64_py312(arm64):
    with zipfile.ZipFile(arm64.path) as archive:
        wheel_files = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/WHEEL", n)]
        tags = {
            name.split("/")[0]: re.findall(r"^Tag: (\S+)$", archive.read(name).decode(), re.MULTILINE)
            for name in wheel_files
        }
    assert all(tags.values()), "every WHEEL file names its tags"
    misfits = {dist: dist_tags for dist, dist_tags in tags.items() if not any(map(_tag_fits_lambda_arm64, dist_tags))}
    assert not misfits, f"distributions whose wheel is not for Lambda arm64 / Python 3.12: {misfits}"
    pinned = dict(
        re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
        for line in (REPO / "lambdas" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    shipped = dict(dist.removesuffix(".dist-info").rsplit("-", 1) for dist in tags)
    shipped = {name.lower().replace("_", "-"): version for name, version in shipped.items()}
    for name, version in pinned.items():
        assert shipped.get(name.lower()) == version, f"{name}=={version} is pinned; the bundle has {shipped.get(name.lower())}"
    assert "botocore" in shipped, "boto3's botocore ships too (the pinned version beats the runtime's)"
    print("\n[bundle] distributions: " + ", ".join(f"{d}" for d in sorted(tags)))


def test_the_bundle_has_devicegate_without_the_local_stack(arm64):
    source = REPO / "lambdas" / "devicegate"
    with zipfile.ZipFile(arm64.path) as archive:
        names = set(archive.namelist())
        assert not [n for n in names if n.startswith("devicegate/local/")]
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        expected = sorted(
            p for p in source.rglob("*.py")
            if "__pycache__" not in p.parts and p.relative_to(source).parts[0] != "local"
        )
        for path in expected:
            arcname = "devicegate/" + path.relative_to(source).as_posix()
            assert arcname in names, f"{arcname} is missing from the bundle"
            assert archive.read(arcname) == path.read_bytes()
    for handler in bundle_mod.HANDLER_MODULES:
        assert handler.replace(".", "/") + ".py" in names


def test_zip_entries_are_normalised(arm64):
    with zipfile.ZipFile(arm64.path) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names), "entries are sorted"
    assert len(set(names)) == len(names)
    for info in infos:
        assert not info.is_dir()
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
        assert info.external_attr >> 16 in (0o100644, 0o100755), (info.filename, oct(info.external_attr >> 16))
        assert info.create_system == 3
        assert info.extra == b"" and info.comment == b""
        assert info.compress_type == zipfile.ZIP_DEFLATED
    assert any(info.external_attr >> 16 == 0o100755 for info in infos if info.filename.endswith(".so"))


def test_sizes_are_reported_and_within_lambda_limits(arm64):
    with zipfile.ZipFile(arm64.path) as archive:
        assert arm64.unpacked_size == sum(info.file_size for info in archive.infolist())
    assert arm64.size == arm64.path.stat().st_size
    assert arm64.unpacked_size < bundle_mod.LAMBDA_UNPACKED_LIMIT
    assert arm64.size < bundle_mod.LAMBDA_DIRECT_UPLOAD_LIMIT
    assert (arm64.platform, arm64.python_version) == ("manylinux2014_aarch64", "3.12")


# ------------------------------------------------------------------------------ reproducibility


def test_same_inputs_give_the_same_bytes_and_name(arm64, arm64_from_copy):
    assert arm64_from_copy.sha256 == arm64.sha256
    assert arm64_from_copy.path.read_bytes() == arm64.path.read_bytes()
    assert arm64.path.name == f"devicegate-manylinux2014_aarch64-py3.12-{arm64.sha256[:16]}.zip"
    assert len(arm64.sha256) == 64 and int(arm64.sha256, 16) >= 0


def test_a_changed_source_changes_the_hash(arm64, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(REPO / "lambdas" / "devicegate", root / "devicegate", ignore=shutil.ignore_patterns("__pycache__"))
    with (root / "devicegate" / "health.py").open("a") as handle:
        handle.write("\n# changed\n")
    changed = build_bundle(root, REPO / "lambdas" / "requirements.txt", tmp_path / "out", cache_dir=CACHE)
    assert changed.sha256 != arm64.sha256
    assert changed.unpacked_size == arm64.unpacked_size + len("\n# changed\n")


def test_the_command_prints_path_hash_and_sizes(arm64, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "infra.bundle", "--out", str(tmp_path), "--cache-dir", str(CACHE), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    print("\n" + result.stdout)
    assert f"sha256:   {arm64.sha256}" in result.stdout
    assert f"path:     {tmp_path / arm64.path.name}" in result.stdout
    assert re.search(r"^zipped: +[\d,]+ bytes", result.stdout, re.MULTILINE)
    assert re.search(r"^unpacked: +[\d,]+ bytes", result.stdout, re.MULTILINE)


# ------------------------------------------------------------------------------ refusals


def test_an_oversized_bundle_is_refused(arm64, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_mod, "LAMBDA_UNPACKED_LIMIT", 1_000_000)
    with pytest.raises(BundleError, match=r"over Lambda's limit .* Biggest parts: botocore"):
        build_bundle(out_dir=tmp_path, cache_dir=CACHE)
    assert not list(tmp_path.glob("*.zip")), "nothing is written for a refused bundle"


def _package(root: Path, files: dict[str, str]) -> Path:
    for handler in bundle_mod.HANDLER_MODULES:
        files.setdefault(handler.replace(".", "/") + ".py", "def lambda_handler(event, context):\n    return {}\n")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if parent != Path("."):
                (root / parent / "__init__.py").touch()
        path.write_text(text)
    return root


def test_a_handler_importing_the_local_stack_is_refused(tmp_path):
    source = _package(tmp_path, {
        "devicegate/health.py": "def lambda_handler(event, context):\n    from .util import helper\n    return helper()\n",
        "devicegate/util.py": "def helper():\n    from devicegate.local.sim import fake\n    return fake()\n",
        "devicegate/local/sim.py": "def fake():\n    return {}\n",
    })
    with pytest.raises(BundleError, match=r"devicegate\.health -> devicegate\.util -> devicegate\.local"):
        bundle_mod.check_handler_imports(source)
    with pytest.raises(BundleError, match="imports devicegate.local"):
        build_bundle(source, REPO / "lambdas" / "requirements.txt", tmp_path / "out", cache_dir=CACHE)


def test_new_handlers_are_found_and_checked_too(tmp_path):
    source = _package(tmp_path, {"devicegate/crl.py": "def lambda_handler(event, context):\n    from .local import x\n"})
    assert "devicegate.crl" in bundle_mod.handler_modules(source)
    with pytest.raises(BundleError, match="devicegate.crl imports devicegate.local"):
        bundle_mod.check_handler_imports(source)


def test_a_non_handler_may_use_the_local_stack(tmp_path):
    # The CLI's `local` commands import the local stack lazily; the CLI is no Lambda handler.
    source = _package(tmp_path, {"devicegate/cli.py": "def main():\n    from .local import stack\n"})
    assert bundle_mod.check_handler_imports(source) == sorted(bundle_mod.HANDLER_MODULES)


def test_platform_tags_cover_the_aliases_pip_needs():
    arm = bundle_mod.platform_tags("manylinux2014_aarch64", "3.12")
    assert arm[0] == "manylinux_2_28_aarch64" and {"manylinux_2_17_aarch64", "manylinux2014_aarch64"} <= set(arm)
    assert all(tag.endswith("_aarch64") for tag in arm)
    assert bundle_mod.platform_tags("manylinux2014_x86_64", "3.11")[0] == "manylinux_2_26_x86_64"  # Amazon Linux 2
    for bad in ("win_amd64", "manylinux2014_armv7l", "musllinux_1_2_aarch64"):
        with pytest.raises(BundleError, match="not a manylinux platform"):
            bundle_mod.platform_tags(bad, "3.12")
    with pytest.raises(BundleError, match="3.N"):
        bundle_mod.platform_tags("manylinux2014_aarch64", "3")


# ------------------------------------------------------------------------------ the handlers run


_IMPORT_AND_CALL = r"""
import importlib, importlib.util, json, pkgutil, sys, sysconfig

root, handlers = sys.argv[1], json.loads(sys.argv[2])
assert not any("site-packages" in p or "dist-packages" in p for p in sys.path), sys.path
sys.path.insert(0, root)

def alb(method, path, query=None, body=""):
    return {
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/dg/0"}},
        "httpMethod": method, "path": path, "queryStringParameters": query or {},
        "headers": {"host": "example.test", "x-forwarded-for": "192.0.2.1"}, "body": body, "isBase64Encoded": False,
    }

events = {
    "devicegate.scep.handler": alb("GET", "/scep", {"operation": "GetCACert"}),
    "devicegate.saml.handler": alb("GET", "/saml/metadata"),
    "devicegate.compliance.webhook": alb("POST", "/fleet/webhook", body="{}"),
    "devicegate.health": alb("GET", "/healthz"),
}
results = {}
for name in handlers:
    module = importlib.import_module(name)
    try:
        response = module.lambda_handler(events.get(name, alb("GET", "/")), None)
        results[name] = {"status": response.get("statusCode") if isinstance(response, dict) else repr(response)[:80]}
    except Exception as exc:
        results[name] = {"raised": type(exc).__name__, "message": str(exc)[:300]}

import devicegate
modules = sorted(m.name for m in pkgutil.walk_packages(devicegate.__path__, "devicegate.")
                 if not m.name.endswith(".__main__"))  # that one runs the CLI
for name in modules:
    importlib.import_module(name)
# What the handlers import lazily, on their first real request.
import boto3, botocore.config, signxml, lxml.etree, asn1crypto.cms
from cryptography.hazmat.primitives.asymmetric import rsa
rsa.generate_private_key(public_exponent=65537, key_size=2048)
for service in ("dynamodb", "secretsmanager", "s3"):
    boto3.client(service, region_name="us-east-1")

stdlib = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
outside = sorted(
    f"{name}: {module.__file__}" for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None) and not module.__file__.startswith(root)
    and not any(module.__file__.startswith(path) for path in stdlib)
)
print(json.dumps({
    "results": results, "modules": modules, "outside": outside,
    "local_found": importlib.util.find_spec("devicegate.local") is not None,
    "files": {name: sys.modules[name].__file__ for name in ("devicegate", "cryptography", "lxml", "boto3", "botocore", "signxml")},
}))
"""

# What each known handler answers without any configuration: never an ImportError.
EXPECTED = {
    "devicegate.scep.handler": {"status": 503},
    "devicegate.saml.handler": {"status": 503},
    "devicegate.compliance.webhook": {"status": 503},
    "devicegate.health": {"status": 200},  # touches no configuration at all
    "devicegate.compliance.sync": {"raised": "ConfigError"},  # scheduled, not ALB: raises, EventBridge retries
}


def test_its_handlers_import_from_the_unpacked_bundle_alone(host_bundle):
    bundle, unpacked = host_bundle
    handlers = bundle_mod.handler_modules()
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _IMPORT_AND_CALL, str(unpacked), json.dumps(handlers)],
        cwd=unpacked, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\n[bundle] handlers run from {bundle.path.name} unpacked, python -I -S:")
    for name, outcome in sorted(report["results"].items()):
        print(f"[bundle]   {name}: {outcome}")
    for name, outcome in report["results"].items():
        assert outcome.get("raised") not in ("ImportError", "ModuleNotFoundError"), (name, outcome)
        if name in EXPECTED:
            assert {k: outcome.get(k) for k in EXPECTED[name]} == EXPECTED[name], (name, outcome)
        else:  # a newer handler: a response, or a configuration error that names the setting
            assert outcome.get("raised") in (None, "ConfigError"), (name, outcome)
    assert set(EXPECTED) <= set(report["results"])
    assert not report["local_found"], "devicegate.local must not be importable from the bundle"
    assert not [m for m in report["modules"] if m.startswith("devicegate.local")]
    assert not report["outside"], f"modules loaded from outside the bundle and the stdlib: {report['outside']}"
    for name, path in report["files"].items():
        assert path.startswith(str(unpacked)), (name, path)
