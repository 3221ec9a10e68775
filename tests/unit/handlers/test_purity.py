"""handlers/ is pure: it imports the standard library and itself, nothing else."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

HANDLERS = Path(__file__).resolve().parents[3] / "handlers"


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_handlers_import_only_the_standard_library() -> None:
    files = sorted(HANDLERS.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        foreign = imported_modules(path) - set(sys.stdlib_module_names) - {"handlers", "__future__"}
        assert not foreign, f"{path.name} imports {sorted(foreign)}"


def test_the_check_sees_a_foreign_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import json\nfrom confluent_kafka import Producer\nfrom . import model\n")
    assert imported_modules(sample) == {"json", "confluent_kafka"}
