"""The Lambda bundle: only the target's manylinux wheels, no local stack, reproducible, byte-compiled
for Python 3.12, and its handlers import from the unpacked zip alone.

The wheels are downloaded from the package index once and cached in build/wheel-cache (shared
with `python -m infra.bundle`), so a second run of this file downloads nothing.

The bytecode tests need a CPython 3.12 (the runtime's version; found as infra.bundle finds it).
Without one they skip, and in CI (env CI set) they fail: they are marked interop, and
tests/conftest.py turns a skipped interop test into a failure there.
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
MAGIC_312 = (3531).to_bytes(2, "little") + b"\r\n"  # CPython 3.12's .pyc magic (Lib/importlib/_bootstrap_external.py)
PYC_312 = re.compile(r"(?:(?P<dir>.+)/)?__pycache__/(?P<stem>[^/]+)\.cpython-312\.pyc")


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


def _host_platform():
    arch = host_platform.machine()
    if arch not in ("x86_64", "aarch64"):
        pytest.skip(f"no manylinux wheels for this machine ({arch})")
    return f"manylinux2014_{arch}"


def _host_target():
    return _host_platform(), f"{sys.version_info.major}.{sys.version_info.minor}"


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


@pytest.fixture(scope="module")
def py312():
    """The CPython 3.12 that byte-compiles the bundle (and runs the 3.12 import checks)."""
    compiler, tried = bundle_mod.find_bytecode_compiler("3.12")
    if compiler is None:
        pytest.skip(f"no CPython 3.12 to byte-compile the bundle with ({'; '.join(tried)}); "
                    f"install one or set {bundle_mod.BUNDLE_PYTHON_ENV}")
    return compiler


def _read_only_copy(bundle, destination: Path, *, bytecode: bool) -> Path:
    """The bundle unpacked (without its .pyc files if not ``bytecode``), then made read-only."""
    with zipfile.ZipFile(bundle.path) as archive:
        archive.extractall(destination, [n for n in archive.namelist() if bytecode or not n.endswith(".pyc")])
    for path in [destination, *destination.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # chmod -R a-w, as Lambda's /var/task
    return destination


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


@pytest.fixture(scope="module")
def host312_bundle(py312, tmp_path_factory):
    """The same builder's bundle for this machine and Python 3.12, unpacked read-only twice: as
    built and without its .pyc files."""
    platform = _host_platform()
    bundle = _timed_build(f"{platform} py3.12 (this machine)", out_dir=tmp_path_factory.mktemp("host312"),
                          platform=platform, python_version="3.12")
    with_pyc = _read_only_copy(bundle, tmp_path_factory.mktemp("unpacked312"), bytecode=True)
    without_pyc = _read_only_copy(bundle, tmp_path_factory.mktemp("unpacked312-source-only"), bytecode=False)
    yield bundle, with_pyc, without_pyc
    _make_writable(with_pyc)
    _make_writable(without_pyc)


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
        # Bytecode only where CPython 3.12 looks for it, and only for a source that ships too.
        for name in names:
            if "__pycache__" in name or name.endswith((".pyc", ".pyo")):
                match = PYC_312.fullmatch(name)
                assert match, f"{name}: stray bytecode"
                assert (f"{match['dir']}/" if match["dir"] else "") + f"{match['stem']}.py" in names, name
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


# ------------------------------------------------------------------------------ bytecode


_CHECK_PYC = r"""
import importlib.util, json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive:
    names = set(archive.namelist())
    mismatched = []
    for name in sorted(n for n in names if n.endswith(".pyc")):
        directory, _, rest = name.rpartition("__pycache__/")
        source = directory + rest.split(".")[0] + ".py"
        if archive.read(name)[8:16] != importlib.util.source_hash(archive.read(source)):
            mismatched.append(name)
print(json.dumps({"magic": importlib.util.MAGIC_NUMBER.hex(), "tag": sys.implementation.cache_tag,
                  "mismatched": mismatched}))
"""


@pytest.mark.interop
def test_every_module_ships_python312_bytecode(arm64, py312):
    with zipfile.ZipFile(arm64.path) as archive:
        names = set(archive.namelist())
        sources = sorted(n for n in names if n.endswith(".py"))
        pycs = {n: archive.read(n) for n in names if n.endswith(".pyc")}
    expected = {bundle_mod._pyc_arcname(n, "cpython-312"): n for n in sources}
    missing = sorted(set(expected) - set(pycs))
    assert not missing, f"sources without a cpython-312 .pyc: {missing[:20]}"
    assert set(pycs) == set(expected)
    assert (arm64.pyc_files, arm64.pyc_bytes) == (len(pycs), sum(map(len, pycs.values())))
    assert arm64.compiler == py312.executable
    for name in ("devicegate/__pycache__/health.cpython-312.pyc",
                 "devicegate/scep/__pycache__/handler.cpython-312.pyc",
                 "devicegate/saml/__pycache__/handler.cpython-312.pyc",
                 "cryptography/x509/__pycache__/base.cpython-312.pyc",
                 "lxml/html/__pycache__/__init__.cpython-312.pyc",
                 "asn1crypto/__pycache__/cms.cpython-312.pyc",
                 "signxml/__pycache__/__init__.cpython-312.pyc",
                 "botocore/__pycache__/session.cpython-312.pyc",
                 "__pycache__/six.cpython-312.pyc"):  # a top-level module
        assert name in pycs, name
    # The header (PEP 552): magic, flags, then the source's hash. Magic as python3.12 itself says.
    checked = subprocess.run([py312.executable, "-I", "-S", "-c", _CHECK_PYC, str(arm64.path)],
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr[-3000:]
    report = json.loads(checked.stdout)
    assert report["tag"] == "cpython-312"
    assert bytes.fromhex(report["magic"]) == py312.magic == MAGIC_312
    wrong = {n: data[:8].hex() for n, data in pycs.items() if data[:4] != MAGIC_312}
    assert not wrong, f".pyc files whose magic is not 3.12's ({MAGIC_312.hex()}): {wrong}"
    flags = {n: int.from_bytes(data[4:8], "little") for n, data in pycs.items()}
    assert set(flags.values()) == {0b01}, "hash-based (bit 0) and not checked against the source (bit 1 clear)"
    assert not report["mismatched"], f".pyc files whose source hash is not their source's: {report['mismatched']}"
    assert not [n for n in pycs if ".opt-" in n], "optimisation level 0 only (asserts kept)"
    print(f"\n[bundle] {len(pycs)} .pyc files (devicegate "
          f"{sum(n.startswith('devicegate/') for n in pycs)}, third-party {sum(not n.startswith('devicegate/') for n in pycs)}), "
          f"magic {MAGIC_312.hex()}, flags 0b01 (unchecked hash), by {py312.executable}")


@pytest.mark.interop
def test_the_bytecode_size_delta_is_reported(arm64, py312, tmp_path):
    plain = build_bundle(out_dir=tmp_path, cache_dir=CACHE, bytecode=False)
    with zipfile.ZipFile(plain.path) as archive:
        assert not [n for n in archive.namelist() if n.endswith(".pyc")]
    assert plain.pyc_files == plain.pyc_bytes == 0 and plain.compiler is None
    assert arm64.unpacked_size - plain.unpacked_size == arm64.pyc_bytes > 0
    zipped_delta = arm64.size - plain.size
    assert 0 < zipped_delta < arm64.pyc_bytes, "the .pyc files compress"
    assert arm64.size < bundle_mod.LAMBDA_DIRECT_UPLOAD_LIMIT and arm64.unpacked_size < bundle_mod.LAMBDA_UNPACKED_LIMIT
    print(f"\n[bundle] .pyc size delta: zipped {plain.size:,} -> {arm64.size:,} bytes "
          f"(+{zipped_delta:,}, +{100 * zipped_delta / plain.size:.1f}%), unpacked {plain.unpacked_size:,} -> "
          f"{arm64.unpacked_size:,} bytes (+{arm64.pyc_bytes:,}, +{100 * arm64.pyc_bytes / plain.unpacked_size:.1f}%)")


@pytest.mark.interop
def test_the_bytecode_is_reproducible(arm64, arm64_from_copy, py312):
    # Built twice (the second from a copy with other paths, timestamps and permissions): same bytes.
    assert arm64.pyc_files == arm64_from_copy.pyc_files > 0
    assert arm64_from_copy.sha256 == arm64.sha256


def test_without_a_python312_the_bundle_has_no_bytecode_and_the_log_says_so(tmp_path, monkeypatch):
    # A "python3.12" on PATH that is really another version must not compile the bundle.
    fake = tmp_path / "bin" / "python3.12"
    fake.parent.mkdir()
    fake.symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.delenv(bundle_mod.BUNDLE_PYTHON_ENV, raising=False)
    if sys.version_info[:2] == (3, 12):
        pytest.skip("this interpreter is 3.12 itself")
    messages = []
    bundle = build_bundle(out_dir=tmp_path / "out", cache_dir=CACHE, log=messages.append)
    warning = [m for m in messages if m.startswith("WARNING: no Python 3.12 interpreter")]
    assert warning, messages
    assert f"{fake} is cpython {sys.version_info.major}.{sys.version_info.minor}" in warning[0]
    assert "NO .pyc files" in warning[0] and bundle_mod.BUNDLE_PYTHON_ENV in warning[0]
    assert bundle.pyc_files == 0 and bundle.compiler is None
    with zipfile.ZipFile(bundle.path) as archive:
        assert not [n for n in archive.namelist() if n.endswith(".pyc")]


def test_a_configured_interpreter_of_another_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(bundle_mod.BUNDLE_PYTHON_ENV, sys.executable)
    if sys.version_info[:2] == (3, 12):
        pytest.skip("this interpreter is 3.12 itself")
    with pytest.raises(BundleError, match=rf"{bundle_mod.BUNDLE_PYTHON_ENV}=.* cannot byte-compile for Python 3\.12"):
        build_bundle(out_dir=tmp_path, cache_dir=CACHE)
    assert not list(tmp_path.glob("*.zip"))


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
import sys

# Every module compiled from source shows as a "compile" audit event naming its .py file; a
# .pyc that is used shows as "marshal.loads" instead (PEP 578; no import machinery patched).
compiled_from_source, pyc_loads = [], [0]
def _audit(event, args):
    if event == "compile" and isinstance(args[1], str) and args[1].endswith(".py"):
        compiled_from_source.append(args[1])
    elif event == "marshal.loads":
        pyc_loads[0] += 1
sys.addaudithook(_audit)

import importlib, importlib.util, json, pkgutil, sysconfig

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
    "compiled_from_source": sorted({f for f in compiled_from_source if f.startswith(root)}),
    "loaded_from_bundle": sum(1 for m in list(sys.modules.values())
                              if (getattr(m, "__file__", None) or "").startswith(root) and m.__file__.endswith(".py")),
    "pyc_loads": pyc_loads[0],
    "flags": {k: getattr(sys.flags, k) for k in ("isolated", "no_site", "dont_write_bytecode", "optimize")},
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


def _import_and_call(python: str, unpacked: Path, *options: str) -> dict:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run(
        [python, "-I", "-S", *options, "-c", _IMPORT_AND_CALL, str(unpacked), json.dumps(bundle_mod.handler_modules())],
        cwd=unpacked, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check_handler_report(report: dict, unpacked: Path) -> None:
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


def test_its_handlers_import_from_the_unpacked_bundle_alone(host_bundle):
    bundle, unpacked = host_bundle
    report = _import_and_call(sys.executable, unpacked)
    print(f"\n[bundle] handlers run from {bundle.path.name} unpacked, python -I -S:")
    _check_handler_report(report, unpacked)


def _tree(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


@pytest.mark.interop
def test_python312_imports_the_handlers_from_the_bundled_bytecode_in_a_read_only_directory(host312_bundle, py312):
    bundle, with_pyc, without_pyc = host312_bundle
    assert bundle.pyc_files > 0
    assert not [p for p in [with_pyc, *with_pyc.rglob("*")] if p.stat().st_mode & 0o222], "unpacked read-only"
    # -B as well: root ignores the read-only bits, and Lambda's read-only /var/task writes nothing either.
    before = _tree(with_pyc), _tree(without_pyc)
    started = time.perf_counter()
    report = _import_and_call(py312.executable, with_pyc, "-B")
    with_seconds = time.perf_counter() - started
    print(f"\n[bundle] handlers run by {py312.executable} -I -S -B from {bundle.path.name} unpacked read-only:")
    _check_handler_report(report, with_pyc)
    assert report["flags"] == {"isolated": 1, "no_site": 1, "dont_write_bytecode": 1, "optimize": 0}
    assert report["loaded_from_bundle"] > 200, "devicegate and its dependencies' Python modules came from the bundle"
    assert not report["compiled_from_source"], (
        f"modules compiled from source although the bundle has their .pyc: {report['compiled_from_source'][:20]}")
    assert report["pyc_loads"] >= report["loaded_from_bundle"]

    # The control: the same tree without the .pyc files compiles every module from source.
    started = time.perf_counter()
    control = _import_and_call(py312.executable, without_pyc, "-B")
    without_seconds = time.perf_counter() - started
    assert control["loaded_from_bundle"] == report["loaded_from_bundle"]
    assert len(control["compiled_from_source"]) >= control["loaded_from_bundle"]  # and some imported, then dropped
    assert any("/devicegate/" in f for f in control["compiled_from_source"])
    assert any("/cryptography/" in f for f in control["compiled_from_source"])
    assert (_tree(with_pyc), _tree(without_pyc)) == before, "nothing was written into the read-only bundle"
    print(f"[bundle] {report['loaded_from_bundle']} Python modules of the bundle imported: 0 compiled from source "
          f"with the .pyc ({with_seconds:.2f}s for the whole check), {len(control['compiled_from_source'])} without "
          f"({without_seconds:.2f}s)")
