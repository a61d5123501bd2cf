"""`test_batch_embedding.py`: the guide's system test for a configured environment.

Each check prints one ✅ / ❌ line, and for each ❌ the fix. A failed check does not stop the checks
that can still say something (a dead database does not keep the embedding API from being tested).
Exit codes: 0 every check passed, 1 some check failed, 2 the settings cannot even be loaded.
Nothing secret is printed: every line passes through `scrub` with the settings' secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TextIO, TypeVar
from urllib.parse import parse_qs, urlsplit

from modules.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_main
from modules.cli.logging_setup import configure_logging
from modules.embedders import EmbedRequest, make_embedder
from modules.errors import (
    PermanentEmbeddingError,
    ProviderConfigError,
    RateLimitedError,
    SchemaMismatchError,
    StoreUnavailableError,
    TransientEmbeddingError,
)
from modules.logs import scrub
from modules.settings import Settings, SettingsError, load_settings
from modules.stores import ChunkStore, ColumnInfo, open_store, store_kind

T = TypeVar("T")
PROBE_TEXT = "接続テスト"


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool | None  # None: skipped, because an earlier check it depends on failed
    detail: str
    fix: str | None = None
    url_shown: bool = False  # the detail shows the database address, stripped of its password by us


class SelfTest:
    """Runs the checks in order, printing each result as soon as it is known."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.secrets: list[str] = []
        self.database_url: str | None = None
        self.model_id: str | None = None  # the configured model's id, once the embedder is made
        self.results: list[CheckResult] = []

    def record(self, result: CheckResult) -> None:
        self.results.append(result)
        mark = {True: "✅", False: "❌", None: "⏭️"}[result.ok]
        # The whole DATABASE_URL counts as a secret, so a password-free address would come out as "***";
        # such a line is scrubbed of every other secret (the password itself included).
        secrets = [s for s in self.secrets if s != self.database_url] if result.url_shown else self.secrets
        print(scrub(f"{mark} {result.name}: {result.detail}", secrets), file=self.out)
        if result.fix and result.ok is False:
            print(scrub(f"   💡 対処: {result.fix}", self.secrets), file=self.out)
        self.out.flush()

    @property
    def failures(self) -> int:
        return sum(1 for r in self.results if r.ok is False)

    async def run(self) -> int:
        print("🧪 バッチエンベディング システムテスト", file=self.out)
        settings = self.check_settings()
        if settings is None:
            print("🛑 設定を読み込めないため、ほかのチェックは実行できません", file=self.out)
            return EXIT_USAGE
        configure_logging(None, self.secrets)  # library warnings, if any, are scrubbed too
        store = await self.check_database(settings)
        try:
            await self.check_embedding_api(settings)
            await self.check_status(store)
            await self.check_public_access(store, settings)
        finally:
            if store is not None:
                await _quietly(store.aclose())
        total = len(self.results)
        if self.failures:
            print(
                f"❌ {self.failures}/{total} 件のチェックが失敗しました。上の 💡 対処を行ってから再実行してください",
                file=self.out,
            )
            return EXIT_FAILED
        passed = sum(1 for r in self.results if r.ok)
        print(f"🎉 すべてのチェックに合格しました ({passed}/{total})", file=self.out)
        return EXIT_OK

    # --- the checks ------------------------------------------------------------------------------

    def check_settings(self) -> Settings | None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            self.record(
                CheckResult(
                    "設定",
                    False,
                    str(exc),
                    f"{exc.setting} を .env か環境変数で直してください (.env.example に例と説明があります)",
                )
            )
            return None
        except Exception as exc:  # e.g. an unreadable .env file
            self.record(
                CheckResult("設定", False, _describe(exc), ".env ファイルの内容と読み取り権限を確認してください")
            )
            return None
        self.secrets = settings.secrets()
        self.database_url = settings.database_url.reveal() if settings.database_url else None
        key = "設定済み" if settings.google_api_key else "未設定"
        model = settings.model if settings.provider == "gemini" else "wordllama (オフライン)"
        self.record(
            CheckResult(
                "設定",
                True,
                f"provider={settings.provider}, model={model}, 次元={settings.dimensions}, "
                f"APIキー={key}, データベース={describe_database(settings)}",
                url_shown=True,
            )
        )
        return settings

    async def check_database(self, settings: Settings) -> ChunkStore | None:
        """Connection, then schema and vector dimension (open_store checks both, in that order)."""
        schema = f"スキーマとベクトル次元 ({settings.tables.chunks}.{settings.tables.embedding_column})"
        try:
            store, info = await open_store(settings, pool_size=2)
        except SchemaMismatchError as exc:
            self.record(CheckResult("データベース接続", True, "接続できました"))
            self.record(CheckResult(schema, False, str(exc), _dimension_fix(str(exc), settings)))
            return None
        except StoreUnavailableError as exc:
            self.record(CheckResult("データベース接続", False, str(exc), _connection_fix(settings)))
            self.record(CheckResult(schema, None, "データベースに接続できないため確認できません"))
            return None
        except Exception as exc:
            if store_kind(settings) == "supabase":
                self.record(
                    CheckResult(
                        "データベース接続",
                        False,
                        _describe(exc),
                        "SUPABASE_URL はプロジェクトのURL、SUPABASE_KEY は service_role キーです。"
                        "関数が見つからない場合は supabase/migrations/ のマイグレーションを適用してください",
                    )
                )
                self.record(CheckResult(schema, None, "データベースに接続できないため確認できません"))
                return None
            # Connected, but the migration or the column check failed: the schema is the problem.
            self.record(CheckResult("データベース接続", True, "接続できました"))
            self.record(CheckResult(schema, False, _describe(exc), _schema_fix()))
            return None
        self.record(CheckResult("データベース接続", True, "接続できました"))
        self.record(CheckResult(schema, True, _describe_column(info, settings)))
        return store

    async def check_public_access(self, store: ChunkStore | None, settings: Settings) -> None:
        """Supabase serves tables to anyone holding the public anon key: the chunks must not be among them."""
        chunks = settings.tables.chunks
        name = f"公開ロール (anon) からの読み取り ({chunks})"
        if store is None:
            self.record(CheckResult(name, None, "データベースの確認に失敗したため実行できません"))
            return
        try:
            access = await store.table_access()
        except Exception as exc:
            self.record(CheckResult(name, False, _describe(exc), _schema_fix()))
            return
        anon = next((a for a in access if a.role == "anon" and a.table == chunks), None)
        if anon is None:
            self.record(CheckResult(name, True, "anon ロールがありません (Supabase ではないデータベース)"))
        elif anon.readable:
            why = "行レベルセキュリティ (RLS) が無効"
            if anon.row_security:
                why = f"anon に読み取りを許すポリシーが {anon.policies} 件"
            table = f"{settings.tables.schema}.{chunks}"
            self.record(
                CheckResult(
                    name,
                    False,
                    f"anon キーを持つ誰もが {table} を読めます (SELECT 権限あり, {why})",
                    f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; REVOKE ALL ON {table} FROM anon; "
                    "を実行してください (チャットボットは service_role キーか、サーバー側の接続で読みます)。"
                    "公開してよい行だけなら、その行に限ったポリシーを作ってください",
                )
            )
        else:
            how = "SELECT 権限なし" if not anon.can_select else "RLS 有効で anon 向けポリシーなし"
            self.record(CheckResult(name, True, f"anon は {chunks} を読めません ({how})"))

    async def check_embedding_api(self, settings: Settings) -> None:
        name = f"埋め込みAPI ({settings.provider}: {settings.model if settings.provider == 'gemini' else 'wordllama'})"
        try:
            embedder = make_embedder(settings)
        except Exception as exc:
            self.record(CheckResult(name, False, _describe(exc), _api_fix(exc, settings)))
            return
        self.model_id = embedder.model_id
        try:
            vectors = await asyncio.wait_for(
                embedder.embed([EmbedRequest(PROBE_TEXT)]), timeout=settings.request_timeout + 10
            )
        except TimeoutError:
            self.record(
                CheckResult(
                    name,
                    False,
                    f"{settings.request_timeout + 10:g}秒以内に応答がありませんでした",
                    "ネットワーク接続と GOOGLE_GEMINI_BASE_URL を確認してください"
                    " (EMBEDDING_REQUEST_TIMEOUT で待ち時間を変更できます)",
                )
            )
            return
        except Exception as exc:
            self.record(CheckResult(name, False, _describe(exc), _api_fix(exc, settings)))
            return
        finally:
            await _quietly(embedder.aclose())
        shape = tuple(vectors.shape)
        if shape != (1, settings.dimensions):
            got = shape[1] if len(shape) == 2 else shape
            self.record(
                CheckResult(
                    name,
                    False,
                    f"応答のベクトルは {got} 次元でした (EMBEDDING_DIMENSIONS={settings.dimensions})",
                    _model_dimension_fix(settings),
                )
            )
            return
        self.record(
            CheckResult(
                name, True, f"「{PROBE_TEXT}」を {settings.dimensions} 次元で埋め込めました ({embedder.model_id})"
            )
        )

    async def check_status(self, store: ChunkStore | None) -> None:
        name = "処理状況の取得"
        if store is None:
            self.record(CheckResult(name, None, "データベースの確認に失敗したため実行できません"))
            return
        try:
            status = await store.status(model_id=self.model_id)
        except Exception as exc:
            self.record(
                CheckResult(
                    name,
                    False,
                    _describe(exc),
                    "データベースの接続と権限 (embq_status 関数の実行権限) を確認してください",
                )
            )
            return
        self.record(
            CheckResult(
                name,
                True,
                f"総チャンク {status.total:,} | 埋め込み済み {status.embedded:,} ({status.percent_embedded:.1f}%)"
                f" | 未処理 {status.pending:,} | 失敗 {status.failed:,} | 処理中 {status.in_progress:,}",
            )
        )
        self.record(_model_check(status.other_model, self.model_id))


def _model_check(other_model: int, model_id: str | None) -> CheckResult:
    name = "ベクトルのモデル"
    if other_model == 0:
        return CheckResult(name, True, f"すべてのベクトルが設定のモデル ({model_id}) で作られています")
    return CheckResult(
        name,
        False,
        f"{other_model:,}件のベクトルが設定 ({model_id}) と違うモデルで作られています。"
        "別モデルのベクトルとは比較できないため、検索結果が正しくなりません",
        "python fix_missing_embeddings.py で設定のモデルに揃えて再埋め込みしてください (--dry-run で件数を確認)。"
        "または EMBEDDING_MODEL / EMBEDDING_DIMENSIONS を、ベクトルを作ったモデルに合わせてください",
    )


# --- helpers -------------------------------------------------------------------------------------


def describe_database(settings: Settings) -> str:
    """Where the data lives, without any password (user, host, port and database name only)."""
    kind = store_kind(settings)
    if kind == "embedded":
        return f"組み込みPostgreSQL ({settings.embedded_pg_dir})"
    if kind == "supabase":
        return f"Supabase REST ({settings.supabase_url})"
    assert settings.database_url is not None
    try:
        parts = urlsplit(settings.database_url.reveal())
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        socket_dir = parse_qs(parts.query).get("host")  # a Unix socket: ?host=/run/postgresql
        if not parts.hostname and socket_dir:
            return f"{parts.scheme}://{user}{port}{parts.path} (ソケット: {socket_dir[0]})"
        return f"{parts.scheme}://{user}{parts.hostname or 'localhost'}{port}{parts.path}"
    except ValueError:
        return "DATABASE_URL (解析できない形式)"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _describe_column(info: ColumnInfo, settings: Settings) -> str:
    if info.dimensions is None:
        return (
            f"ベクトル列は次元未宣言 (vector) です。EMBEDDING_DIMENSIONS={settings.dimensions} で書き込みます "
            f"(id: {info.id_type}, doc_id: {info.doc_id_type})"
        )
    return f"vector({info.dimensions}) が EMBEDDING_DIMENSIONS={settings.dimensions} と一致します"


def _connection_fix(settings: Settings) -> str:
    if settings.database_url is None:
        return (
            "組み込みPostgreSQLを起動できませんでした。EMBEDDED_PG_DIR のフォルダと空き容量を確認するか、"
            "DATABASE_URL で別のPostgreSQLを指定してください"
        )
    return (
        "DATABASE_URL のホスト・ポート・ユーザー・パスワード・データベース名を確認し、"
        "PostgreSQL が起動していて接続を受け付けているか確かめてください"
    )


def _dimension_fix(message: str, settings: Settings) -> str:
    match = re.search(r"vector\((\d+)\)", message)
    column = f"{settings.tables.chunks}.{settings.tables.embedding_column}"
    if match:
        return (
            f"EMBEDDING_DIMENSIONS={match.group(1)} にして列に合わせるか、"
            f"列 {column} を vector({settings.dimensions}) に変更してください"
        )
    return f"EMBEDDING_DIMENSIONS を列 {column} の次元に合わせてください"


def _schema_fix() -> str:
    return (
        "pgvector 拡張 (CREATE EXTENSION vector)、テーブル名 (DB_SCHEMA / CHUNKS_TABLE / DOCUMENTS_TABLE)、"
        "列名 (CHUNKS_CONTENT_COLUMN / CHUNKS_EMBEDDING_COLUMN) と、列や関数を作る権限を確認してください"
    )


def _model_dimension_fix(settings: Settings) -> str:
    return (
        f"EMBEDDING_DIMENSIONS をモデル {settings.model} が出力できる次元 "
        "(gemini-embedding-001 は 128〜3072、推奨 768 / 1536 / 3072) にし、ベクトル列と揃えてください"
    )


def _api_fix(exc: BaseException, settings: Settings) -> str:
    if settings.provider == "local":
        return "ローカルプロバイダには 'wordllama' パッケージが必要です: pip install -e . で再インストールしてください"
    if isinstance(exc, ProviderConfigError):
        return (
            "GOOGLE_API_KEY (有効なキーか、Generative Language API が有効か) と "
            "EMBEDDING_MODEL (例: gemini-embedding-001) を確認してください"
        )
    if isinstance(exc, RateLimitedError):
        return (
            "APIは応答しましたがクォータ超過 (429) です。"
            "時間をおいて再実行するか EMBEDDING_RPM / EMBEDDING_TPM を下げてください"
        )
    if isinstance(exc, TransientEmbeddingError) and "dimension" in str(exc):
        return _model_dimension_fix(settings)
    if isinstance(exc, TransientEmbeddingError):
        return "ネットワーク接続と GOOGLE_GEMINI_BASE_URL を確認し、時間をおいて再実行してください"
    if isinstance(exc, PermanentEmbeddingError):
        return "EMBEDDING_MODEL / EMBEDDING_TASK_TYPE / EMBEDDING_DIMENSIONS の組み合わせを確認してください"
    return "ネットワーク接続と GOOGLE_API_KEY、EMBEDDING_MODEL、GOOGLE_GEMINI_BASE_URL を確認してください"


async def _quietly(awaitable: Awaitable[T]) -> None:
    with contextlib.suppress(Exception):  # closing is best effort; the checks already said what matters
        await awaitable


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="test_batch_embedding.py",
        description=(
            "System test for a configured environment: settings, database, schema and vector dimension, "
            "one tiny embedding call, and the status counts."
        ),
        epilog="Exit codes: 0 every check passed, 1 some check failed, 2 the settings cannot be loaded.",
    )


def main(argv: list[str] | None = None) -> int:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    test = SelfTest(sys.stdout)
    return run_main(test.run, lambda: test.secrets)
