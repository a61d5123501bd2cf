"""TEST-ONLY: a minimal stand-in for PostgREST's RPC endpoint, as Supabase serves it.

PostgREST itself can't be installed here, so this serves just its RPC contract, over real HTTP, by
calling the real SQL functions on the test's PostgreSQL:

- `POST /rest/v1/rpc/<function>` with named JSON arguments. Like PostgREST, it looks the function up
  in pg_proc by name and argument names and calls it as
  `SELECT ... FROM json_to_record($1) AS pgrst_args(a type, ...), fn(a := pgrst_args.a, ...)`, so the
  JSON values are cast by PostgreSQL (a JSON array of pgvector texts becomes `vector[]`). A function
  returning a set (RETURNS TABLE) answers a JSON array of objects; any other, its JSON value.
- The `apikey` header must be present and `Authorization: Bearer <key>` must be a known key: the
  service key runs the call as `SET LOCAL ROLE service_role`, the anon key as `anon`, so the
  migration's real GRANT/REVOKE decides. An unknown key gets 401 with PostgREST's JWT error.
- Errors use PostgREST's JSON shape {code, details, hint, message} and status mapping (a missing
  function is 404 PGRST202; 42501 is 401 for anon, else 403).
- Rows of a set-returning function honour `offset` / `limit` query parameters and are capped at
  `max_rows`, like Supabase's "Max rows" API setting (1000 by default).
- Fault injection: the next N calls answer 503 (before running, or after committing, as when a
  response is lost), or hang past the client's timeout.

Nothing in `modules/` imports this. Stdlib ThreadingHTTPServer + sync psycopg, in a background thread.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from modules.stores.migration_file import supabase_files

SERVICE_KEY = "fake-service-role-key-7c1e0b5d9a"
ANON_KEY = "fake-anon-key-3f8a2c6e41"
_RPC_PATH = re.compile(r"^/rest/v1/rpc/([A-Za-z_][A-Za-z0-9_]*)/?$")
_INPUT_MODES = ("i", "b", "v")


@dataclass
class Fault:
    kind: str  # "status" or "hang"
    remaining: int
    status: int = 503
    after_commit: bool = False
    seconds: float = 0.0
    function: str | None = None


@dataclass(frozen=True)
class Call:
    function: str
    role: str | None
    status: int
    executed: bool  # the SQL ran and committed


@dataclass
class _State:
    keys: dict[str, str]
    max_rows: int
    redirect: str | None = None
    faults: list[Fault] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def take_fault(self, function: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and fault.function in (None, function):
                    fault.remaining -= 1
                    return fault
        return None

    def record(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)


class PostgrestFake:
    """`with PostgrestFake(database_url) as fake:` then point supabase-py at `fake.url`."""

    def __init__(
        self, database_url: str, *, service_key: str = SERVICE_KEY, anon_key: str = ANON_KEY, max_rows: int = 1000
    ) -> None:
        self._pool = ConnectionPool(database_url, min_size=1, max_size=12, open=False, kwargs={"autocommit": False})
        self._state = _State(keys={service_key: "service_role", anon_key: "anon"}, max_rows=max_rows)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self._pool, self._state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="postgrest-fake", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def calls(self) -> list[Call]:
        with self._state.lock:
            return list(self._state.calls)

    def calls_to(self, function: str) -> list[Call]:
        return [c for c in self.calls if c.function == function]

    def fail_next(self, n: int, *, status: int = 503, function: str | None = None, after_commit: bool = False) -> None:
        """The next n calls (to `function`, or to any) answer `status`; with after_commit, only after
        running and committing the call, as when the answer is lost on the way back."""
        with self._state.lock:
            self._state.faults.append(Fault("status", n, status=status, after_commit=after_commit, function=function))

    def redirect_to(self, base_url: str) -> None:
        """Answer every call with a 301 to the same path on another host (as http:// → https:// does)."""
        with self._state.lock:
            self._state.redirect = base_url

    def hang_next(self, n: int, seconds: float, *, function: str | None = None) -> None:
        """The next n calls wait `seconds` (past the client's timeout), then drop without running."""
        with self._state.lock:
            self._state.faults.append(Fault("hang", n, seconds=seconds, function=function))

    def start(self) -> PostgrestFake:
        self._pool.open(wait=True, timeout=10)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._pool.close()

    def __enter__(self) -> PostgrestFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the PostgREST part --------------------------------------------------------------------------

_STATUS_BY_SQLSTATE = [
    ("08", 503),
    ("09", 500),
    ("0L", 403),
    ("0P", 403),
    ("23503", 409),
    ("23505", 409),
    ("25006", 405),
    ("25", 500),
    ("28", 403),
    ("2D", 500),
    ("38", 500),
    ("39", 500),
    ("3B", 500),
    ("40", 500),
    ("53400", 500),
    ("53", 503),
    ("54", 500),
    ("55", 500),
    ("57", 500),
    ("58", 500),
    ("F0", 500),
    ("HV", 500),
    ("P0001", 400),
    ("P0", 500),
    ("XX", 500),
    ("42883", 404),
    ("42P01", 404),
    ("42P17", 500),
]


def http_status(sqlstate: str, role: str | None) -> int:
    """PostgREST's mapping of SQLSTATE to HTTP status (docs: references/errors, 'HTTP Status Codes')."""
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    for prefix, status in _STATUS_BY_SQLSTATE:
        if sqlstate.startswith(prefix):
            return status
    return 400


@dataclass(frozen=True)
class _Function:
    schema: str
    name: str
    returns_set: bool
    args: list[tuple[str, str]]  # input arguments: (name, type), in order
    required: int  # how many leading input arguments have no default


def _functions(conn: psycopg.Connection[Any], schema: str, name: str) -> list[_Function]:
    rows = conn.execute(
        """
        SELECT p.proretset, coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}'),
               array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t), p.pronargs, p.pronargdefaults
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = %s AND p.proname = %s AND p.prokind = 'f'
        """,
        (schema, name),
    ).fetchall()
    found = []
    for retset, names, modes, types, nargs, ndefaults in rows:
        input_names = [n for i, n in enumerate(names) if not modes or modes[i] in _INPUT_MODES]
        found.append(_Function(schema, name, retset, list(zip(input_names, types, strict=True)), nargs - ndefaults))
    return found


def _pick(candidates: list[_Function], keys: set[str]) -> _Function | None:
    """PostgREST's overload choice for a POST: every passed key is an argument, every required one is passed."""
    for fn in candidates:
        names = [n for n, _ in fn.args]
        if keys <= set(names) and set(names[: fn.required]) <= keys:
            return fn
    return None


def _call_query(fn: _Function, keys: set[str], offset: int, limit: int) -> sql.Composed:
    passed = [(n, t) for n, t in fn.args if n in keys]
    target = sql.SQL("{}.{}").format(sql.Identifier(fn.schema), sql.Identifier(fn.name))
    call_args = sql.SQL(", ").join(
        sql.SQL("{} := pgrst_args.{}").format(sql.Identifier(n), sql.Identifier(n)) for n, _ in passed
    )
    if passed:
        columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in passed)
        source = sql.SQL("json_to_record(%(body)s::json) AS pgrst_args({})").format(columns)
    else:
        source = sql.SQL("(SELECT %(body)s::json AS body) AS pgrst_args")
    if fn.returns_set:
        return sql.SQL(
            "SELECT coalesce(json_agg(pgrst_page), '[]')::text FROM "
            "(SELECT pgrst_call.* FROM {}, LATERAL {}({}) pgrst_call LIMIT {} OFFSET {}) pgrst_page"
        ).format(source, target, call_args, sql.Literal(limit), sql.Literal(offset))
    return sql.SQL("SELECT to_json({}({}))::text FROM {}").format(target, call_args, source)


def _error(code: str, message: str, details: str | None = None, hint: str | None = None) -> dict[str, Any]:
    return {"code": code, "details": details, "hint": hint, "message": message}


def _handler_class(pool: ConnectionPool[Any], state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "postgrest-fake"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms a call.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any, *, raw: bool = False, headers: dict[str, str] | None = None) -> None:
            payload = body.encode() if raw else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if raw else "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up (timeout test)
                self.wfile.write(payload)

        def do_GET(self) -> None:
            self._send(404, "<html><body>Not Found</body></html>", raw=True)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw_body = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            match = _RPC_PATH.match(path)
            if not match:
                self._send(404, "<html><body>Not Found</body></html>", raw=True)
                return
            function = match.group(1)
            if state.redirect:
                self._send(301, "<html>Moved</html>", raw=True, headers={"Location": f"{state.redirect}{self.path}"})
                return
            if not self.headers.get("apikey"):
                self._send(401, {"message": "No API key found in request", "hint": "No `apikey` request header"})
                return
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            role = state.keys.get(token)
            if role is None:
                self._send(
                    401,
                    _error("PGRST301", "JWSError JWSInvalidSignature"),
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
                state.record(Call(function, None, 401, False))
                return

            fault = state.take_fault(function)
            if fault is not None and fault.kind == "hang":
                state.record(Call(function, role, 0, False))
                state.stopping.wait(fault.seconds)
                self.close_connection = True
                return
            if fault is not None and not fault.after_commit:
                state.record(Call(function, role, fault.status, False))
                self._send(fault.status, "upstream connect error or disconnect/reset before headers", raw=True)
                return

            try:
                body = json.loads(raw_body or b"{}")
            except ValueError:
                self._send(400, _error("PGRST102", "Empty or invalid json"))
                return
            if not isinstance(body, dict):
                self._send(400, _error("PGRST102", "Expected a JSON object of named arguments"))
                return
            schema = self.headers.get("Content-Profile") or "public"
            page = {k: int(v[0]) for k, v in parse_qs(query).items() if k in ("offset", "limit")}
            offset, limit = page.get("offset", 0), min(page.get("limit", state.max_rows), state.max_rows)
            status, answer = self._execute(schema, function, body, role, offset, limit)
            state.record(Call(function, role, fault.status if fault else status, status == 200))
            if fault is not None:  # ran and committed, but the answer is lost
                self._send(fault.status, "upstream connect error or disconnect/reset before headers", raw=True)
                return
            self._send(status, answer)

        def _execute(
            self, schema: str, function: str, body: dict[str, Any], role: str, offset: int, limit: int
        ) -> tuple[int, Any]:
            keys = set(body)
            try:
                with pool.connection() as conn:
                    fn = _pick(_functions(conn, schema, function), keys)
                    conn.rollback()
                    if fn is None:
                        wanted = ", ".join(sorted(keys))
                        return 404, _error(
                            "PGRST202",
                            f"Could not find the function {schema}.{function}({wanted}) in the schema cache",
                            f"Searched for the function {schema}.{function} with parameters {wanted} or with a "
                            "single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
                        )
                    with conn.transaction():
                        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                        query = _call_query(fn, keys, offset, limit)
                        row = conn.execute(query, {"body": json.dumps(body)}).fetchone()
                    text = row[0] if row and row[0] is not None else "null"  # a SQL NULL is JSON null
                    return 200, json.loads(text)
            except psycopg.Error as exc:
                diag = exc.diag
                code = diag.sqlstate or "XX000"
                return http_status(code, role), _error(
                    code, diag.message_primary or str(exc), diag.message_detail, diag.message_hint
                )

    return Handler


# --- setting up a Supabase-like database ---------------------------------------------------------

SUPABASE_ROLES = ("anon", "authenticated", "service_role")


def ensure_supabase_roles(admin_url: str) -> None:
    """Create Supabase's API roles in the cluster if missing (roles are cluster-wide). As on Supabase,
    service_role bypasses row-level security; anon and authenticated do not."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role in SUPABASE_ROLES:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateObject):
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute("ALTER ROLE service_role BYPASSRLS")


def supabase_defaults(url: str) -> None:
    """Supabase's default privileges: new functions and tables in public are granted to the API roles,
    so the migration must revoke EXECUTE from anon and authenticated by name."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role"
        )
        conn.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role"
        )


def apply_migration(url: str, texts: list[str] | None = None) -> None:
    """Apply the committed migration files in order, each whole, as `supabase db push` does (or the SQL
    editor, file by file). `texts` replaces the files' contents (e.g. with renamed roles)."""
    migrations = texts if texts is not None else [path.read_text(encoding="utf-8") for path in supabase_files()]
    with psycopg.connect(url, autocommit=True) as conn:
        for migration in migrations:
            conn.execute(migration.encode())
