"""The library layer and the apps on it stay apart, both ways.

- The generic layer (``functions.app`` and what it is built of) imports nothing of barrage: not its
  domain (``handlers``), its adapters, config, wiring, HomePage or processor.
- Barrage's domain (``handlers``) imports nothing of the layer (it is stdlib only: test_purity).
- An app under ``examples/`` imports the public layer (``functions.app``, ``functions.bindings``
  for tests of its own shapes) and nothing of barrage.
- The function code (``local.build.PROJECT_PACKAGES``, what the FC package ships) imports nothing
  of ``local`` and no Kafka consumer: the platforms' triggers consume for the function
  (``local.kafka_consumer`` serves the local dispatcher and the benches).
"""

from __future__ import annotations

import ast
from pathlib import Path

from local.build import PROJECT_PACKAGES

REPO = Path(__file__).resolve().parents[2]
GENERIC = [
    *sorted((REPO / "functions" / "bindings").glob("*.py")),
    *(REPO / "functions" / f"{name}.py" for name in
      ("app", "records", "lifecycle", "asgi", "fc", "kafka", "serve", "http_limits", "http_limits_httptools",
       "entrypoint", "targets", "declaration")),
]
BARRAGE = ("handlers", "functions.adapters", "functions.config", "functions.wiring", "functions.homepage",
           "functions.processor", "functions.barrage_app", "functions.barrage_deploy", "functions.main",
           "functions.loadrun", "examples")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def reaches(modules: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)}


def test_the_generic_layer_imports_nothing_of_barrage() -> None:
    assert len(GENERIC) >= 15
    for path in GENERIC:
        assert path.is_file(), path
        bad = reaches(imports(path), BARRAGE)
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_barrage_domain_imports_nothing_of_the_layer() -> None:
    for path in sorted((REPO / "handlers").glob("*.py")):
        bad = reaches(imports(path), ("functions", "local", "examples"))
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_examples_use_only_the_public_layer() -> None:
    files = sorted((REPO / "examples").rglob("*.py"))
    assert files
    for path in files:
        modules = imports(path)
        bad = reaches(modules, BARRAGE[:-1]) | {m for m in reaches(modules, ("functions",))
                                                if not m.startswith(("functions.app", "functions.bindings"))}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


CONSUMER = ("local", "confluent_kafka.Consumer", "confluent_kafka.DeserializingConsumer",
            "confluent_kafka.aio.AIOConsumer")


def test_the_function_code_ships_no_local_module_and_no_consumer() -> None:
    files = [path for package in PROJECT_PACKAGES for path in sorted((REPO / package).rglob("*.py"))]
    assert len(files) >= 30 and PROJECT_PACKAGES == ("handlers", "functions")
    for path in files:
        bad = reaches(imports(path), CONSUMER)
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
        defined = {node.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                   if isinstance(node, ast.ClassDef)}
        assert not defined & {"KafkaRecordConsumer", "ConsumedRecord"}, path.relative_to(REPO)


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from handlers.model import Barrage\nimport functions.wiring\n")
    assert reaches(imports(sample), BARRAGE) == {"handlers.model", "handlers.model.Barrage", "functions.wiring"}
    sample.write_text("def later():\n    from local.kafka_consumer import KafkaRecordConsumer\n"
                      "from confluent_kafka import Consumer, Producer\n")
    assert reaches(imports(sample), CONSUMER) == {"local.kafka_consumer", "local.kafka_consumer.KafkaRecordConsumer",
                                                  "confluent_kafka.Consumer"}
