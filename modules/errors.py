"""The errors that cross layer boundaries. Adapters translate their library's exceptions into these;
the orchestrator decides policy from the class alone, never from HTTP codes or SDK types."""

from __future__ import annotations


class BatchEmbeddingError(Exception):
    """Base of every error this package raises on purpose."""


# --- Embedding API -------------------------------------------------------------------------------


class EmbeddingError(BatchEmbeddingError):
    """A call to the embedding API did not give usable vectors for a batch."""


class RateLimitedError(EmbeddingError):
    """HTTP 429: the quota is spent for now. Never the chunks' fault: pause all senders, retry whole."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        quota_kind: str | None = None,
        quota_limit: int | None = None,
        *,
        per_day: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # the server's RetryInfo, when it gave a usable one (> 0)
        self.quota_kind = quota_kind  # "requests" or "tokens", when the server named the quota
        self.quota_limit = quota_limit
        self.per_day = per_day  # a per-day quota: it comes back tomorrow, not in seconds


class TransientEmbeddingError(EmbeddingError):
    """5xx, timeouts, dropped connections, malformed or inconsistent answers: worth retrying as is."""

    def __init__(self, message: str, *, refused: bool = False, outage: bool = True) -> None:
        super().__init__(message)
        # The server answered with an error before doing the work (500/502/503): taken as not charged
        # to the quota. A timeout, a dropped connection or a broken answer may have been.
        self.refused = refused
        # The API's state, not the chunks' (connection refused, DNS, timeout, 5xx): counted by the circuit
        # breaker. A broken answer (wrong count, NaN, degenerate vector) may be about one text: not counted.
        self.outage = outage


class PermanentEmbeddingError(EmbeddingError):
    """A 4xx about the request's content (HTTP 400): retrying the same batch won't help; split it."""


class ProviderConfigError(EmbeddingError):
    """Wrong key, no permission, unknown model: a run-level error, never charged to chunks."""


# --- Database ------------------------------------------------------------------------------------


class StoreError(BatchEmbeddingError):
    """The chunk store failed in a way the run cannot carry on from."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached (down, wrong address, refused)."""


class SchemaMismatchError(StoreError):
    """The database schema does not fit the settings (e.g. vector dimension, missing table)."""


class UnknownDocumentError(BatchEmbeddingError):
    """A document id that is not in the documents table."""

    def __init__(self, doc_id: str) -> None:
        super().__init__(f"document {doc_id!r} was not found")
        self.doc_id = doc_id


class RunAborted(BatchEmbeddingError):
    """The run stopped early for a reason that is not any chunk's fault (quota, config, shutdown)."""


class ApiUnavailableError(RunAborted):
    """The embedding API could not be used: an outage (the circuit breaker opened), a quota exhausted
    beyond what the run may wait, or a key that stopped working mid-run. No chunk was charged and every
    chunk the run held went back to pending. `retry_hint` says when to try again (CLI exit code 3)."""

    def __init__(self, message: str, retry_hint: str) -> None:
        super().__init__(message)
        self.retry_hint = retry_hint


class DatabaseLostError(ApiUnavailableError):
    """The database went away after the run began and did not come back in time: nothing was charged
    (results not yet written are lost, their chunks' leases expire), exit 3 like an API outage."""


class ModelMismatchError(BatchEmbeddingError):
    """The vector column holds vectors of another model than the configured one: adding ours would mix
    two vector spaces that search cannot compare."""
