"""The Lambda deployment bundle: one content-hashed, byte-for-byte reproducible zip.

The bundle holds the ``devicegate`` package (without ``devicegate/local/``, the local stack's
simulators and moto glue) and the contents of the manylinux wheels of ``lambdas/requirements.txt``
for the Lambda platform. Wheels are downloaded by pip for the *target* platform and Python
(``pip download --only-binary=:all: --platform ... --python-version ...``) and unpacked here; no
sdist is ever built and no setup.py runs, so what ships is exactly what PyPI published for Lambda.

Why each rule:

* Reproducible: entries sorted, every timestamp 1980-01-01 00:00, permissions 0644 (0755 where
  the wheel marks a file executable), no extra fields, one fixed deflate level. Same inputs give
  the same bytes, hence the same sha256, hence the same file name; Pulumi sees an unchanged
  archive and does not redeploy. (The compressed bytes come from this Python's zlib: a machine
  with a different zlib build may compress differently; the file *contents* never differ.)
* Cached: wheels are kept under a key that hashes the requirements, the accepted platform tags,
  the Python version and this module's cache format. An unchanged build downloads nothing.
* Checked: every wheel's tags must fit the target; every ELF file must be for the target
  machine; nothing a handler imports may live in ``devicegate/local/``; and the unpacked size
  must fit Lambda's 250 MB limit (the error names the biggest distributions).
* Byte-compiled: Lambda's code directory is read-only, so a module without a usable ``.pyc`` is
  compiled from source at *every* cold start (and the result thrown away). The bundle therefore
  ships ``__pycache__/<name>.cpython-3NN.pyc`` next to every ``.py`` (ours and the wheels'),
  compiled by an interpreter of the target version (``DEVICEGATE_BUNDLE_PYTHON``, else
  ``python3.N`` on PATH, else a pyenv install) whose magic number is checked; wheels' own
  ``.pyc`` files are dropped. Without such an interpreter the bundle is built without ``.pyc``
  and the log says so: bytecode of another version would be ignored at best.

Lambda runtime facts used here: python3.12 and python3.13 run on Amazon Linux 2023 (glibc 2.34),
so manylinux_2_28 and older wheels load there; python3.11 and older run on Amazon Linux 2
(glibc 2.26), so manylinux_2_26 is their ceiling. The unpacked limit is 262,144,000 bytes
(Lambda's own error text: "Unzipped size must be smaller than 262144000 bytes"); a zip sent
directly to the API must stay under 50 MB, larger ones must go through S3.

Usable as a library (``build_bundle``, used by the Pulumi program) and as a command:
``python -m infra.bundle [--platform P] [--python-version V] [--out DIR] [--cache-dir DIR]``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO / "lambdas"
DEFAULT_REQUIREMENTS = DEFAULT_SOURCE / "requirements.txt"
DEFAULT_OUT = REPO / "build" / "lambda"

PACKAGE = "devicegate"
EXCLUDED_SUBPACKAGES = ("local",)  # the local stack: never shipped, never imported by a handler
# The Lambda entry points. Any other module outside local/ that defines a top-level
# `lambda_handler` (a CRL publisher, say) is found and checked too.
HANDLER_MODULES = (
    "devicegate.scep.handler",
    "devicegate.saml.handler",
    "devicegate.compliance.sync",
    "devicegate.compliance.webhook",
    "devicegate.health",
)

LAMBDA_UNPACKED_LIMIT = 262_144_000  # "250 MB" as Lambda counts it
LAMBDA_DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024  # larger zips must be uploaded through S3
DEFLATE_LEVEL = 6  # level 9 took twice as long (4.3 s vs 2.2 s) for 0.2 % less
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
CACHE_FORMAT = 1  # bump when the cache layout or the download command changes
BUNDLE_PYTHON_ENV = "DEVICEGATE_BUNDLE_PYTHON"  # the interpreter that byte-compiles the bundle
# The .pyc header's flags word (PEP 552): bit 0 = hash-based, bit 1 = check the source.
PYC_FLAGS_UNCHECKED_HASH = 0b01

_ELF_MACHINES = {"x86_64": 62, "aarch64": 183}
_PLATFORM_RE = re.compile(r"manylinux(?:(?P<legacy>1|2010|2014)|_(?P<major>\d+)_(?P<minor>\d+))_(?P<arch>x86_64|aarch64)")
_LEGACY_GLIBC = {"1": 5, "2010": 12, "2014": 17}
_WHEEL_RE = re.compile(
    r"(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl"
)
_SHARED_OBJECT_RE = re.compile(r"\.so(?:\.\d+)*$")


class BundleError(RuntimeError):
    """The bundle cannot be built as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    size: int  # bytes of the zip
    unpacked_size: int  # bytes of all files once Lambda unpacks it
    platform: str
    python_version: str
    pyc_files: int = 0  # byte-compiled modules shipped (0: built without an interpreter of the target version)
    pyc_bytes: int = 0  # their unpacked size, included in unpacked_size
    compiler: str | None = None  # the interpreter that compiled them


# ------------------------------------------------------------------------------ target platform


def _python_tuple(python_version: str) -> tuple[int, int]:
    match = re.fullmatch(r"3\.(\d+)", python_version.strip())
    if not match:
        raise BundleError(f"python version {python_version!r} is not of the form 3.N (e.g. 3.12)")
    return 3, int(match.group(1))


def _glibc_ceiling(python_version: str) -> int:
    """The newest manylinux_2_N the Lambda runtime for this Python can load."""
    return 28 if _python_tuple(python_version) >= (3, 12) else 26


def platform_tags(platform: str, python_version: str) -> list[str]:
    """Every manylinux tag pip may accept for the target, most preferred (newest glibc) first.

    pip does not expand ``--platform`` to older manylinux versions nor to the PEP 600 spelling of
    the legacy names, so they are passed one by one; a wheel tagged only ``manylinux_2_28`` (many
    cryptography and lxml releases) is found only when that tag is passed explicitly.
    """
    match = _PLATFORM_RE.fullmatch(platform)
    if not match:
        raise BundleError(
            f"platform {platform!r} is not a manylinux platform for x86_64 or aarch64 "
            "(e.g. manylinux2014_aarch64 or manylinux_2_28_x86_64)"
        )
    arch = match["arch"]
    floor = 17 if arch == "aarch64" else 5  # no aarch64 manylinux before 2014 (glibc 2.17)
    named = _LEGACY_GLIBC[match["legacy"]] if match["legacy"] else int(match["minor"])
    ceiling = max(_glibc_ceiling(python_version), named)
    tags = []
    for minor in range(ceiling, floor - 1, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        tags += [f"manylinux{name}_{arch}" for name, glibc in _LEGACY_GLIBC.items() if glibc == minor]
    return [tag for tag in tags if arch == "x86_64" or not tag.startswith(("manylinux1_", "manylinux2010_"))]


def _supported_wheel_tags(python_version: str, platforms: list[str]) -> set[tuple[str, str, str]]:
    major, minor = _python_tuple(python_version)
    cp = f"cp{major}{minor}"
    tags: set[tuple[str, str, str]] = set()
    for plat in [*platforms, "any"]:
        if plat != "any":
            tags |= {(cp, cp, plat), (cp, "none", plat)}
            tags |= {(f"cp{major}{m}", "abi3", plat) for m in range(2, minor + 1)}
        else:
            tags.add((cp, "none", "any"))
        tags |= {(f"py{major}{m}", "none", plat) for m in range(minor + 1)}
        tags.add((f"py{major}", "none", plat))
    return tags


def _wheel_tags(filename: str) -> set[tuple[str, str, str]]:
    match = _WHEEL_RE.fullmatch(filename)
    if not match:
        raise BundleError(f"{filename} is not a wheel file name")
    return {
        (py, abi, plat)
        for py in match["py"].split(".")
        for abi in match["abi"].split(".")
        for plat in match["plat"].split(".")
    }


def _target_arch(platform: str) -> str:
    return _PLATFORM_RE.fullmatch(platform)["arch"]


def _target_environment(python_version: str, platform: str) -> dict[str, str]:
    """PEP 508 marker values of the Lambda runtime (pip evaluates markers for *this* interpreter)."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python_version}.0",
        "os_name": "posix",
        "platform_machine": _target_arch(platform),
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python_version}.0",
        "python_version": python_version,
        "sys_platform": "linux",
    }


# ------------------------------------------------------------------------------ wheel cache


def _requirements_text(requirements: Path, seen: frozenset[Path] = frozenset()) -> str:
    """The requirements file with every file it includes (-r, -c), for the cache key."""
    requirements = requirements.resolve()
    if requirements in seen:
        raise BundleError(f"{requirements} includes itself")
    try:
        text = requirements.read_text(encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"cannot read the requirements file {requirements}: {exc.strerror}") from None
    parts = [f"# {requirements.name}\n{text}"]
    for line in text.splitlines():
        option = re.match(r"\s*(?:-r|-c|--requirement|--constraint)[\s=]+(\S+)", line)
        if option:
            parts.append(_requirements_text(requirements.parent / option.group(1), seen | {requirements}))
    return "\n".join(parts)


def _requirement_lines(requirements: Path) -> list[str]:
    """The requirement specifiers of a requirements file and the files it includes with -r."""
    text = requirements.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        include = re.match(r"(?:-r|--requirement)[\s=]+(\S+)", line)
        if include:
            lines += _requirement_lines(requirements.parent / include.group(1))
        elif line and not line.startswith("-"):
            lines.append(re.split(r"\s--", line, maxsplit=1)[0].strip())  # drop per-line options (--hash)
    return lines


def _cache_key(requirements: Path, platforms: list[str], python_version: str) -> str:
    material = json.dumps(
        {
            "format": CACHE_FORMAT,
            "requirements": _requirements_text(requirements),
            "platforms": platforms,
            "python_version": python_version,
            "implementation": "cp",
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_wheels(directory: Path) -> list[Path] | None:
    """The wheels of a complete cache entry whose files still match its manifest, else None."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        wheels = [directory / name for name in sorted(manifest["wheels"])]
        if all(_sha256_file(wheel) == manifest["wheels"][wheel.name] for wheel in wheels):
            return wheels
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def download_wheels(requirements: Path, cache_dir: Path, platform: str, python_version: str) -> tuple[list[Path], bool]:
    """The target's wheels for ``requirements`` (downloaded once, then from the cache).

    Returns (wheels, from_cache).
    """
    platforms = platform_tags(platform, python_version)
    entry = cache_dir / _cache_key(requirements, platforms, python_version)[:32]
    wheels = _cached_wheels(entry)
    if wheels is not None:
        return wheels, True

    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        command = [
            sys.executable, "-m", "pip", "download",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
            *[arg for tag in platforms for arg in ("--platform", tag)],
            "-r", str(requirements), "-d", str(staging),
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--quiet",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise BundleError(
                f"pip could not download manylinux wheels for {platform} / Python {python_version} "
                f"(a requirement without a wheel for this platform cannot go into a Lambda bundle):\n"
                f"{(result.stderr or result.stdout).strip()[-4000:]}"
            )
        found = sorted(staging.iterdir())
        strays = [path.name for path in found if path.suffix != ".whl"]
        if strays:
            raise BundleError(f"pip downloaded something that is not a wheel: {', '.join(strays)}")
        manifest = {"wheels": {path.name: _sha256_file(path) for path in found}, "platform": platform,
                    "python_version": python_version, "platforms": platforms}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        try:
            staging.rename(entry)
        except OSError:
            # Another build filled this entry first; it has the same inputs, so either copy is fine.
            if _cached_wheels(entry) is None:
                shutil.rmtree(entry, ignore_errors=True)
                staging.rename(entry)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    wheels = _cached_wheels(entry)
    if wheels is None:
        raise BundleError(f"the wheel cache entry {entry} is unreadable right after writing it")
    return wheels, False


def _check_wheels(wheels: list[Path], platform: str, python_version: str) -> None:
    supported = _supported_wheel_tags(python_version, platform_tags(platform, python_version))
    wrong = [wheel.name for wheel in wheels if not (_wheel_tags(wheel.name) & supported)]
    if wrong:
        raise BundleError(f"wheels that do not fit {platform} / Python {python_version}: {', '.join(wrong)}")


def _check_dependency_closure(wheels: list[Path], requirements: Path, platform: str, python_version: str) -> list[str]:
    """Re-resolve the requirements with the *target's* markers over the downloaded wheels.

    pip evaluates environment markers for the interpreter it runs on, not for --python-version
    and --platform; a dependency needed only on the target would be silently missing. Returns
    the names of distributions the target does not need (kept, but reported). Needs
    ``packaging`` (present wherever pip and pytest are); skipped without it.
    """
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name
    except ImportError:
        return []
    environment = _target_environment(python_version, platform)
    metadata: dict[str, tuple[str, list[str]]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            name = next((n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)), None)
            if name is None:
                raise BundleError(f"{wheel.name} has no .dist-info/METADATA")
            headers = HeaderParser().parsestr(archive.read(name).decode("utf-8", "replace"))
        metadata[canonicalize_name(headers["Name"])] = (headers["Version"], headers.get_all("Requires-Dist") or [])

    def parse(line: str):
        try:
            return Requirement(line)
        except InvalidRequirement as exc:
            raise BundleError(f"cannot read the requirement {line!r}: {exc}") from None

    def applies(req, extra: str) -> bool:
        return req.marker is None or req.marker.evaluate({**environment, "extra": extra})

    queue = [req for req in map(parse, _requirement_lines(requirements)) if applies(req, "")]
    needed: set[tuple[str, str]] = set()
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        if name not in metadata:
            raise BundleError(
                f"{req} is needed on {platform} / Python {python_version} but pip did not download it "
                "(pip evaluates markers for the interpreter it runs on: build with a Python of the "
                "target version, or add the requirement to the requirements file)"
            )
        if not req.specifier.contains(metadata[name][0], prereleases=True):
            raise BundleError(f"{req} is needed but pip downloaded {name} {metadata[name][0]}")
        for extra in ("", *sorted(req.extras)):
            if (name, extra) not in needed:
                needed.add((name, extra))
                queue += [dep for dep in map(parse, metadata[name][1]) if applies(dep, extra)]
    return sorted(set(metadata) - {name for name, _ in needed})


# ------------------------------------------------------------------------------ bundle contents


@dataclass(frozen=True)
class _Entry:
    arcname: str
    size: int
    mode: int  # 0o644 or 0o755
    origin: str  # the wheel's file name, or "source"
    wheel: Path | None  # read from this wheel ...
    member: str | None  # ... this member
    file: Path | None  # or from this file
    crc: int | None  # the wheel's CRC, to compare duplicates cheaply
    data: bytes | None = None  # or these bytes (the .pyc files compiled here)


def _safe_arcname(name: str, origin: str) -> str:
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))
    ):
        raise BundleError(f"{origin} holds an unsafe path {name!r}")
    return name


def _dropped(arcname: str) -> bool:
    # A wheel's own bytecode (rare, and for whichever Python built it) is dropped; the bundle's
    # .pyc files are compiled below, for the target version, from exactly the sources shipped.
    parts = arcname.split("/")
    return "__pycache__" in parts or arcname.endswith((".pyc", ".pyo"))


def _wheel_entries(wheel: Path) -> list[_Entry]:
    entries = []
    with zipfile.ZipFile(wheel) as archive:
        data_dirs = {n.split("/", 1)[0] for n in archive.namelist() if re.match(r"[^/]+\.data/", n)}
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = _safe_arcname(info.filename, wheel.name)
            unix_mode = info.external_attr >> 16
            if stat.S_ISLNK(unix_mode):
                raise BundleError(f"{wheel.name} holds a symbolic link {name!r}")
            top, _, rest = name.partition("/")
            if top in data_dirs:
                # <dist>.data/purelib and platlib install into site-packages; scripts, headers and
                # data install elsewhere and mean nothing to a Lambda.
                kind, _, rest = rest.partition("/")
                if kind not in ("purelib", "platlib") or not rest:
                    continue
                name = _safe_arcname(rest, wheel.name)
            if _dropped(name):
                continue
            mode = 0o755 if unix_mode & 0o111 else 0o644
            entries.append(_Entry(name, info.file_size, mode, wheel.name, wheel, info.filename, None, info.CRC))
    return entries


def _source_entries(package_dir: Path) -> list[_Entry]:
    entries = []
    for directory, dirnames, filenames in os.walk(package_dir):
        here = Path(directory)
        relative = here.relative_to(package_dir)
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d != "__pycache__" and not d.endswith(".egg-info")
            and not (relative == Path(".") and d in EXCLUDED_SUBPACKAGES)
        )  # fmt: skip
        for filename in sorted(filenames):
            if filename.startswith(".") or filename.endswith(("~", ".swp")):
                continue
            path = here / filename
            if path.is_symlink() or not path.is_file():
                raise BundleError(f"{path} is not a regular file; the bundle takes regular files only")
            arcname = _safe_arcname(PurePosixPath(PACKAGE, *relative.parts, filename).as_posix(), str(package_dir))
            if _dropped(arcname):
                continue
            entries.append(_Entry(arcname, path.stat().st_size, 0o644, "source", None, None, path, None))
    return entries


def _merge(entries: list[_Entry]) -> dict[str, _Entry]:
    merged: dict[str, _Entry] = {}
    for entry in entries:
        other = merged.get(entry.arcname)
        if other is None:
            merged[entry.arcname] = entry
        elif _read(other) != _read(entry):
            raise BundleError(f"{entry.arcname} comes from both {other.origin} and {entry.origin} with different contents")
    return merged


def _read(entry: _Entry) -> bytes:
    with _Reader() as reader:
        return reader.read(entry)


class _Reader:
    """Reads entries' bytes, keeping each wheel open once (a wheel has thousands of members)."""

    def __init__(self) -> None:
        self._wheels: dict[Path, zipfile.ZipFile] = {}

    def read(self, entry: _Entry) -> bytes:
        if entry.data is not None:
            return entry.data
        if entry.file is not None:
            return entry.file.read_bytes()
        archive = self._wheels.get(entry.wheel)
        if archive is None:
            archive = self._wheels[entry.wheel] = zipfile.ZipFile(entry.wheel)
        return archive.read(entry.member)

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc_info) -> None:
        for archive in self._wheels.values():
            archive.close()
        self._wheels.clear()


# ------------------------------------------------------------------------------ handler imports


def _module_name(package_dir: Path, path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _python_modules(package_dir: Path, *, include_excluded: bool) -> dict[str, Path]:
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if "__pycache__" in relative.parts or any(p.startswith(".") for p in relative.parts):
            continue
        if not include_excluded and relative.parts[0] in EXCLUDED_SUBPACKAGES:
            continue
        modules[_module_name(package_dir, path)] = path
    return modules


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise BundleError(f"{path} does not parse: {exc.msg} (line {exc.lineno})") from None


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package-internal modules ``module`` imports anywhere in its body (also lazily)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level - 1 >= len(base_parts):
                    continue
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
    internal = set()
    for name in found:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            parts = name.split(".")
            internal |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # parents are imported too
    return internal


def handler_modules(source: Path = DEFAULT_SOURCE) -> list[str]:
    """The Lambda entry points: the known handlers plus every module outside ``local/`` that
    defines a top-level ``lambda_handler``."""
    package_dir = source / PACKAGE
    found = set(HANDLER_MODULES)
    for module, path in _python_modules(package_dir, include_excluded=False).items():
        if any(isinstance(node, ast.FunctionDef) and node.name == "lambda_handler" for node in _parse(path).body):
            found.add(module)
    return sorted(found)


def check_handler_imports(source: Path = DEFAULT_SOURCE) -> list[str]:
    """Refuse a package whose handlers import (even lazily) anything from ``devicegate/local/``.

    Returns the handler modules checked.
    """
    package_dir = source / PACKAGE
    everything = _python_modules(package_dir, include_excluded=True)
    shipped = _python_modules(package_dir, include_excluded=False)
    excluded = tuple(f"{PACKAGE}.{name}" for name in EXCLUDED_SUBPACKAGES)
    handlers = handler_modules(source)
    missing = [module for module in handlers if module not in shipped]
    if missing:
        raise BundleError(f"handler modules missing from {package_dir}: {', '.join(missing)}")
    known = set(everything)
    for handler in handlers:
        chain = {handler: [handler]}
        queue = [handler]
        while queue:
            module = queue.pop(0)
            if module not in everything:
                continue
            for imported in sorted(_imports(module, everything[module], known)):
                if imported in chain:
                    continue
                chain[imported] = [*chain[module], imported]
                if imported in excluded or imported.startswith(tuple(f"{name}." for name in excluded)):
                    raise BundleError(
                        f"the Lambda handler {handler} imports {imported}, which is not shipped "
                        f"(import chain: {' -> '.join(chain[imported])}); move what it needs out of "
                        f"{PACKAGE}/{'/'.join(EXCLUDED_SUBPACKAGES)}/"
                    )
                queue.append(imported)
    return handlers


# ------------------------------------------------------------------------------ bytecode


@dataclass(frozen=True)
class BytecodeCompiler:
    """An interpreter of the target version, verified by asking it (not by trusting its name)."""

    executable: str
    cache_tag: str  # "cpython-312": the .pyc file names CPython 3.12 looks for
    magic: bytes  # its importlib.util.MAGIC_NUMBER: the first 4 bytes of every .pyc it writes


_PROBE = (
    "import importlib.util, json, sys; print(json.dumps({'impl': sys.implementation.name, "
    "'version': list(sys.version_info[:2]), 'level': sys.version_info.releaselevel, "
    "'cache_tag': sys.implementation.cache_tag, 'magic': importlib.util.MAGIC_NUMBER.hex(), "
    "'executable': sys.executable}))"
)


def _probe(executable: str, python_version: str) -> tuple[BytecodeCompiler | None, str]:
    """The compiler ``executable`` is, or None and why not."""
    try:
        result = subprocess.run([executable, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{executable} does not run ({exc})"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"{executable} exits {result.returncode} ({last})"
    try:
        info = json.loads(result.stdout.strip().splitlines()[-1])
        major, minor = _python_tuple(python_version)
        version = "{}.{}".format(*info["version"])
        tag = f"cpython-{major}{minor}"
        if info["impl"] != "cpython" or tuple(info["version"]) != (major, minor) or info["cache_tag"] != tag:
            return None, f"{executable} is {info['impl']} {version} ({info['cache_tag']}), not CPython {python_version}"
        if info["level"] != "final":
            # A pre-release's magic number may differ from the released one the runtime has.
            return None, f"{executable} is a {info['level']} pre-release of {version}"
        return BytecodeCompiler(info["executable"] or executable, tag, bytes.fromhex(info["magic"])), ""
    except (ValueError, KeyError, TypeError, IndexError):
        return None, f"{executable} did not answer the version probe"


def _version_key(path: str) -> list[int]:
    return [int(number) for number in re.findall(r"\d+", Path(path).parent.parent.name)]


def find_bytecode_compiler(python_version: str) -> tuple[BytecodeCompiler | None, list[str]]:
    """The interpreter that byte-compiles the bundle, or None; and what was tried and why not.

    ``$DEVICEGATE_BUNDLE_PYTHON`` if set (it must work: a configured interpreter that is not
    CPython ``python_version`` is an error), else ``python3.N`` on PATH, else pyenv's installs of
    3.N (``$PYENV_ROOT/versions/3.N.*``, newest first: a pyenv shim fails when 3.N is not the
    selected version).
    """
    configured = os.environ.get(BUNDLE_PYTHON_ENV, "").strip()
    if configured:
        compiler, why = _probe(shutil.which(configured) or configured, python_version)
        if compiler is None:
            raise BundleError(f"{BUNDLE_PYTHON_ENV}={configured} cannot byte-compile for Python {python_version}: {why}")
        return compiler, []
    candidates = []
    on_path = shutil.which(f"python{python_version}")
    if on_path:
        candidates.append(on_path)
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv"))
    installs = (pyenv_root / "versions").glob(f"{python_version}.*/bin/python{python_version}")
    candidates += sorted(map(str, installs), key=_version_key, reverse=True)
    tried = []
    for candidate in candidates:
        compiler, why = _probe(candidate, python_version)
        if compiler is not None:
            return compiler, tried
        tried.append(why)
    return None, tried or [f"no python{python_version} on PATH and none under {pyenv_root}/versions"]


def _pyc_arcname(arcname: str, cache_tag: str) -> str:
    source = PurePosixPath(arcname)
    return (source.parent / "__pycache__" / f"{source.stem}.{cache_tag}.pyc").as_posix()


# Runs under the target's interpreter: compiles (source, pyc) pairs below argv[1] read from stdin,
# prints {source: error} for those that do not compile.
_COMPILE = r"""
import json, os, py_compile, sys
root, failed = sys.argv[1], {}
for source, target in json.load(sys.stdin):
    try:
        py_compile.compile(
            os.path.join(root, source), cfile=os.path.join(root, target), dfile=source, doraise=True,
            optimize=0, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except py_compile.PyCompileError as exc:
        failed[source] = (exc.msg.strip().splitlines() or ["?"])[-1][:300]
print(json.dumps(failed))
"""


def byte_compile(entries: dict[str, _Entry], compiler: BytecodeCompiler) -> tuple[dict[str, _Entry], dict[str, str]]:
    """The ``__pycache__/<name>.<cache tag>.pyc`` entry of every ``.py`` entry; and the sources
    that do not compile (kept as source only; none of them may be ours).

    How, and why:

    * Invalidation mode UNCHECKED_HASH (PEP 552): the header holds a hash of the source instead
      of its mtime and size, and the flags tell the loader not to check it. No mtime means the
      bytes depend on the source alone (and the zip's timestamps are normalised to 1980 anyway,
      so an mtime-stamped .pyc would not match the unpacked source: the loader would compile
      from source and, in a read-only directory, throw the result away). Not checking means
      an import does not even read and hash the .py. That is right because the bundle is
      immutable: source and .pyc come from one build and a deployed function's code never
      changes; a new build compiles afresh.
    * Optimisation level 0: asserts and docstrings kept, the code that runs is the code tested;
      and level 0 is the ``.pyc`` name the runtime looks for (it runs without -O).
    * PYTHONHASHSEED=0 and a replaced environment: since 3.11 marshal sorts a frozenset's
      elements (set literals), so the seed should not matter (checked: same bytes with seeds
      1, 2, 3); it is fixed anyway, so no build depends on a random seed or on PYTHON* settings.
    * The code's file name is the path inside the bundle; the loader replaces it with the real
      path (``/var/task/...``) on import, so tracebacks are unchanged.
    """
    sources = sorted(name for name in entries if name.endswith(".py"))
    with tempfile.TemporaryDirectory(prefix="devicegate-bytecode-") as tmp:
        root = Path(tmp)
        pairs = [(name, _pyc_arcname(name, compiler.cache_tag)) for name in sources]
        with _Reader() as reader:
            for name in sources:
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(reader.read(entries[name]))
        environment = {"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        result = subprocess.run(
            # Not -I/-E: they would ignore PYTHONHASHSEED; the environment is replaced instead.
            [compiler.executable, "-s", "-S", "-W", "ignore", "-c", _COMPILE, str(root)],
            input=json.dumps(pairs), env=environment, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if result.returncode != 0:
            raise BundleError(f"{compiler.executable} failed to byte-compile the bundle:\n{result.stderr.strip()[-4000:]}")
        failed = json.loads(result.stdout.strip().splitlines()[-1])
        ours = sorted(name for name in failed if name.split("/", 1)[0] == PACKAGE)
        if ours:
            raise BundleError(
                f"{PACKAGE} does not compile under Python {compiler.cache_tag}: "
                + "; ".join(f"{name}: {failed[name]}" for name in ours)
            )
        compiled = {}
        for source, target in pairs:
            if source in failed:
                continue
            data = (root / target).read_bytes()
            if data[:4] != compiler.magic or int.from_bytes(data[4:8], "little") != PYC_FLAGS_UNCHECKED_HASH:
                raise BundleError(
                    f"{target} has header {data[:8].hex()}, not magic {compiler.magic.hex()} with the "
                    f"unchecked-hash flag: {compiler.executable} is not the interpreter it claimed to be"
                )
            compiled[target] = _Entry(target, len(data), 0o644, entries[source].origin, None, None, None, None, data)
    return compiled, failed


# ------------------------------------------------------------------------------ the zip


def _check_elf(arcname: str, head: bytes, arch: str) -> None:
    if head[:4] != b"\x7fELF":
        if _SHARED_OBJECT_RE.search(arcname):
            raise BundleError(f"{arcname} is named like a shared object but is not an ELF file")
        return
    byteorder = "little" if head[5:6] == b"\x01" else "big"
    machine = int.from_bytes(head[18:20], byteorder)
    if machine != _ELF_MACHINES[arch]:
        raise BundleError(f"{arcname} is an ELF file for machine {machine}, not {arch} ({_ELF_MACHINES[arch]})")


def _write_zip(entries: dict[str, _Entry], target: Path, arch: str) -> None:
    with _Reader() as reader, zipfile.ZipFile(
        target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=DEFLATE_LEVEL
    ) as bundle:
        for arcname in sorted(entries):
            entry = entries[arcname]
            data = reader.read(entry)
            _check_elf(arcname, data[:20], arch)
            info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, so the permission bits below are honoured
            info.external_attr = (stat.S_IFREG | entry.mode) << 16
            bundle.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=DEFLATE_LEVEL)


def _size_report(entries: dict[str, _Entry]) -> str:
    per_origin: dict[str, int] = {}
    for entry in entries.values():
        per_origin[entry.origin] = per_origin.get(entry.origin, 0) + entry.size
    biggest = sorted(per_origin.items(), key=lambda item: -item[1])[:5]
    return ", ".join(f"{origin} {size / 2**20:.1f} MiB" for origin, size in biggest)


def build_bundle(
    source: Path = DEFAULT_SOURCE,
    requirements: Path = DEFAULT_REQUIREMENTS,
    out_dir: Path = DEFAULT_OUT,
    *,
    platform: str = "manylinux2014_aarch64",
    python_version: str = "3.12",
    cache_dir: Path | None = None,
    bytecode: bool = True,
    log=None,
) -> Bundle:
    """Build (or rebuild identically) the Lambda bundle; returns where it is and what it weighs.

    ``cache_dir`` holds the downloaded wheels (default: ``wheel-cache`` next to ``out_dir``).
    ``bytecode=False`` ships no ``.pyc`` files (for comparisons; see ``byte_compile``).
    ``log`` gets one-line progress messages (default: silent).
    """
    say = log or (lambda message: None)
    source, requirements, out_dir = Path(source), Path(requirements), Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir.parent / "wheel-cache"
    platform_tags(platform, python_version)  # validates both, with a clear error
    arch = _target_arch(platform)
    package_dir = source / PACKAGE
    if not (package_dir / "__init__.py").is_file():
        raise BundleError(f"{package_dir} is not the {PACKAGE} package (no __init__.py)")

    handlers = check_handler_imports(source)
    say(f"handlers checked (nothing imported from {PACKAGE}/local/): {', '.join(handlers)}")

    started = time.monotonic()
    wheels, from_cache = download_wheels(requirements, cache_dir, platform, python_version)
    say(f"{len(wheels)} wheels {'from the cache' if from_cache else 'downloaded'} in {time.monotonic() - started:.1f}s")
    _check_wheels(wheels, platform, python_version)
    unneeded = _check_dependency_closure(wheels, requirements, platform, python_version)
    if unneeded:
        say(f"note: not needed on the target but downloaded by pip (kept): {', '.join(unneeded)}")

    entries = [entry for wheel in wheels for entry in _wheel_entries(wheel)]
    if any(e.arcname.split("/", 1)[0] == PACKAGE for e in entries):
        raise BundleError(f"a requirement ships a top-level {PACKAGE}/ of its own")
    merged = _merge(entries + _source_entries(package_dir))
    _check_unpacked_size(merged)  # before compiling: refuse early
    compiled, compiler = _bytecode(merged, python_version, bytecode, say)
    merged.update(compiled)
    unpacked = _check_unpacked_size(merged)

    out_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".bundle-", suffix=".zip", dir=out_dir)
    os.close(handle)
    temporary = Path(temporary)
    try:
        _write_zip(merged, temporary, arch)
        digest = _sha256_file(temporary)
        final = out_dir / f"{PACKAGE}-{platform}-py{python_version}-{digest[:16]}.zip"
        os.chmod(temporary, 0o644)
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    size = final.stat().st_size
    if size > LAMBDA_DIRECT_UPLOAD_LIMIT:
        say(f"note: {size / 2**20:.1f} MiB zipped is over the 50 MiB direct-upload limit: upload it through S3")
    say(f"{len(merged)} files; biggest parts: {_size_report(merged)}")
    pyc_bytes = sum(entry.size for entry in compiled.values())
    return Bundle(final, digest, size, unpacked, platform, python_version, len(compiled), pyc_bytes, compiler)


def _check_unpacked_size(entries: dict[str, _Entry]) -> int:
    unpacked = sum(entry.size for entry in entries.values())
    if unpacked >= LAMBDA_UNPACKED_LIMIT:
        raise BundleError(
            f"the bundle unpacks to {unpacked:,} bytes ({unpacked / 2**20:.1f} MiB), over Lambda's limit "
            f"of {LAMBDA_UNPACKED_LIMIT:,} bytes (250 MiB). Biggest parts: {_size_report(entries)}. "
            "Drop a requirement or move it to a layer/container image."
        )
    return unpacked


def _bytecode(entries: dict[str, _Entry], python_version: str, wanted: bool, say) -> tuple[dict[str, _Entry], str | None]:
    """The .pyc entries for ``entries`` (none without an interpreter of the target version), and
    the interpreter that compiled them."""
    if not wanted:
        say("byte-compilation turned off: the bundle ships no .pyc files")
        return {}, None
    compiler, tried = find_bytecode_compiler(python_version)
    if compiler is None:
        say(
            f"WARNING: no Python {python_version} interpreter to byte-compile with ({'; '.join(tried)}). "
            f"The bundle ships NO .pyc files: every cold start will compile each imported module from "
            f"source. Install Python {python_version} or set {BUNDLE_PYTHON_ENV}=/path/to/python{python_version}."
        )
        return {}, None
    started = time.monotonic()
    compiled, failed = byte_compile(entries, compiler)
    size = sum(entry.size for entry in compiled.values())
    say(
        f"{len(compiled)} modules byte-compiled in {time.monotonic() - started:.1f}s by {compiler.executable} "
        f"({compiler.cache_tag}, magic {compiler.magic.hex()}, unchecked-hash, optimisation 0): "
        f"+{size / 2**20:.1f} MiB unpacked"
    )
    if failed:
        say(f"note: {len(failed)} files do not compile under Python {python_version} (shipped as source only): "
            + ", ".join(sorted(failed)[:10]) + (" ..." if len(failed) > 10 else ""))
    return compiled, compiler.executable


# ------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", default="manylinux2014_aarch64", help="manylinux platform (default: %(default)s)")
    parser.add_argument("--python-version", default="3.12", help="Lambda Python runtime version (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: build/lambda)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="wheel cache (default: <out>/../wheel-cache)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=argparse.SUPPRESS)
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--no-bytecode", action="store_true", help="ship no .pyc files (for comparisons)")
    parser.add_argument("--quiet", action="store_true", help="print only the result")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        bundle = build_bundle(
            args.source, args.requirements, args.out, platform=args.platform, python_version=args.python_version,
            cache_dir=args.cache_dir, bytecode=not args.no_bytecode,
            log=None if args.quiet else (lambda m: print(m, file=sys.stderr)),
        )  # fmt: skip
    except BundleError as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    print(f"path:     {bundle.path}")
    print(f"sha256:   {bundle.sha256}")
    print(f"zipped:   {bundle.size:,} bytes ({bundle.size / 2**20:.1f} MiB)")
    print(
        f"unpacked: {bundle.unpacked_size:,} bytes ({bundle.unpacked_size / 2**20:.1f} MiB; "
        f"{100 * bundle.unpacked_size / LAMBDA_UNPACKED_LIMIT:.0f}% of Lambda's 250 MiB)"
    )
    if bundle.pyc_files:
        print(f"bytecode: {bundle.pyc_files} .pyc files, {bundle.pyc_bytes:,} bytes, by {bundle.compiler}")
    else:
        print("bytecode: none (no .pyc files: each cold start compiles from source)")
    print(f"target:   {bundle.platform}, Python {bundle.python_version} ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
