"""The simulator's Batch API for embeddings, driven by the real google-genai SDK over HTTP: a job's
life over compressed time, its results (exact vectors, in order), file input and result files
through the Files API, cancel, failure, expiry, per-item errors, the 20 MB inline limit, listing,
deleting, and a job picked up by name from another process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from google import genai
from google.genai import errors, types

from modules.gemini_simulator import (
    GeminiSimulator,
    SimulatorConfig,
    count_tokens,
    model_embedding,
    run_simulator_in_thread,
    simulated_embedding,
    text_sha256,
)
from tests.test_gemini_simulator import (  # noqa: F401  (the autouse fixture is found by name)
    KEY,
    MODEL,
    ROOT,
    _close_sdk_clients,
    client_for,
)

pytestmark = pytest.mark.filterwarnings("ignore:batches.create_embeddings")

MODEL_2 = "gemini-embedding-2"
TEXTS = [f"段落{i}。東京の天気は晴れ、気温は{20 + i}度です。" for i in range(5)]
FAST = {"batch_pending_seconds": 0.1, "batch_running_seconds": 0.15}
SEEN_RUNNING = {"batch_pending_seconds": 0.2, "batch_running_seconds": 0.5}  # long enough to see RUNNING polling


@pytest.fixture
async def sim() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimulatorConfig(**FAST)) as simulator:
        yield simulator


async def create_inline(
    client: genai.Client,
    contents: list[Any],
    *,
    model: str = MODEL,
    dims: int = 768,
    display_name: str = "job",
) -> types.BatchJob:
    src = {"inlined_requests": {"contents": contents, "config": {"output_dimensionality": dims}}}
    return await client.aio.batches.create_embeddings(model=model, src=src, config={"display_name": display_name})


async def wait_done(
    client: genai.Client, name: str, timeout: float = 15.0, *, seen_first: str | None = None
) -> tuple[types.BatchJob, list[str]]:
    """Poll until the job has ended; the job and the states seen on the way (after `seen_first`,
    e.g. the state the create answered), in order."""
    deadline = time.monotonic() + timeout
    seen: list[str] = [seen_first] if seen_first else []
    while True:
        job = await client.aio.batches.get(name=name)
        assert job.state is not None
        if not seen or seen[-1] != job.state.name:
            seen.append(job.state.name)
        if job.done:
            return job, seen
        assert time.monotonic() < deadline, f"{name} still {seen[-1]}"
        await asyncio.sleep(0.02)


def vector(entry: types.InlinedEmbedContentResponse) -> np.ndarray:
    assert entry.response is not None and entry.response.embedding is not None
    return np.asarray(entry.response.embedding.values, dtype=np.float32)


def inline_results(job: types.BatchJob) -> list[types.InlinedEmbedContentResponse]:
    assert job.dest is not None and job.dest.inlined_embed_content_responses is not None
    return job.dest.inlined_embed_content_responses


# ----------------------------------------------------------------------------- inline jobs


@pytest.mark.asyncio
async def test_inline_job_goes_pending_running_succeeded_with_exact_vectors_in_order(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    sim.config.update(SEEN_RUNNING)
    created = await create_inline(client, TEXTS, display_name="nightly")
    assert created.name is not None and created.name.startswith("batches/")
    assert created.state == types.JobState.JOB_STATE_PENDING and not created.done
    assert (created.display_name, created.model) == ("nightly", f"models/{MODEL}")
    assert created.create_time is not None and created.end_time is None and created.dest is None

    job, seen = await wait_done(client, created.name, seen_first=created.state.name)
    assert seen == ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert job.end_time is not None and job.create_time is not None
    assert (job.end_time - job.create_time).total_seconds() == pytest.approx(0.7, abs=1e-3)  # due time, not poll time
    results = inline_results(job)
    assert len(results) == len(TEXTS)
    for entry, text in zip(results, TEXTS, strict=True):
        np.testing.assert_array_equal(vector(entry), simulated_embedding(text, 768))
        assert entry.response is not None and entry.response.token_count == count_tokens(text)
        assert entry.error is None and entry.metadata is None

    stats = sim.stats.snapshot()
    assert stats.batch_jobs_created == 1 and stats.batch_items_per_job == {created.name: 5}
    assert stats.batch_jobs_by_state == {"BATCH_STATE_SUCCEEDED": 1}
    assert stats.batch_embeds_per_text == {text_sha256(t): 1 for t in TEXTS}
    assert stats.batch_texts_embedded == 5 and stats.batch_texts_embedded_by_model == {MODEL: 5}
    assert stats.batch_tokens == sum(count_tokens(t) for t in TEXTS)
    # batch embeds are kept apart from the online ones
    assert stats.embeds_per_text == {} and stats.texts_embedded == 0 and stats.tokens_counted == 0
    assert sim.stats.to_dict()["tokens_by_path"] == {"online": 0, "batch": stats.batch_tokens}


@pytest.mark.asyncio
async def test_gemini_embedding_2_gets_one_vector_per_content_in_a_batch(sim: GeminiSimulator) -> None:
    """No fusion: each string is its own request, a multi-part Content is one vector of its parts."""
    client = client_for(sim)
    parts = types.Content(parts=[types.Part(text="title: 天気 | "), types.Part(text="text: 晴れ")])
    created = await create_inline(client, [TEXTS[0], TEXTS[1], parts], model=MODEL_2, dims=256)
    job, _ = await wait_done(client, str(created.name))
    expected = [TEXTS[0], TEXTS[1], "title: 天気 | text: 晴れ"]
    results = inline_results(job)
    assert len(results) == 3
    for entry, text in zip(results, expected, strict=True):
        np.testing.assert_array_equal(vector(entry), model_embedding(MODEL_2, text, 256))
    assert sim.stats.batch_texts_embedded_by_model == {MODEL_2: 3}


@pytest.mark.asyncio
async def test_creation_is_not_idempotent(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    first = await create_inline(client, TEXTS[:2], display_name="same")
    second = await create_inline(client, TEXTS[:2], display_name="same")
    assert first.name != second.name
    assert sim.stats.batch_jobs_created == 2 and sim.stats.batch_jobs_by_display_name == {"same": 2}


# ----------------------------------------------------------------------------- file input and result files


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def request_line(key: str, text: str, dims: int = 768) -> dict[str, Any]:
    return {"key": key, "request": {"content": {"parts": [{"text": text}]}, "output_dimensionality": dims}}


@pytest.mark.asyncio
async def test_file_job_reads_an_uploaded_jsonl_and_writes_a_downloadable_result_file(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    data = jsonl(
        [
            request_line("doc-1", TEXTS[0]),
            b"{not json",
            request_line("doc-2", TEXTS[1], 256),
            {"key": "doc-3"},
            request_line("doc-4", TEXTS[2]),
        ]
    )
    uploaded = await client.aio.files.upload(
        file=io.BytesIO(data), config=types.UploadFileConfig(mime_type="application/jsonl", display_name="inputs")
    )
    assert uploaded.name is not None and uploaded.name.startswith("files/")
    assert (uploaded.size_bytes, uploaded.display_name, uploaded.mime_type) == (
        len(data),
        "inputs",
        "application/jsonl",
    )
    assert uploaded.state == types.FileState.ACTIVE and uploaded.source == types.FileSource.UPLOADED
    assert (await client.aio.files.get(name=uploaded.name)).size_bytes == len(data)

    created = await client.aio.batches.create_embeddings(model=MODEL, src={"file_name": uploaded.name})
    job, seen = await wait_done(client, str(created.name))
    assert seen[-1] == "JOB_STATE_SUCCEEDED"
    assert job.dest is not None and job.dest.inlined_embed_content_responses is None
    result_name = job.dest.file_name
    assert result_name == f"files/batch-{str(created.name).removeprefix('batches/')}"

    result = await client.aio.files.get(name=result_name)
    assert result.source == types.FileSource.GENERATED and result.download_uri is not None
    content = await client.aio.files.download(file=result_name)
    lines = [json.loads(line) for line in content.decode().splitlines()]
    assert [line.get("key") for line in lines] == ["doc-1", None, "doc-2", "doc-3", "doc-4"]
    expected = {0: (TEXTS[0], 768), 2: (TEXTS[1], 256), 4: (TEXTS[2], 768)}
    for index, (text, dims) in expected.items():
        response = lines[index]["response"]
        np.testing.assert_array_equal(
            np.asarray(response["embedding"]["values"], dtype=np.float32), simulated_embedding(text, dims)
        )
        assert response["tokenCount"] == str(count_tokens(text))
    for index in (1, 3):  # a line that is not JSON, a line without a request: errors, the rest embedded
        assert lines[index]["error"]["code"] == 3 and "response" not in lines[index]
    assert sim.stats.batch_texts_embedded == 3 and sim.stats.batch_items_failed == 2
    assert sim.stats.files_uploaded == 1 and sim.stats.files_downloaded == 1

    with pytest.raises(errors.ClientError) as caught:  # an uploaded file cannot be downloaded
        await client.aio.files.download(file=uploaded.name)
    assert caught.value.code == 400


@pytest.mark.asyncio
async def test_a_file_larger_than_one_chunk_is_uploaded_in_pieces(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    long_text = "word " * 400_000  # 2 MB a line, truncated to the model's 2,048 tokens when embedded
    data = jsonl([request_line(f"k{i}", f"{i} {long_text}") for i in range(5)])
    assert len(data) > 8 * 1024 * 1024  # the SDK sends 8 MB chunks
    uploaded = await client.aio.files.upload(file=io.BytesIO(data), config={"mime_type": "application/jsonl"})
    assert uploaded.size_bytes == len(data)
    assert sim.stats.calls_by_endpoint["files.upload"] == 3  # start + 2 chunks
    created = await client.aio.batches.create_embeddings(model=MODEL, src={"file_name": str(uploaded.name)})
    job, _ = await wait_done(client, str(created.name))
    assert job.dest is not None and job.dest.file_name is not None
    lines = (await client.aio.files.download(file=job.dest.file_name)).decode().splitlines()
    assert [json.loads(line)["response"]["tokenCount"] for line in lines] == ["2048"] * 5


@pytest.mark.asyncio
async def test_a_job_on_a_missing_file_is_refused_like_the_files_api(sim: GeminiSimulator) -> None:
    with pytest.raises(errors.ClientError) as caught:
        await client_for(sim).aio.batches.create_embeddings(model=MODEL, src={"file_name": "files/nosuchfile"})
    assert (caught.value.code, caught.value.status) == (403, "PERMISSION_DENIED")
    assert "nosuchfile" in (caught.value.message or "") and sim.stats.batch_jobs_created == 0


# ----------------------------------------------------------------------------- cancel, failure, expiry, item errors


@pytest.mark.asyncio
async def test_cancel_moves_a_pending_or_running_job_to_cancelled(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    cancelled = []
    for pending_seconds, state in ((30.0, types.JobState.JOB_STATE_PENDING), (0.0, types.JobState.JOB_STATE_RUNNING)):
        sim.config.update({"batch_pending_seconds": pending_seconds, "batch_running_seconds": 30.0})
        name = str((await create_inline(client, TEXTS[:2])).name)
        assert (await client.aio.batches.get(name=name)).state == state
        await client.aio.batches.cancel(name=name)
        job = await client.aio.batches.get(name=name)
        assert job.state == types.JobState.JOB_STATE_CANCELLED and job.done and job.dest is None
        cancelled.append(name)
    sim.config.update(FAST)  # durations are live, but an ended job stays ended
    for name in cancelled:
        await client.aio.batches.cancel(name=name)  # again: nothing changes
        assert (await client.aio.batches.get(name=name)).state == types.JobState.JOB_STATE_CANCELLED
    assert sim.stats.batch_jobs_by_state == {"BATCH_STATE_CANCELLED": 2} and sim.stats.batch_texts_embedded == 0


@pytest.mark.asyncio
async def test_a_job_drawn_to_fail_ends_failed_without_results(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    sim.config.batch_fail_rate = 1.0
    sim.config.update(SEEN_RUNNING)
    created = await create_inline(client, TEXTS)
    assert created.state is not None
    job, seen = await wait_done(client, str(created.name), seen_first=created.state.name)
    assert seen == ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_FAILED"]
    assert job.dest is None and sim.stats.batch_texts_embedded == 0 and sim.stats.batch_tokens == 0


@pytest.mark.asyncio
@pytest.mark.slow  # over 1 s: the full tier only
async def test_jobs_expire_after_batch_expire_seconds_without_results(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    sim.config.batch_expire_seconds = 0.8
    sim.config.batch_expire_rate = 1.0  # never finishes by itself
    stuck = await create_inline(client, TEXTS[:2])
    while (state := (await client.aio.batches.get(name=str(stuck.name))).state) == types.JobState.JOB_STATE_PENDING:
        await asyncio.sleep(0.02)
    assert state == types.JobState.JOB_STATE_RUNNING
    sim.config.batch_expire_rate = 0.0
    sim.config.batch_pending_seconds = 60.0  # durations are live: the next job would start too late
    late = await create_inline(client, TEXTS[:2])
    stuck_job, stuck_seen = await wait_done(client, str(stuck.name), seen_first=state.name)
    late_job, late_seen = await wait_done(client, str(late.name), seen_first="JOB_STATE_PENDING")
    assert stuck_seen == ["JOB_STATE_RUNNING", "JOB_STATE_EXPIRED"]
    assert late_seen == ["JOB_STATE_PENDING", "JOB_STATE_EXPIRED"]
    for job in (stuck_job, late_job):
        assert job.dest is None and job.end_time is not None and job.create_time is not None
        assert (job.end_time - job.create_time).total_seconds() == pytest.approx(0.8, abs=1e-3)
    assert sim.stats.batch_jobs_by_state == {"BATCH_STATE_EXPIRED": 2}


@pytest.mark.asyncio
async def test_per_item_errors_replace_some_embeddings_deterministically(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    sim.config.batch_item_error_rate = 0.3
    sim.config.seed = 11
    texts = [f"item {i}" for i in range(40)]

    async def pattern() -> list[bool]:
        created = await create_inline(client, texts, dims=128)
        job, _ = await wait_done(client, str(created.name))
        failed = []
        for entry, text in zip(inline_results(job), texts, strict=True):
            if entry.error is not None:
                assert (entry.error.code, entry.response) == (13, None)
                failed.append(True)
            else:
                np.testing.assert_array_equal(vector(entry), simulated_embedding(text, 128))
                failed.append(False)
        return failed

    first = await pattern()
    assert 0 < sum(first) < len(texts)
    assert sim.stats.batch_items_failed == sum(first) and sim.stats.batch_texts_embedded == len(texts) - sum(first)
    sim.reset()
    assert await pattern() == first  # same seed, same items fail


@pytest.mark.asyncio
async def test_when_every_item_fails_the_sdk_files_them_under_inlined_responses(sim: GeminiSimulator) -> None:
    """The SDK renames inlinedResponses to inlined_embed_content_responses only when some item has
    an embedding (t_recv_batch_job_destination): a job whose items all failed shows its errors in
    dest.inlined_responses. A client must look in both."""
    client = client_for(sim)
    sim.config.batch_item_error_rate = 1.0
    job, _ = await wait_done(client, str((await create_inline(client, TEXTS[:2])).name))
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.dest is not None
    assert job.dest.inlined_embed_content_responses is None and job.dest.inlined_responses is not None
    assert [entry.error.code for entry in job.dest.inlined_responses if entry.error] == [13, 13]


@pytest.mark.asyncio
async def test_reset_forgets_jobs_and_files(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    created = await create_inline(client, TEXTS[:1])
    uploaded = await client.aio.files.upload(file=io.BytesIO(b"{}\n"), config={"mime_type": "application/jsonl"})
    sim.reset()
    for call in (client.aio.batches.get(name=str(created.name)), client.aio.files.get(name=str(uploaded.name))):
        with pytest.raises(errors.ClientError):
            await call
    assert sim.stats.batch_jobs_created == 0 and sim.stats.batch_jobs_by_state == {}


@pytest.mark.asyncio
async def test_over_limit_and_poison_items_fail_alone_in_a_batch(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    sim.config.over_limit = "reject"
    sim.config.poison_marker = "POISON"
    texts = ["fine", "x" * (4 * 2048 + 4), "has POISON in it", "also fine"]
    created = await create_inline(client, texts, dims=128)
    job, _ = await wait_done(client, str(created.name))
    results = inline_results(job)
    assert [entry.error.code if entry.error else None for entry in results] == [None, 3, 3, None]
    assert results[1].error is not None and "exceeds the maximum number of tokens" in str(results[1].error.message)


# ----------------------------------------------------------------------------- limits, listing, deleting


@pytest.mark.asyncio
@pytest.mark.slow  # over 1 s: the full tier only
async def test_inline_requests_over_20_mb_are_refused_with_googles_400(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    big = "a" * (10 * 1024 * 1024 + 512 * 1024)  # two of these: ~21 MB of JSON
    with pytest.raises(errors.ClientError) as caught:
        await create_inline(client, [big, big])
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert caught.value.message == "Request payload size exceeds the limit: 20971520 bytes."
    assert sim.stats.batch_jobs_created == 0
    under = "b" * (9 * 1024 * 1024)  # ~18 MB: accepted, each text truncated to 2,048 tokens
    job, _ = await wait_done(client, str((await create_inline(client, [under, under + "c"])).name))
    assert [entry.response.token_count for entry in inline_results(job) if entry.response] == [2048, 2048]


@pytest.mark.asyncio
async def test_list_pages_newest_first_and_delete_forgets_a_job(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    names = [str((await create_inline(client, TEXTS[:1], display_name=f"j{i}")).name) for i in range(5)]
    pager = await client.aio.batches.list(config={"page_size": 2})
    assert len(pager.page) == 2
    listed = [job.name async for job in pager]
    assert listed == names[::-1]
    assert sim.stats.calls_by_endpoint["batches.list"] == 3  # pages of 2, 2 and 1

    deleted = await client.aio.batches.delete(name=names[0])
    assert deleted.error is None
    with pytest.raises(errors.ClientError) as caught:
        await client.aio.batches.get(name=names[0])
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    assert [job.name async for job in await client.aio.batches.list()] == names[:0:-1]
    assert sim.stats.batch_jobs_deleted == 1 and sum(sim.stats.batch_jobs_by_state.values()) == 4


# ----------------------------------------------------------------------------- another process


_PICK_UP = """
import json, sys, time
from google import genai
from google.genai import types

base_url, key, name = sys.argv[1:4]
client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url))
job = client.batches.get(name=name)
while not job.done:
    time.sleep(0.05)
    job = client.batches.get(name=name)
results = job.dest.inlined_embed_content_responses
print(json.dumps({"state": job.state.name, "vectors": [r.response.embedding.values for r in results]}))
"""


@pytest.mark.slow
def test_a_job_survives_its_client_and_is_picked_up_by_name_from_another_process() -> None:
    config = SimulatorConfig(batch_pending_seconds=0.3, batch_running_seconds=0.3)
    with run_simulator_in_thread(config) as simulator:
        client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=simulator.base_url))
        src: Any = {"inlined_requests": {"contents": TEXTS[:3], "config": {"output_dimensionality": 256}}}
        name = str(client.batches.create_embeddings(model=MODEL, src=src).name)
        client.close()  # the product dies here; the job lives on in the simulator
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
        out = subprocess.run(
            [sys.executable, "-c", _PICK_UP, simulator.base_url, KEY, name],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=True,
        ).stdout
        picked = json.loads(out)
        assert picked["state"] == "JOB_STATE_SUCCEEDED"
        for values, text in zip(picked["vectors"], TEXTS[:3], strict=True):
            np.testing.assert_array_equal(np.asarray(values, dtype=np.float32), simulated_embedding(text, 256))
        assert simulator.stats.snapshot().batch_jobs_created == 1
