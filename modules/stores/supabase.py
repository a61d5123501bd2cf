"""ChunkStore on Supabase's REST API (PostgREST) through supabase-py's async client.

For backends that hold only `SUPABASE_URL` and the service-role key, no database password. Every
operation is one `.rpc()` call to the same SQL functions the PostgreSQL store calls (queue.sql,
repair.sql, knowledge.sql), so leases, SKIP LOCKED, attempts and counts mean exactly the same on both paths. The
functions are created by the migration under `supabase/migrations/`, which Supabase users apply
themselves; `prepare()` never runs DDL, it asks `embq_column_info` and checks the answer.

Arguments travel as named JSON values; vectors as pgvector's text form ("[0.1,0.2,...]") inside a
JSON array, which PostgREST casts to `vector[]`. One round trip per batch, for results too.

Errors: an unreachable URL is StoreUnavailableError; a wrong or anon key, or a missing function (the
migration not applied) is a StoreError that says what to do; 5xx, timeouts and dropped connections
are retried with exponential backoff, then StoreUnavailableError. Every write is idempotent in SQL,
so retrying one whose answer was lost is safe, and nothing is reported written unless the RPC answered.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from postgrest.exceptions import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from modules.errors import (
    LiveModelChangedError,
    MigrationError,
    ModelRetiredError,
    SchemaMismatchError,
    StoreError,
    StoreUnavailableError,
)
from modules.logs import get_logger
from modules.settings import Secret, TableNames
from modules.stores.base import (
    BatchJob,
    BatchJobSummary,
    CacheStats,
    Chunk,
    ClaimFilter,
    ColumnInfo,
    Completed,
    CompleteResult,
    DocumentStatus,
    DocumentSummary,
    ErrorGroup,
    Failure,
    LeaseOwner,
    ModelMigrationRow,
    QueueStatus,
    RepairResult,
    RepairRow,
    RetryRule,
    SavedDocument,
    SaveMode,
    SearchHit,
    TableAccess,
    TextToEmbed,
)
from modules.stores.migrations import RELEASED_V1, latest_version
from modules.stores.ops_queries import OperationsQueries, queue_status
from modules.stores.rows import batch_job, batch_job_summary, model_migration

log = get_logger(__name__)

_MIGRATION_HINT = "the files in supabase/migrations/"
_KEY_HINT = "use the project's service-role key (Dashboard → Project Settings → API keys → service_role / secret)"
_RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
_RETRY_SQLSTATE_PREFIXES = ("08", "40", "53", "57")  # connection, rollback/deadlock, resources, canceled
_RETRY_PGRST = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})  # PostgREST lost its database
_AUTH_CODES = frozenset({"PGRST300", "PGRST301", "PGRST302"})

# The HTTP status of the response being handled, set by an httpx hook in the calling task: APIError
# keeps PostgREST's JSON body but not the status, which a gateway's error (no `code`) needs.
_last_status: ContextVar[int | None] = ContextVar("embq_supabase_last_status", default=None)


class _Transient(Exception):
    """A failure worth retrying as is (5xx, timeout, dropped connection)."""


async def _remember_status(response: httpx.Response) -> None:
    _last_status.set(response.status_code)


def vector_text(vector: npt.NDArray[np.float32]) -> str:
    """pgvector's text form with float32's shortest round-trip digits, so the stored value is exact."""
    values = np.asarray(vector, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError("a vector holds NaN or infinity, which pgvector does not store")
    return "[" + ",".join(values.astype(str)) + "]"


def parse_vector(value: object) -> npt.NDArray[np.float32]:
    """A vector as PostgREST returns it: pgvector's text form "[1,2,3]" (or already a JSON list)."""
    if isinstance(value, str):
        value = json.loads(value)
    return np.asarray(value, dtype=np.float32)


def key_role(key: str) -> str | None:
    """The role a Supabase API key acts as, when the key says so (JWT `role` claim, or new-style prefix)."""
    if key.startswith("sb_publishable_"):
        return "anon"
    if key.startswith("sb_secret_"):
        return "service_role"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    role = payload.get("role") if isinstance(payload, dict) else None
    return role if isinstance(role, str) else None


class SupabaseStore(OperationsQueries):
    def __init__(
        self,
        url: str,
        key: Secret,
        tables: TableNames,
        dimensions: int,
        *,
        pool_size: int = 4,
        timeout: float = 30.0,
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        page_size: int = 1000,
    ) -> None:
        self._url = url.rstrip("/")
        self._key = key
        self._tables = tables
        self._dimensions = dimensions
        self._pool_size = max(2, pool_size)
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._page_size = max(1, page_size)
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncClient | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def prepare(self) -> ColumnInfo:
        """Check that the migration is applied and describe the vector column. Runs no DDL."""
        role = key_role(self._key.reveal())
        if role in ("anon", "authenticated"):
            raise StoreError(
                f"SUPABASE_KEY is the {'anon (publishable)' if role == 'anon' else 'authenticated'} key, "
                f"which may not run the embedding queue; {_KEY_HINT}"
            )
        await self._open()
        rows = await self._rpc("embq_column_info", {})
        if not rows:
            t = self._tables
            raise SchemaMismatchError(
                f"table {t.schema}.{t.chunks} lacks the column id, doc_id or {t.embedding_column}; "
                "check CHUNKS_TABLE and CHUNKS_EMBEDDING_COLUMN against the table the migration was made for"
            )
        row = rows[0]
        dims = row.get("dimensions")
        await self._check_version()
        return ColumnInfo(
            dimensions=int(dims) if dims is not None else None,
            id_type=str(row["id_type"]),
            doc_id_type=str(row["doc_id_type"]),
        )

    async def _check_version(self) -> None:
        """The program calls functions of the current schema version; an older database lacks them."""
        try:
            version = int(await self._rpc("embq_schema_version", {}))
        except StoreError as exc:
            if "PGRST202" not in str(exc):
                raise
            version = RELEASED_V1  # version 1 had no version function
        if version < latest_version():
            raise SchemaMismatchError(
                f"the embedding queue on Supabase is at schema version {version}, and this program needs version "
                f"{latest_version()}: apply {_MIGRATION_HINT} (supabase db push applies the new ones in order)"
            )

    async def _open(self) -> None:
        if self._client is not None:
            return
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout, connect=min(10.0, self._timeout)),
            limits=httpx.Limits(max_connections=self._pool_size * 2, max_keepalive_connections=self._pool_size),
            http2=True,
            follow_redirects=False,  # a redirect must not carry the service-role key to another host
            event_hooks={"response": [_remember_status]},
        )
        options = AsyncClientOptions(
            schema=self._tables.schema,
            httpx_client=self._http,
            postgrest_client_retry=False,  # retries are ours: POSTs too, with backoff, and counted
            auto_refresh_token=False,
            persist_session=False,
        )
        try:
            self._client = await acreate_client(self._url, self._key.reveal(), options=options)
        except Exception as exc:  # supabase-py validates the URL and key shapes here
            await self.aclose()
            raise StoreError(f"SUPABASE_URL or SUPABASE_KEY is not usable: {self._scrub(str(exc))}") from None

    async def aclose(self) -> None:
        self._client = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- one RPC -----------------------------------------------------------------------------

    async def _rows(self, function: str, params: dict[str, Any], want: int | None) -> list[dict[str, Any]]:
        """All rows of a read-only set-returning function, in pages: PostgREST caps every answer at the
        project's "Max rows" (1000 by default on Supabase), silently, so a report that could be longer
        is read page by page (offset/limit) until a page comes back short. Never used for embq_claim,
        which leases what it returns. `page_size` must not exceed the project's Max rows."""
        rows: list[dict[str, Any]] = []
        while want is None or len(rows) < want:
            ask = self._page_size if want is None else min(self._page_size, want - len(rows))
            page = await self._rpc(function, params, page=(len(rows), ask))
            rows.extend(page)
            if len(page) < ask:
                break
        return rows

    async def _rpc(self, function: str, params: dict[str, Any], *, page: tuple[int, int] | None = None) -> Any:
        """Call one SQL function, retrying transient failures; returns PostgREST's decoded JSON.
        `page` (offset, count) asks PostgREST for that slice of a set-returning function's rows."""
        client = self._client
        if client is None:
            raise StoreError("the store is not prepared; call prepare() first")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(initial=self._backoff, max=self._max_backoff, jitter=self._backoff),
            retry=retry_if_exception_type(_Transient),
            before_sleep=self._log_retry(function),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._call_once(client, function, params, page)
        except _Transient as exc:
            raise StoreUnavailableError(
                f"Supabase did not complete {function} after {self._attempts} attempts: {exc}"
            ) from None
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    async def _call_once(
        self, client: AsyncClient, function: str, params: dict[str, Any], page: tuple[int, int] | None
    ) -> Any:
        _last_status.set(None)
        request = client.rpc(function, params)
        if page is not None:
            request = request.range(page[0], page[0] + page[1] - 1)
        try:
            response = await request.execute()
        except APIError as exc:
            raise self._translate(function, exc, _last_status.get()) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise StoreUnavailableError(
                f"cannot reach Supabase at {self._url} ({self._describe(exc)}); check SUPABASE_URL "
                "(your project's URL, e.g. https://xyz.supabase.co) and the network"
            ) from None
        except httpx.TimeoutException as exc:
            raise _Transient(f"no answer within {self._timeout:g}s ({type(exc).__name__})") from None
        except (httpx.RemoteProtocolError, httpx.NetworkError) as exc:
            raise _Transient(f"the connection dropped ({self._describe(exc)})") from None
        except httpx.HTTPError as exc:
            raise StoreUnavailableError(f"HTTP error talking to Supabase: {self._describe(exc)}") from None
        return response.data

    def _translate(self, function: str, exc: APIError, status: int | None) -> Exception:
        code = str(exc.code or "")
        message = self._scrub(str(exc.message or "").strip() or "no message")
        said = f"HTTP {status}" if status else "error"
        said += f" {code}: {message}" if code and code != str(status) else f": {message}"
        lowered = message.lower()
        if code in ("EQ001", "EQ003"):  # model_migration.sql's model checks
            return ModelRetiredError(message)
        if code == "EQ002":
            return LiveModelChangedError(message)
        if code == "42501" and status != 403:  # PostgREST answers 401 when the anonymous role was refused
            return StoreError(
                f"Supabase refused {function} ({said}): the queue functions are granted to service_role only, "
                f"and SUPABASE_KEY is the anon (public) key; {_KEY_HINT}"
            )
        if code == "42501":
            return StoreError(
                f"Supabase refused {function} ({said}): the key's role may not run the queue functions. If "
                f"SUPABASE_KEY is the service-role key, apply {_MIGRATION_HINT} again (it grants them to "
                f"service_role); otherwise {_KEY_HINT}"
            )
        if status in (401, 403) or code in _AUTH_CODES or "api key" in lowered or "jwt" in lowered:
            return StoreError(
                f"Supabase rejected SUPABASE_KEY ({said}): the key is wrong, expired, or from another project; "
                f"{_KEY_HINT}"
            )
        if code == "PGRST202":
            return StoreError(
                f"the function {self._tables.schema}.{function} is missing on Supabase ({said}): the embedding "
                f"queue's migration is not applied. Apply {_MIGRATION_HINT} (supabase db push, or run them in the "
                "SQL editor); if you just did, reload the API's schema cache with: NOTIFY pgrst, 'reload schema'"
            )
        if code == "PGRST106":
            return StoreError(
                f"Supabase does not expose the schema {self._tables.schema!r} ({said}): add it to the Data API's "
                "exposed schemas, or set DB_SCHEMA to one that is"
            )
        if (
            (status is not None and (status in _RETRY_STATUSES or status >= 520))
            or code in _RETRY_PGRST
            or (status in (None, 500) and code.startswith(_RETRY_SQLSTATE_PREFIXES))
        ):
            return _Transient(said)
        if status is not None and 300 <= status < 400:
            return StoreError(
                f"{self._url} answered {said} (a redirect) for /rest/v1/rpc/{function}: set SUPABASE_URL to the "
                "project's final https:// URL (e.g. https://xyz.supabase.co); the key is not sent on to redirects"
            )
        if status == 404 and not code.startswith(("PGRST", "42")):
            return StoreError(
                f"{self._url} answered {said} for /rest/v1/rpc/{function}: SUPABASE_URL does not look like a "
                "Supabase project URL (e.g. https://xyz.supabase.co, without /rest/v1)"
            )
        details = f" ({self._scrub(str(exc.details))})" if exc.details else ""
        return StoreError(f"Supabase RPC {function} failed ({said}){details}")

    async def _ops_rows(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One function of operations.sql (embq_<name>), its answer as rows: a set-returning function's JSON
        array of objects, or a scalar function's value as the one row {"value": value}."""
        data = await self._rpc(
            f"embq_{name}", {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
        )
        if isinstance(data, list):
            return [r if isinstance(r, dict) else {"value": r} for r in data]
        return [{"value": data}]

    def _log_retry(self, function: str) -> Any:
        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            reason = outcome.exception() if outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "Supabase RPC %s failed (%s); retry %d/%d in %.1fs",
                function,
                reason,
                state.attempt_number,
                self._attempts - 1,
                delay,
            )

        return before_sleep

    def _describe(self, exc: BaseException) -> str:
        return self._scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)

    def _scrub(self, text: str) -> str:
        key = self._key.reveal()
        return text.replace(key, "***") if key else text

    # --- queue operations --------------------------------------------------------------------

    async def claim(self, worker: str, limit: int, lease_seconds: int, where: ClaimFilter) -> list[Chunk]:
        # One call, never paged: each call leases what it returns. A claim whose answer is lost (and so
        # retried) leaves its chunks leased to this worker until the lease expires; none is lost.
        rows = await self._rpc(
            "embq_claim_v3",
            {
                "p_worker": worker,
                "p_limit": limit,
                "p_lease_seconds": lease_seconds,
                "p_mode": where.mode.value,
                "p_doc_id": where.doc_id,
                "p_failed_before": where.failed_before.isoformat() if where.failed_before else None,
                "p_dead_owners": list(where.dead_owners),
                **{f"p_{k}": v for k, v in where.retry.params().items()},
            },
        )
        return [
            Chunk(
                str(r["id"]),
                str(r["doc_id"]),
                int(r["chunk_index"]),
                str(r["content"]),
                r["title"],
                int(r["attempts"]),
            )
            for r in rows
        ]

    async def complete(self, worker: str, model_id: str, results: Sequence[Completed]) -> CompleteResult:
        if not results:
            return CompleteResult(0, 0)
        rows = await self._rpc(
            "embq_complete_v3",
            {
                "p_worker": worker,
                "p_model": model_id,
                "p_ids": [r.chunk_id for r in results],
                "p_vectors": [vector_text(r.vector) for r in results],
                "p_hashes": [r.content_hash for r in results],
                "p_cache_keys": [r.cache_key for r in results],
            },
        )
        row = rows[0] if isinstance(rows, list) else rows
        return CompleteResult(int(row["written"]), int(row["changed"]))

    async def cached_vectors(self, keys: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        if not keys:
            return {}
        rows = await self._rpc("embq_cache_lookup", {"p_keys": list(keys)})
        return {str(r["cache_key"]): parse_vector(r["embedding"]) for r in rows or []}

    async def cache_stats(self) -> CacheStats:
        rows = await self._rpc("embq_cache_stats", {})
        row = rows[0] if isinstance(rows, list) else rows
        return CacheStats(int(row["entries"]), int(row["hits"]))

    async def text_to_embed(self, doc_id: str | None = None) -> TextToEmbed | None:
        return None  # there is no function for it on the REST path (one would need a migration)

    async def fail(self, worker: str, failures: Sequence[Failure]) -> int:
        if not failures:
            return 0
        recorded = await self._rpc(
            "embq_fail_v2",
            {"p_worker": worker, "p_ids": [f.chunk_id for f in failures], "p_errors": [f.error for f in failures]},
        )
        return int(recorded)

    async def renew_leases(self, worker: str, chunk_ids: Sequence[str], lease_seconds: int) -> set[str]:
        if not chunk_ids:
            return set()
        rows = await self._rpc(
            "embq_renew_leases", {"p_worker": worker, "p_ids": list(chunk_ids), "p_lease_seconds": lease_seconds}
        )
        return {str(r if not isinstance(r, dict) else next(iter(r.values()))) for r in rows or []}

    async def lease_owners(self) -> list[LeaseOwner]:
        rows = await self._rows("embq_lease_owners", {}, None)
        return [LeaseOwner(str(r["owner"]), int(r["chunks"]), _timestamp(r["expires_at"])) for r in rows]

    async def queue_columns(self) -> dict[str, str]:
        rows = await self._rpc("embq_queue_columns", {})
        return {str(r["name"]): str(r["type"]) for r in rows or []}

    async def release(self, worker: str, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            await self._rpc("embq_release", {"p_worker": worker, "p_ids": list(chunk_ids)})

    async def status(
        self,
        doc_id: str | None = None,
        *,
        model_id: str | None = None,
        dead_owners: Sequence[str] = (),
        retry: RetryRule | None = None,
    ) -> QueueStatus:
        rows = await self._rpc(
            "embq_status_v3",
            {
                "p_doc_id": doc_id,
                "p_model": model_id,
                "p_dead_owners": list(dead_owners),
                **{f"p_{k}": v for k, v in (retry or RetryRule()).params().items()},
            },
        )
        return queue_status(rows[0])

    async def status_by_document(self, limit: int = 50) -> list[DocumentStatus]:
        rows = await self._rows("embq_status_by_document", {"p_limit": limit}, limit)
        return [
            DocumentStatus(
                doc_id=str(r["doc_id"]),
                name=r["name"],
                total=int(r["total"]),
                embedded=int(r["embedded"]),
                pending=int(r["pending"]),
                failed=int(r["failed"]),
                in_progress=int(r["in_progress"]),
            )
            for r in rows
        ]

    async def recent_errors(self, limit: int = 10) -> list[ErrorGroup]:
        rows = await self._rows("embq_recent_errors", {"p_limit": limit}, limit)
        return [ErrorGroup(str(r["error"]), int(r["chunks"]), _timestamp(r["last_seen"])) for r in rows]

    async def document_name(self, doc_id: str) -> str | None:
        value = await self._rpc("embq_document_name", {"p_doc_id": doc_id})
        return None if value is None else str(value)

    async def document_exists(self, doc_id: str) -> bool:
        return bool(await self._rpc("embq_document_exists", {"p_doc_id": doc_id}))

    async def server_time(self) -> datetime:
        value = _timestamp(await self._rpc("embq_server_time", {}))
        if value is None:
            raise StoreError("embq_server_time returned no time")
        return value

    # --- repair ------------------------------------------------------------------------------

    async def repair_report(
        self, model_id: str, dimensions: int, doc_id: str | None = None, dead_owners: Sequence[str] = ()
    ) -> list[RepairRow]:
        rows = await self._rows(
            "embq_repair_report_v2",
            {"p_model": model_id, "p_dimensions": dimensions, "p_doc_id": doc_id, "p_dead_owners": list(dead_owners)},
            None,
        )
        return [
            RepairRow(
                doc_id=str(r["doc_id"]),
                name=r["name"],
                **{k: int(v) for k, v in r.items() if k not in ("doc_id", "name")},
            )
            for r in rows
        ]

    async def repair_apply(
        self,
        model_id: str,
        dimensions: int,
        doc_id: str | None = None,
        limit: int | None = None,
        dead_owners: Sequence[str] = (),
    ) -> RepairResult:
        rows = await self._rpc(
            "embq_repair_apply_v3",
            {
                "p_model": model_id,
                "p_dimensions": dimensions,
                "p_doc_id": doc_id,
                "p_limit": limit,
                "p_dead_owners": list(dead_owners),
            },
        )
        return RepairResult(**{k: int(v) for k, v in rows[0].items()})

    # --- the Batch API route ------------------------------------------------------------------

    async def batch_claim(self, job_id: str, model_id: str, worker: str, limit: int, where: ClaimFilter) -> list[Chunk]:
        rows = await self._rpc(
            "embq_batch_claim",
            {
                "p_job_id": job_id,
                "p_model": model_id,
                "p_worker": worker,
                "p_limit": limit,
                "p_mode": where.mode.value,
                "p_doc_id": where.doc_id,
                "p_failed_before": where.failed_before.isoformat() if where.failed_before else None,
                "p_dead_owners": list(where.dead_owners),
            },
        )
        return [
            Chunk(
                str(r["id"]), str(r["doc_id"]), int(r["chunk_index"]), str(r["content"]), r["title"], int(r["attempts"])
            )
            for r in rows or []
        ]

    async def batch_prepared(
        self,
        job_id: str,
        chunk_ids: Sequence[str],
        content_hashes: Sequence[str],
        cache_keys: Sequence[str | None],
        tokens: int,
    ) -> None:
        await self._rpc(
            "embq_batch_prepared",
            {
                "p_job_id": job_id,
                "p_chunk_ids": list(chunk_ids),
                "p_hashes": list(content_hashes),
                "p_cache_keys": list(cache_keys),
                "p_tokens": tokens,
            },
        )

    async def batch_submitted(self, job_id: str, name: str, remote_state: str | None) -> bool:
        done = await self._rpc(
            "embq_batch_submitted", {"p_job_id": job_id, "p_name": name, "p_remote_state": remote_state}
        )
        return bool(done)

    async def batch_take(
        self, worker: str, lease_seconds: int, limit: int, dead_owners: Sequence[str] = ()
    ) -> list[BatchJob]:
        rows = await self._rpc(
            "embq_batch_take",
            {
                "p_worker": worker,
                "p_lease_seconds": lease_seconds,
                "p_limit": limit,
                "p_dead_owners": list(dead_owners),
            },
        )
        return [batch_job(r) for r in rows or []]

    async def batch_seen(self, job_id: str, worker: str, remote_state: str | None) -> None:
        await self._rpc("embq_batch_seen", {"p_job_id": job_id, "p_worker": worker, "p_remote_state": remote_state})

    async def batch_finish(
        self, job_id: str, outcome: str, embedded: int, failed: int, error: str | None = None
    ) -> int:
        released = await self._rpc(
            "embq_batch_finish",
            {"p_job_id": job_id, "p_outcome": outcome, "p_embedded": embedded, "p_failed": failed, "p_error": error},
        )
        return int(released)

    async def batch_workers(self) -> list[str]:
        rows = await self._rpc("embq_batch_workers", {})
        return [str(r if not isinstance(r, dict) else next(iter(r.values()))) for r in rows or []]

    async def batch_jobs(self, recent: int = 10) -> list[BatchJobSummary]:
        return [batch_job_summary(r) for r in await self._rows("embq_batch_jobs", {"p_recent": recent}, None)]

    # --- knowledge side (uploads, listing, search) ---------------------------------------------

    async def ingest_document(self, name: str, doc_type: str, chunks: Sequence[str], doc_id: str | None = None) -> str:
        value = await self._rpc(
            "embq_ingest_document", {"p_name": name, "p_type": doc_type, "p_chunks": list(chunks), "p_doc_id": doc_id}
        )
        return str(value)

    async def save_document(
        self, name: str, doc_type: str, chunks: Sequence[str], mode: SaveMode = "replace"
    ) -> SavedDocument:
        rows = await self._rpc(
            "embq_ingest_document_v2", {"p_name": name, "p_type": doc_type, "p_chunks": list(chunks), "p_mode": mode}
        )
        r = rows[0]
        return SavedDocument(
            doc_id=None if r["doc_id"] is None else str(r["doc_id"]),
            outcome=str(r["outcome"]),
            kept=int(r["kept"]),
            added=int(r["added"]),
            removed=int(r["removed"]),
        )

    async def table_access(self) -> list[TableAccess]:
        rows = await self._rows("embq_table_access", {}, None)
        return [
            TableAccess(
                table=str(r["table_name"]),
                role=str(r["role_name"]),
                can_select=bool(r["can_select"]),
                row_security=bool(r["row_security"]),
                policies=int(r["policies"]),
            )
            for r in rows
        ]

    async def list_documents(self, limit: int = 100) -> list[DocumentSummary]:
        rows = await self._rows("embq_list_documents", {"p_limit": limit}, limit)
        return [
            DocumentSummary(
                doc_id=str(r["doc_id"]),
                name=r["name"],
                type=r["type"],
                chunks=int(r["chunks"]),
                embedded=int(r["embedded"]),
                failed=int(r["failed"]),
            )
            for r in rows
        ]

    async def delete_document(self, doc_id: str) -> int | None:
        value = await self._rpc("embq_delete_document", {"p_doc_id": doc_id})
        return None if value is None else int(value)

    async def search(
        self, query: npt.NDArray[np.float32], limit: int = 5, *, model_id: str | None = None
    ) -> list[SearchHit]:
        rows = await self._rows(
            "embq_search_v3", {"p_query": vector_text(query), "p_limit": limit, "p_model": model_id}, limit
        )
        hits: dict[str, SearchHit] = {}  # pages re-run the query: never let one chunk count twice
        for r in rows:
            hit = SearchHit(
                chunk_id=str(r["chunk_id"]),
                doc_id=str(r["doc_id"]),
                name=r["name"],
                chunk_index=int(r["chunk_index"]),
                content=str(r["content"]),
                distance=float(r["distance"]),
                model=r["model"],
            )
            hits.setdefault(hit.chunk_id, hit)
        return list(hits.values())[:limit]

    # --- model migration -------------------------------------------------------------------------

    async def live_model(self) -> str | None:
        value = await self._rpc("embq_live_model", {})
        return None if value is None else str(value)

    async def migration_current(self) -> ModelMigrationRow | None:
        rows = await self._rpc("embq_migration_current", {})
        return model_migration(rows[0]) if rows else None

    async def migration_remaining_chars(self) -> int:
        return int(await self._rpc("embq_next_remaining_chars", {}) or 0)

    def shadow(self) -> SupabaseStore:
        raise MigrationError(
            "a model migration needs a database connection (DATABASE_URL, e.g. Supabase's session pooler or "
            "direct connection string): it adds columns and builds an index concurrently, which the REST API "
            "can't do"
        )


def _timestamp(value: Any) -> datetime | None:
    """PostgREST sends timestamptz as ISO 8601 text (e.g. 2026-11-24T14:24:26.060211+00:00)."""
    if value is None:
        return None
    return datetime.fromisoformat(str(value))
