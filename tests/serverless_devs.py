"""The real Serverless Devs CLI (``s``, npm ``@serverless-devs/s``) for tests, offline.

``./dev test`` installs the pinned CLI into ``.barrage/node``. ``s_preview(template, env)`` runs
``s preview -t TEMPLATE -o json``, which renders a template exactly as ``s deploy`` does before
it calls a component (variables, ``${env()}``, ``${vars.x}``, ``${resources.x...}``), and returns
the rendered document.

What the CLI sees is only what the caller passes: the environment is ``env`` plus ``PATH``
and a fresh temporary ``HOME`` (so no ``~/.s`` credentials or settings are read). That HOME
holds the CLI's own settings for an offline run: analytics off (``s set analysis disable``)
and the update check recorded as just done. Every Node process it starts loads
``tests/offline_guard.cjs``: a connection to anything but loopback, a DNS lookup or a
background process is refused and logged, and the run then fails with ``OfflineViolation``
naming it. A run that takes longer than ``timeout_s`` is killed and fails too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
S_PACKAGE = "@serverless-devs/s"
S_VERSION = "3.1.10"  # the dev script installs the same pin
NODE_DIR = REPO / ".barrage" / "node"
GUARD = Path(__file__).resolve().parent / "offline_guard.cjs"
INSTALL_HINT = f"run ./dev test once (it installs {S_PACKAGE}@{S_VERSION} into .barrage/node)"


class ServerlessDevsMissing(RuntimeError):
    """The pinned CLI is not installed."""


class SPreviewError(RuntimeError):
    """``s preview`` refused the template; the message is the CLI's own error."""


class OfflineViolation(RuntimeError):
    """The CLI tried to reach the network or start a background process."""


def s_binary() -> Path:
    """The pinned ``s`` launcher, or ServerlessDevsMissing."""
    package = NODE_DIR / "node_modules" / "@serverless-devs" / "s" / "package.json"
    launcher = NODE_DIR / "node_modules" / ".bin" / "s"
    if not package.is_file() or not launcher.exists():
        raise ServerlessDevsMissing(f"Serverless Devs is not installed: {INSTALL_HINT}")
    version = json.loads(package.read_text(encoding="utf-8")).get("version")
    if version != S_VERSION:
        raise ServerlessDevsMissing(f"{S_PACKAGE} {version} is installed, the tests pin {S_VERSION}: {INSTALL_HINT}")
    if shutil.which("node") is None:
        raise ServerlessDevsMissing(f"node is not on PATH: {INSTALL_HINT}")
    return launcher


def _offline_home(root: Path, settings_for_offline: bool) -> Path:
    home = root / "home"
    settings = home / ".s"
    (settings / "config").mkdir(parents=True)
    if not settings_for_offline:
        return home
    # What `s set analysis disable` writes: no report.js daemon.
    (settings / "set-config.yml").write_text("analysis: disable\n", encoding="utf-8")
    # What the CLI writes after an update check: the next one is due in 12 hours.
    notifier = {"lastUpdateCheck": int(time.time() * 1000), "output": False}
    (settings / "config" / "update-notifier.json").write_text(json.dumps(notifier), encoding="utf-8")
    return home


def _error_message(output: str) -> str:
    """The CLI's ``Error Message:`` block, without its banner and log paths."""
    lines = [line.rstrip() for line in output.splitlines()]
    if "Error Message:" in lines:
        start = lines.index("Error Message:") + 1
        block = []
        for line in lines[start:]:
            if line.startswith(("A complete log of this run", "Env:", "Logs:", "Feedback:")):
                break
            block.append(line)
        text = "\n".join(line for line in block if line.strip())
        if text:
            return text
    return output.strip()[-2000:]


def _document(stdout: str) -> dict[str, Any]:
    # The CLI may print a warning line (e.g. about running as root) before the JSON.
    start = stdout.find("\n{")
    text = stdout if stdout.startswith("{") else stdout[start + 1:] if start >= 0 else ""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SPreviewError(f"s preview printed no JSON document ({exc}): {stdout[:500]!r}") from None
    if not isinstance(document, dict):
        raise SPreviewError(f"s preview printed {type(document).__name__}, not a document")
    return document


# Rendering is deterministic: a template (by content) and an environment render once per session.
_rendered: dict[tuple[str, str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}


def s_preview(template: Path, env: Mapping[str, str], timeout_s: float = 60.0,
              settings_for_offline: bool = True) -> dict[str, Any]:
    """``s preview -t TEMPLATE -o json`` with exactly ``env``; the rendered document.

    ``settings_for_offline=False`` leaves the CLI's settings at their defaults (the guard's own
    test: the CLI then starts its online daemons).

    Raises SPreviewError when the CLI refuses the template, OfflineViolation when it tried to
    go online, ServerlessDevsMissing when the CLI is not installed.
    """
    launcher = s_binary()
    template = template.resolve()
    key = (str(template), hashlib.sha256(template.read_bytes()).hexdigest(), tuple(sorted(env.items())))
    if settings_for_offline and key in _rendered:
        return copy.deepcopy(_rendered[key])
    # s loads .env beside the template (and in the working directory) into its environment.
    dotenv = template.parent / ".env"
    if dotenv.exists():
        raise SPreviewError(f"{dotenv} exists: s would add its variables to the environment under test")
    with tempfile.TemporaryDirectory(prefix="barrage-s-") as scratch:
        root = Path(scratch)
        log = root / "offline.log"
        node_dir = os.path.dirname(shutil.which("node") or "/usr/bin/node")
        environment = {
            **env,
            "PATH": os.pathsep.join(dict.fromkeys([node_dir, "/usr/bin", "/bin"])),
            "HOME": str(_offline_home(root, settings_for_offline)),
            "NODE_OPTIONS": f"--require {GUARD}",
            "BARRAGE_OFFLINE_LOG": str(log),
        }
        try:
            completed = subprocess.run(
                [str(launcher), "preview", "-t", str(template), "-o", "json", "--silent"],
                cwd=template.parent, env=environment, capture_output=True, text=True, timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            attempts = log.read_text(encoding="utf-8") if log.exists() else ""
            raise OfflineViolation(f"s preview did not finish within {timeout_s:.0f} s"
                                   + (f"; it tried: {attempts.strip()}" if attempts else "")) from None
        if log.exists() and log.read_text(encoding="utf-8").strip():
            attempts = "; ".join(log.read_text(encoding="utf-8").split("\n")).strip("; ")
            raise OfflineViolation(f"s preview tried to go online: {attempts}")
    if completed.returncode != 0:
        raise SPreviewError(_error_message(completed.stdout + "\n" + completed.stderr))
    document = _document(completed.stdout)
    if settings_for_offline:
        _rendered[key] = copy.deepcopy(document)
    return document
