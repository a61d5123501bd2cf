"""Chaos: the embedding API misbehaves, one fault kind at a time, each on a fresh database.

The real google-genai client talks HTTP to the simulator, which answers 500/503 (also in bursts),
answers after the client's timeout, drops the connection, sends malformed JSON, one vector too few or
too many, a vector of the wrong length, or a NaN. At a rate of 0.3 with enough retries, everything
must end embedded with the exact vectors. At 1.0, nothing may be written: when the API itself is down
(5xx, timeouts, dropped connections) the run stops with ApiUnavailableError (exit 3) and charges no
chunk; when every answer is broken, each chunk ends recorded failed with a reason that names the fault.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.errors import ApiUnavailableError
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig
from modules.settings import Settings
from tests.chaos_helpers import CHAOS_API_KEY, rows, wrong_vectors
from tests.helpers import corpus, seed_chunks

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only

# fault kind -> (simulator field set to the rate, words the recorded reason must contain)
FAULTS: dict[str, tuple[str, str]] = {
    "500": ("error_rate_500", "500"),
    "503": ("error_rate_503", "503"),
    "slow": ("slow_rate", "no complete answer"),
    "drop": ("drop_rate", "connection"),
    "malformed": ("malformed_rate", "malformed"),
    "count_mismatch": ("count_mismatch_rate", "vectors for"),
    "wrong_length": ("wrong_length_rate", "dimensions"),
    "nan": ("nan_rate", "NaN"),
}
SIM_FAULT_NAME = {"500": "error_500", "503": "error_503"}
OUTAGES = ("500", "503", "slow", "drop")  # the API's state: never a chunk's failure
BROKEN_ANSWERS = ("malformed", "count_mismatch", "wrong_length", "nan")


@pytest.fixture
async def sim() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimulatorConfig(seed=1, slow_seconds=1.0)) as simulator:
        yield simulator


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings], sim: GeminiSimulator) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": CHAOS_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": sim.base_url,
            "EMBEDDING_REQUEST_TIMEOUT": "0.3",  # a 'slow' answer (1 s) is a timeout
            "EMBEDDING_RETRY_DELAY": "0.01",
            "EMBEDDING_MAX_RETRY_DELAY": "0.05",
            "EMBEDDING_OUTAGE_SECONDS": "0.5",
        }
        values.update(overrides)
        return make_settings(**values)

    return build


async def _run(settings: Settings) -> Any:
    async with BatchEmbeddingGenerator(settings) as generator:
        return await generator.run()


@pytest.mark.parametrize("kind", list(FAULTS))
async def test_at_rate_0_3_everything_ends_embedded_with_exact_vectors(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings], kind: str
) -> None:
    n = 60
    await seed_chunks(database_url, corpus(n, docs=6))
    field, _ = FAULTS[kind]
    setattr(sim.config, field, 0.3)
    stats = await _run(settings_for(EMBEDDING_MAX_RETRIES=10, EMBEDDING_CONCURRENCY=2, EMBEDDING_BATCH_SIZE=5))

    assert sim.stats.faults[SIM_FAULT_NAME.get(kind, kind)] > 0, sim.stats.to_dict()
    assert (stats.embedded, stats.failed) == (n, 0)
    after = rows(database_url)
    assert wrong_vectors(after) == []  # each chunk holds exactly its own text's vector
    assert all(r.embedded for r in after)
    assert [r.id for r in after if r.attempts or r.error] == []  # a fault of the API is no chunk's fault


async def test_bursts_of_500_and_503_are_ridden_out(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    n = 60
    await seed_chunks(database_url, corpus(n, docs=3))
    sim.config.burst_503 = 8
    sim.config.error_rate_500 = 0.2
    sim.config.error_rate_503 = 0.2
    stats = await _run(settings_for(EMBEDDING_MAX_RETRIES=12, EMBEDDING_CONCURRENCY=1))
    faults = sim.stats.faults
    assert faults["burst_503"] == 8 and faults["error_500"] > 0 and faults["error_503"] > 0
    assert (stats.embedded, stats.failed) == (n, 0)
    after = rows(database_url)
    assert wrong_vectors(after) == [] and all(r.embedded for r in after)


@pytest.mark.parametrize("kind", OUTAGES)
async def test_at_rate_1_an_outage_stops_the_run_charges_nothing_and_releases_everything(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings], kind: str
) -> None:
    n = 12
    await seed_chunks(database_url, {"d": [f"APIが落ちている間の段落 {i}。" for i in range(n)]})
    field, words = FAULTS[kind]
    setattr(sim.config, field, 1.0)
    with pytest.raises(ApiUnavailableError) as caught:
        await _run(settings_for(EMBEDDING_MAX_RETRIES=1, EMBEDDING_BATCH_SIZE=5))
    assert words in str(caught.value) and caught.value.retry_hint
    after = rows(database_url)
    assert [r.id for r in after if r.embedded or r.leased or r.attempts or r.failed_at or r.error] == [], [
        (r.embedded, r.lease_owner, r.lease_expires_at, r.attempts, r.error) for r in after
    ]


@pytest.mark.parametrize("kind", BROKEN_ANSWERS)
async def test_at_rate_1_nothing_is_written_and_each_chunk_fails_with_the_reason(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings], kind: str
) -> None:
    n = 5
    await seed_chunks(database_url, {"d": [f"常に壊れた応答が返る段落 {i}。" for i in range(n)]})
    field, words = FAULTS[kind]
    setattr(sim.config, field, 1.0)
    stats = await _run(settings_for(EMBEDDING_MAX_RETRIES=1, EMBEDDING_BATCH_SIZE=5))

    assert (stats.embedded, stats.failed) == (0, n)
    after = rows(database_url)
    assert [r.id for r in after if r.embedded] == [], "a vector from a broken answer was written"
    assert wrong_vectors(after) == []  # and nothing is marked done without one
    for row in after:
        assert row.failed_at is not None and row.attempts == 1 and not row.leased
        assert row.error and words in row.error, f"reason {row.error!r} does not name the fault ({words})"
