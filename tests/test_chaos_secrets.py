"""Chaos: secrets. The API key and the database password must never appear in stdout, stderr, the
log file or the database's recorded errors, whatever fails: a wrong key, an unknown model, a dead
database port, the self-test, `--status`, verbose logging, and library errors that echo what they
were given (a malformed URL, a key that is not a valid header value)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, run_simulator_in_thread
from tests.chaos_helpers import CHAOS_API_KEY, SELFTEST, gemini_env, rows, run_cli, secrets_found
from tests.helpers import corpus, seed_chunks

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only

PASSWORD = "Pw-4e1d9b07-sekrit"
ACCEPTED_KEY = "the-only-key-the-simulator-takes"


@pytest.fixture
def sim() -> Iterator[GeminiSimulator]:
    with run_simulator_in_thread(SimulatorConfig(api_key=ACCEPTED_KEY)) as simulator:
        yield simulator


@pytest.fixture
def password_url(pg_server: str, database_url: str) -> str:
    """The test database, reached as a role that has a password. (The embedded server trusts its
    socket, so the password is not checked; the point is that it is in the URL and must not print.)"""
    role = f"chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    base, _, query = database_url.partition("?")
    rest = base.split("://", 1)[1].split("@", 1)[1]
    return f"postgresql://{role}:{PASSWORD}@{rest}?{query}"


class Outputs:
    """Everything a person could see: every run's stdout and stderr, and the log file."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.texts: list[str] = []

    def run(self, env: dict[str, str], *args: str, script: str = "batch_embedding_processor.py") -> int:
        result = run_cli(env, *args, script=script)
        self.texts += [result.stdout, result.stderr]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        return result.returncode

    def all(self) -> list[str]:
        log = self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""
        return [*self.texts, log]


def test_no_secret_in_any_output_of_failing_runs(
    database_url: str, password_url: str, base_env: dict[str, str], sim: GeminiSimulator, tmp_path: Path
) -> None:
    import asyncio

    asyncio.run(seed_chunks(database_url, corpus(20, docs=2)))
    out = Outputs(Path(base_env["EMBEDDING_LOG_FILE"]))
    env = gemini_env({**base_env, "DATABASE_URL": password_url}, sim)  # CHAOS_API_KEY: not the accepted one
    dead_db = {**env, "DATABASE_URL": f"postgresql://someone:{PASSWORD}@127.0.0.1:1/postgres"}
    unknown_model = {**env, "GOOGLE_API_KEY": ACCEPTED_KEY, "EMBEDDING_MODEL": "text-embedding-999"}
    # '%zz' is no valid escape: libpq's error quotes the whole password token
    malformed = {**env, "DATABASE_URL": password_url.replace(PASSWORD, f"{PASSWORD[:6]}%zz{PASSWORD[6:]}")}

    assert out.run(env) == 2  # wrong key: a settings error, no chunk charged
    assert out.run(env, "-v", "--json") == 2  # the same, with debug logging
    assert out.run(unknown_model, "--json") == 2  # 404
    assert out.run(dead_db) == 2
    assert out.run(malformed, "--status") in (1, 2)
    assert out.run(malformed, script=SELFTEST) == 1
    assert out.run(env, "--status") == 0
    assert out.run(env, "--status", "--json", "--errors", "--by-document") == 0
    assert out.run(env, script=SELFTEST) == 1
    assert out.run(dead_db, script=SELFTEST) == 1

    texts = out.all()
    assert any("API key not valid" in t for t in texts)  # the failures really happened, and said why
    assert any("データベースエラー" in t for t in texts)
    malformed_password = f"{PASSWORD[:6]}%zz{PASSWORD[6:]}"
    assert any("percent-encoded" in t for t in texts)
    assert secrets_found(texts, [CHAOS_API_KEY, ACCEPTED_KEY, PASSWORD, malformed_password]) == []
    assert secrets_found([r.error or "" for r in rows(database_url)], [CHAOS_API_KEY, PASSWORD]) == []


def test_a_password_in_the_url_query_is_never_printed(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    secret = "Pw%zz-8c2f-sekrit"  # '%zz' is not a valid escape: libpq quotes the token in its error
    url = f"{database_url}&password={secret}"
    out = Outputs(Path(base_env["EMBEDDING_LOG_FILE"]))
    env = gemini_env({**base_env, "DATABASE_URL": url}, sim)
    codes = [out.run(env, "--status"), out.run(env), out.run(env, script=SELFTEST)]
    assert all(code != 0 for code in codes)
    assert secrets_found(out.all(), [secret]) == []


@pytest.mark.parametrize(
    "bad_key",
    ["chaos-key-0a1b2c3d\nsecond-line-sekrit", "chaos-key-0a1b2c3d\uff21full-width-sekrit"],
    ids=["newline", "non-ascii"],
)
async def test_an_api_key_that_is_not_a_valid_header_is_a_run_level_error_and_never_printed(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, bad_key: str
) -> None:
    await seed_chunks(database_url, corpus(10, docs=1))
    out = Outputs(Path(base_env["EMBEDDING_LOG_FILE"]))
    env = gemini_env(base_env, sim, GOOGLE_API_KEY=bad_key, EMBEDDING_MAX_RETRIES=0)
    code = out.run(env, "--json")
    out.run(env, "--status", "--errors")
    leaked = secrets_found([*out.all(), *(r.error or "" for r in rows(database_url))], [bad_key])
    assert leaked == []
    assert code == 2  # a bad setting, said at start in one line naming it
    assert "GOOGLE_API_KEY" in out.texts[1]
    assert [r.id for r in rows(database_url) if r.failed_at] == []
