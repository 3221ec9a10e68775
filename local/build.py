"""``barrage build --workload-class fc``: the code package that s.yaml deploys.

The package holds the project's ``handlers`` and ``functions`` packages plus their runtime
dependencies as **Linux x86_64 CPython 3.10 wheels** (FC's python3.10 runtime, Debian 10,
glibc 2.28), never this machine's own builds: compiled wheels (confluent-kafka, crc32c,
numpy, protobuf's upb...) differ by ABI.

Two steps, so that only the first needs the network:

1. ``pip download`` fills a wheelhouse (default ``.barrage/wheelhouse/cp310-manylinux_x86_64``)
   once; ``--download-only`` stops there (the test set-up runs this).
2. ``pip install --no-index --find-links WHEELHOUSE --target ...`` for the target platform,
   bytecode compiled by an interpreter of the target version, then a deterministic zip: sorted
   entries, fixed timestamps and modes, so the same input gives the same zip hash.

The package carries its bytecode because FC's ``/code`` is read-only (Alibaba Cloud's FAQ
"[Errno 30] Read-only file system: '/code/...'"): without ``__pycache__`` there, every cold start
compiles every module it imports, from this package's and the dependencies' sources alike. The
``.pyc`` files are hash-checked (PEP 552): they hold no timestamp, so they are reproducible, and
Python still recompiles a module whose source no longer matches (an edit in FC's console).
Bytecode is specific to a Python version; without an interpreter of the target version on this
machine the package is built without it, and the build says so.

Size limits, from Alibaba Cloud's "Function Compute 3.0 limits" page: a code package is at
most 500 MB as a ZIP uploaded by the console, Serverless Devs or OSS (the ``s deploy`` path,
enforced here), and 100 MB when a base64 ZIP goes through the SDK/OpenAPI (warned about).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import click

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("handlers", "functions")
# What a custom.debian10 function runs (FC starts ./bootstrap in the package root); executable.
PROJECT_FILES = ("bootstrap",)
# Needed by the local tooling or by Knative's functions-framework, not by FC's runtimes. uvloop and
# httptools stay in: the custom runtime's server is uvicorn on them, as everywhere else (and
# httptools' parser imports in a fifth of h11's time, on every custom-runtime cold start).
NOT_IN_FC_PACKAGE = frozenset({"functions-framework", "aliyun-fc2", "click", "pyyaml"})
# FC python3.10 runs on Debian 10 (glibc 2.28): manylinux2014 (glibc 2.17) and manylinux_2_28 wheels fit.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
ZIP_LIMIT_BYTES = 500 * 1024 * 1024
SDK_UPLOAD_LIMIT_BYTES = 100 * 1024 * 1024
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class BuildError(RuntimeError):
    """One line for the terminal."""


@dataclass(frozen=True)
class BuildResult:
    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    files: int
    sha256: str
    bytecode: bool = False  # the package carries .pyc files of the target version


def runtime_requirements(distribution: str = "barrage") -> list[str]:
    """The project's own dependencies (no extras) minus what only local tooling needs."""
    requirements = []
    for requirement in metadata.requires(distribution) or []:
        if "extra ==" in requirement.replace('"', "").replace("'", ""):
            continue
        spec = requirement.split(";")[0].strip()
        name = re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")
        if name not in NOT_IN_FC_PACKAGE:
            requirements.append(spec)
    return sorted(requirements)


def default_wheelhouse(python_version: str) -> Path:
    return REPO_ROOT / ".barrage" / "wheelhouse" / f"cp{python_version.replace('.', '')}-manylinux_x86_64"


def _platform_args(python_version: str) -> list[str]:
    args = []
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return [*args, "--python-version", python_version, "--implementation", "cp", "--only-binary=:all:"]


def _pip(args: Sequence[str]) -> None:
    completed = subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
                               capture_output=True, text=True)
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.splitlines() if line.startswith("ERROR")]
        raise BuildError(f"pip {args[0]} failed: {lines[0] if lines else completed.stderr.strip()[-300:]}")


def _target_environment(python_version: str) -> dict[str, str]:
    return {"python_version": python_version, "python_full_version": f"{python_version}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "extra": ""}


def target_only_requirements(wheelhouse: Path, python_version: str) -> list[str]:
    """Dependencies whose markers hold on the target Python but not on this one.

    pip evaluates environment markers against the interpreter it runs on, even with
    ``--python-version``: building for 3.10 from 3.11 would leave out e.g. aiohttp's
    ``async-timeout; python_version < "3.11"``. These are added by hand.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    target = _target_environment(python_version)
    found: set[str] = set()
    for wheel in sorted(wheelhouse.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            meta = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
            if meta is None:
                continue
            lines = archive.read(meta).decode("utf-8", "replace").splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            try:
                requirement = Requirement(line.split(":", 1)[1].strip())
            except InvalidRequirement:
                continue
            marker = requirement.marker
            if marker is None or not marker.evaluate(target) or marker.evaluate({"extra": ""}):
                continue
            requirement.marker = None
            found.add(str(requirement))
    return sorted(found)


def download(requirements: Sequence[str], wheelhouse: Path, python_version: str) -> None:
    """Fills the wheelhouse from the package index (the only step that needs the network)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    wanted = list(requirements)
    for _ in range(5):  # a target-only dependency may bring its own
        _pip(["download", "--quiet", "--dest", str(wheelhouse), *_platform_args(python_version), *wanted])
        extra = [r for r in target_only_requirements(wheelhouse, python_version) if r not in wanted]
        if not extra:
            return
        wanted += extra


def install(requirements: Sequence[str], wheelhouse: Path, target: Path, python_version: str) -> None:
    if not wheelhouse.is_dir():
        raise BuildError(f"no wheelhouse at {wheelhouse}: run `barrage build --workload-class fc --download-only`")
    wanted = [*requirements, *target_only_requirements(wheelhouse, python_version)]
    _pip(["install", "--quiet", "--no-index", "--find-links", str(wheelhouse), "--target", str(target),
          "--no-compile", *_platform_args(python_version), *wanted])


def copy_project(source: Path, target: Path, packages: Sequence[str] = PROJECT_PACKAGES) -> None:
    for name in PROJECT_FILES:
        if not (source / name).is_file():
            raise BuildError(f"{source / name} is missing")
        shutil.copyfile(source / name, target / name)
        (target / name).chmod(0o755)
    for package in packages:
        root = source / package
        if not root.is_dir():
            raise BuildError(f"{root} is missing")
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(source)
            if "__pycache__" in relative.parts or path.suffix in (".pyc", ".pyo") or not path.is_file():
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


def target_python(python_version: str) -> str | None:
    """An interpreter of the target Python version on this machine (this one, ``pythonX.Y`` on PATH,
    or a pyenv build), or None."""
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    pyenv = os.path.expanduser(f"~/.pyenv/versions/{python_version}.*/bin/python{python_version}")
    candidates: list[str | None] = [sys.executable] if here == python_version else []
    candidates += [shutil.which(f"python{python_version}"), *sorted(glob.glob(pyenv)),
                   f"/usr/bin/python{python_version}"]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)  # a pyenv shim may exist and still fail
        if probe.returncode == 0 and probe.stdout.strip() == python_version:
            return candidate
    return None


def _bytecode_tag(python_version: str) -> str:
    return f".cpython-{python_version.replace('.', '')}.pyc"


def compile_bytecode(root: Path, python: str) -> None:
    """Hash-checked ``__pycache__/*.cpython-XY.pyc`` beside every module under ``root``.

    Paths inside the bytecode are written as ``/code/...`` (where FC unpacks the package), so they
    do not depend on the staging directory. A file that does not compile for this version (a
    dependency's Python 2 leftovers) is left as source, as it would fail to import anyway.
    """
    # A fixed hash seed: marshal writes frozensets (``x in {...}`` constants) in hash order.
    done = subprocess.run([python, "-m", "compileall", "-qq", "-j", "0", "--invalidation-mode", "checked-hash",
                           "-s", str(root), "-p", "/code", str(root)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    if not any(root.glob("functions/__pycache__/*.pyc")):
        raise BuildError(f"compiling the package's bytecode failed: {(done.stderr or done.stdout).strip()[-300:]}")


def _package_files(root: Path, bytecode_tag: str | None = None) -> Iterable[tuple[str, Path]]:
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        relative = path.relative_to(root)
        if not path.is_file():
            continue
        compiled_here = bool(bytecode_tag) and relative.parent.name == "__pycache__" and \
            relative.name.endswith(str(bytecode_tag))
        if ("__pycache__" in relative.parts or path.suffix in (".pyc", ".pyo")) and not compiled_here:
            continue  # only the bytecode compiled here for the target version, never a stray one
        if relative.parts[0] == "bin":  # console scripts pinned to the build machine's interpreter
            continue
        yield relative.as_posix(), path


def write_zip(root: Path, output: Path, bytecode_tag: str | None = None) -> BuildResult:
    """A zip that depends only on file names and contents (``bytecode_tag``: the .pyc files to keep)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".zip.partial")
    unzipped = files = 0
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, path in _package_files(root, bytecode_tag):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the modes below mean what they say
            executable = path.suffix == ".so" or name in PROJECT_FILES
            mode = 0o755 if os.access(path, os.X_OK) and executable else 0o644
            info.external_attr = (0o100000 | mode) << 16
            data = path.read_bytes()
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            unzipped += len(data)
            files += 1
    partial.replace(output)
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    return BuildResult(output, output.stat().st_size, unzipped, files, digest, bytecode=bytecode_tag is not None)


def build_fc_package(output: Path, wheelhouse: Path, python_version: str = "3.10", source: Path = REPO_ROOT,
                     with_dependencies: bool = True, fetch: bool = True,
                     packages: Sequence[str] = PROJECT_PACKAGES) -> BuildResult:
    """The code package: the library (``functions``), the app's own ``packages`` and the dependencies."""
    requirements = runtime_requirements()
    if with_dependencies and fetch:
        download(requirements, wheelhouse, python_version)
    with tempfile.TemporaryDirectory(prefix="barrage-fc-") as staging:
        target = Path(staging) / "code"
        target.mkdir()
        if with_dependencies:
            install(requirements, wheelhouse, target, python_version)
        copy_project(source, target, packages)
        python = target_python(python_version)
        if python is not None:
            compile_bytecode(target, python)
        return write_zip(target, output, _bytecode_tag(python_version) if python is not None else None)


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


@click.command()
@click.option("--workload-class", "workload_class", type=click.Choice(["fc"]), required=True,
              help="fc: the Function Compute code package (Knative ships container images instead).")
@click.option("--app", "app_spec", default=None,
              help="The module holding the app's DEPLOYMENT (module or module:attribute); default: barrage's.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where s.yaml's code points (default: dist/<name>-fc.zip beside the app's s.yaml).")
@click.option("--python-version", default="3.10", show_default=True, help="The FC runtime's Python.")
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Wheel cache. Default: .barrage/wheelhouse/cp<ver>-manylinux_x86_64.")
@click.option("--offline", is_flag=True, help="Use the wheelhouse as it is; contact no index.")
@click.option("--download-only", is_flag=True, help="Only fill the wheelhouse (needs the network), then stop.")
@click.option("--no-deps", "no_deps", is_flag=True, help="Only the project's packages (for inspection).")
@click.option("--max-zipped-mb", type=click.FloatRange(min=0, min_open=True), default=ZIP_LIMIT_BYTES / 1024 / 1024,
              show_default=True, help="Fail above this zipped size (FC: 500 MB through Serverless Devs / OSS).")
def build(workload_class: str, app_spec: str | None, output: Path | None, python_version: str,
          wheelhouse: Path | None, offline: bool, download_only: bool, no_deps: bool, max_zipped_mb: float) -> None:
    """Build the deployable package for a workload class."""
    from local.render import RenderError, load_deployment

    house = wheelhouse or default_wheelhouse(python_version)
    try:
        deployment = load_deployment(app_spec)
    except RenderError as exc:
        click.echo(f"barrage build: {exc}", err=True)
        sys.exit(2)
    packages = ("functions", *deployment.packages)
    output = output or REPO_ROOT / deployment.output_dir / "dist" / f"{deployment.name}-fc.zip"
    try:
        if download_only:
            download(runtime_requirements(), house, python_version)
            click.echo(f"wheelhouse ready: {house} ({len(list(house.glob('*.whl')))} wheels)")
            return
        result = build_fc_package(output, house, python_version, with_dependencies=not no_deps, fetch=not offline,
                                  packages=packages)
    except BuildError as exc:
        click.echo(f"barrage build: {exc}", err=True)
        sys.exit(1)
    limit = int(max_zipped_mb * 1024 * 1024)
    if result.zipped_bytes > limit:
        click.echo(f"barrage build: {result.path} is {_mb(result.zipped_bytes)}, above the {max_zipped_mb:g} MB "
                   "code package limit", err=True)
        sys.exit(1)
    click.echo(f"{result.path}: {_mb(result.zipped_bytes)} zipped, {_mb(result.unzipped_bytes)} unzipped, "
               f"{result.files} files, sha256 {result.sha256}")
    if not result.bytecode:
        click.echo(f"note: no Python {python_version} on this machine, so the package carries no bytecode: FC "
                   "compiles every module it imports on each cold start (its /code is read-only)", err=True)
    if result.zipped_bytes > SDK_UPLOAD_LIMIT_BYTES:
        click.echo(f"note: above the {_mb(SDK_UPLOAD_LIMIT_BYTES)} limit for SDK/OpenAPI uploads; deploy with "
                   "Serverless Devs or through OSS", err=True)
