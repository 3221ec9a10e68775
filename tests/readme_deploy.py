"""The README's "Deploy to Function Compute" section, read as a deployer follows it.

Each ``sh`` block that runs ``s deploy`` is one deployment: its template (``-t FILE``, else
s.yaml) and the environment that the ``export`` lines of the blocks before it (those that deploy
nothing: the shared exports) and of its own block leave behind, as bash computes it from an
empty environment. Only ``export`` statements run; nothing else in the blocks does.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Deploy to Function Compute"


@dataclass(frozen=True)
class Deployment:
    template: Path
    exports: tuple[str, ...]  # the export statements, in order
    env: dict[str, str]


def _section(readme: str) -> str:
    start = readme.index(SECTION)
    following = readme.find("\n## ", start + len(SECTION))
    return readme[start:] if following < 0 else readme[start:following]


def _statements(block: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def _environment(exports: list[str]) -> dict[str, str]:
    baseline = "env -0"
    script = "set -eu\n" + "\n".join(exports) + "\n" + baseline
    def run(text: str) -> dict[str, str]:
        out = subprocess.run(["env", "-i", "bash", "--noprofile", "--norc", "-c", text], capture_output=True,
                             check=True, stdin=subprocess.DEVNULL).stdout.decode()
        return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    before, after = run(baseline), run(script)
    return {k: v for k, v in after.items() if before.get(k) != v and k not in ("_", "SHLVL", "PWD")}


def deployments(readme: Path = REPO / "README.md") -> list[Deployment]:
    blocks = re.findall(r"```sh\n(.*?)```", _section(readme.read_text(encoding="utf-8")), re.DOTALL)
    shared: list[str] = []
    found = []
    for block in blocks:
        statements = _statements(block)
        exports = [s for s in statements if s.startswith("export ")]
        deploys = [s for s in statements if re.match(r"s deploy\b", s)]
        if not deploys:
            shared += exports
            continue
        (command,) = deploys
        words = shlex.split(command)
        template = words[words.index("-t") + 1] if "-t" in words else "s.yaml"
        found.append(Deployment(REPO / template, tuple(shared + exports), _environment(shared + exports)))
    return found
