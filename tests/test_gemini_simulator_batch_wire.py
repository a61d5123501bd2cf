"""The simulator's Batch and Files APIs on the wire (raw HTTP where the SDK hides what Google sends):
the Operation JSON, result shapes, keys and errors, a lost create and 503s, the resumable upload
protocol, the runtime config, and the job timeline as a pure function."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from google.genai import errors

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, simulated_embedding
from modules.gemini_simulator.batch_jobs import BatchJob, BatchState, Outcome, advance, next_transition
from modules.gemini_simulator.models import MODELS
from tests.test_gemini_simulator import (  # noqa: F401  (the autouse fixture is found by name)
    KEY,
    MODEL,
    TRANSPORT_PROTOCOL_ERRORS,
    _close_sdk_clients,
    client_for,
)

pytestmark = pytest.mark.filterwarnings("ignore:batches.create_embeddings")

CREATE = f"/v1beta/models/{MODEL}:asyncBatchEmbedContent"
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatchOutput"


@pytest.fixture
async def sim() -> AsyncIterator[GeminiSimulator]:
    config = SimulatorConfig(api_key=KEY, batch_pending_seconds=0.05, batch_running_seconds=0.1)
    async with GeminiSimulator(config) as simulator:
        yield simulator


@pytest.fixture
async def http(sim: GeminiSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, headers={"x-goog-api-key": KEY}) as client:
        yield client


def inline_body(texts: list[str], dims: int = 128, **batch: Any) -> dict[str, Any]:
    requests = [{"request": {"content": {"parts": [{"text": t}]}, "outputDimensionality": dims}} for t in texts]
    return {"batch": {"inputConfig": {"requests": {"requests": requests}}, **batch}}


async def finished(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    for _ in range(500):
        operation: dict[str, Any] = (await http.get(f"/v1beta/{name}")).json()
        if operation.get("done"):
            return operation
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} did not end")


# ----------------------------------------------------------------------------- the Operation


@pytest.mark.asyncio
async def test_created_and_finished_operations_have_googles_shape(http: httpx.AsyncClient) -> None:
    body = inline_body(["東京", "大阪"], displayName="shapes", priority="3")
    body["batch"]["inputConfig"]["requests"]["requests"][0]["metadata"] = {"key": "row-1", "n": 1}
    created = await http.post(CREATE, json=body)
    assert created.status_code == 200
    operation = created.json()
    name = operation["name"]
    assert name.startswith("batches/") and len(name) == len("batches/") + 36
    assert set(operation) == {"name", "metadata"}  # no "done" while pending (proto3 omits false)
    metadata = operation["metadata"]
    assert metadata["@type"] == BATCH_TYPE and metadata["name"] == name
    assert (metadata["model"], metadata["displayName"], metadata["priority"]) == (f"models/{MODEL}", "shapes", "3")
    assert metadata["state"] == "BATCH_STATE_PENDING" and metadata["createTime"] == metadata["updateTime"]
    assert metadata["createTime"].endswith("Z") and "endTime" not in metadata and "output" not in metadata
    assert metadata["batchStats"] == {"requestCount": "2", "pendingRequestCount": "2"}

    done = await finished(http, name)
    assert done["done"] is True and "error" not in done
    metadata = done["metadata"]
    assert metadata["state"] == "BATCH_STATE_SUCCEEDED" and metadata["endTime"] == metadata["updateTime"]
    assert metadata["batchStats"] == {"requestCount": "2", "successfulRequestCount": "2"}
    assert done["response"] == {"@type": OUTPUT_TYPE, **metadata["output"]}
    results = metadata["output"]["inlinedResponses"]["inlinedResponses"]
    assert results[0]["metadata"] == {"key": "row-1", "n": 1} and "metadata" not in results[1]
    for result, text in zip(results, ["東京", "大阪"], strict=True):
        assert set(result["response"]) == {"embedding", "tokenCount"} and result["response"]["tokenCount"] == "2"
        values = np.asarray(result["response"]["embedding"]["values"], dtype=np.float32)
        np.testing.assert_array_equal(values, simulated_embedding(text, 128))


@pytest.mark.asyncio
async def test_ended_jobs_carry_an_operation_error_and_no_output(sim: GeminiSimulator, http: httpx.AsyncClient) -> None:
    sim.config.batch_pending_seconds = 30.0
    cancelled = (await http.post(CREATE, json=inline_body(["b"]))).json()["name"]
    assert (await http.post(f"/v1beta/{cancelled}:cancel")).json() == {}
    sim.config.batch_pending_seconds = 0.05
    sim.config.batch_fail_rate = 1.0
    failed = (await http.post(CREATE, json=inline_body(["a"]))).json()["name"]
    for name, state, code in ((failed, "BATCH_STATE_FAILED", 13), (cancelled, "BATCH_STATE_CANCELLED", 1)):
        operation = await finished(http, name)
        assert operation["metadata"]["state"] == state and operation["error"]["code"] == code
        assert "response" not in operation and "output" not in operation["metadata"]
        assert operation["metadata"]["batchStats"] == {"requestCount": "1"}


@pytest.mark.asyncio
async def test_token_count_can_be_left_out(sim: GeminiSimulator, http: httpx.AsyncClient) -> None:
    patched = await http.post("/_sim/config", json={"batch_token_count": "false", "batch_running_seconds": 0})
    assert patched.status_code == 200 and patched.json()["batch_token_count"] is False
    assert (await http.post("/_sim/config", json={"batch_token_count": "maybe"})).status_code == 400
    created = await client_for(sim).aio.batches.create_embeddings(
        model=MODEL, src={"inlined_requests": {"contents": ["x"]}}
    )
    operation = await finished(http, str(created.name))
    (result,) = operation["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert set(result["response"]) == {"embedding"}


@pytest.mark.asyncio
async def test_v1_and_v1beta_serve_the_same_jobs(http: httpx.AsyncClient) -> None:
    name = (await http.post(f"/v1/models/{MODEL}:asyncBatchEmbedContent", json=inline_body(["v"]))).json()["name"]
    assert (await http.get(f"/v1beta/{name}")).json()["name"] == name
    listed = (await http.get("/v1/batches")).json()
    assert [op["name"] for op in listed["operations"]] == [name] and "nextPageToken" not in listed


@pytest.mark.asyncio
async def test_list_pages_by_token_and_refuses_a_bad_one(http: httpx.AsyncClient) -> None:
    names = [(await http.post(CREATE, json=inline_body([f"t{i}"]))).json()["name"] for i in range(3)]
    first = (await http.get("/v1beta/batches", params={"pageSize": 2})).json()
    second = (await http.get("/v1beta/batches", params={"pageSize": 2, "pageToken": first["nextPageToken"]})).json()
    assert [op["name"] for op in first["operations"] + second["operations"]] == names[::-1]
    assert "nextPageToken" not in second
    bad = await http.get("/v1beta/batches", params={"pageToken": "garbage"})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    for name in names:
        assert (await http.delete(f"/v1beta/{name}")).json() == {}
    assert (await http.get("/v1beta/batches")).json() == {}


# ----------------------------------------------------------------------------- keys and bad requests


@pytest.mark.asyncio
async def test_batch_and_file_calls_need_the_api_key(sim: GeminiSimulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as anonymous:
        for method, path in (("POST", CREATE), ("GET", "/v1beta/batches"), ("GET", "/v1beta/files/x")):
            missing = await anonymous.request(method, path, json=inline_body(["k"]))
            assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
            wrong = await anonymous.request(method, path, headers={"x-goog-api-key": "wrong"})
            assert wrong.status_code == 400
            assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert sim.stats.batch_jobs_created == 0


@pytest.mark.asyncio
async def test_bad_create_bodies_and_unknown_names_answer_like_google(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    with pytest.raises(errors.ClientError) as caught:
        await client.aio.batches.get(name="batches/doesnotexist")
    assert (caught.value.code, caught.value.status, caught.value.message) == (
        404,
        "NOT_FOUND",
        "Requested entity was not found.",
    )
    with pytest.raises(errors.ClientError) as caught:
        await client.aio.batches.create_embeddings(
            model="text-embedding-004", src={"inlined_requests": {"contents": ["x"]}}
        )
    assert caught.value.code == 404 and "asyncBatchEmbedContent" in str(caught.value.message)
    with pytest.raises(errors.ClientError) as caught:  # one bad request refuses the whole job
        await client.aio.batches.create_embeddings(
            model=MODEL, src={"inlined_requests": {"contents": ["x", "y"], "config": {"output_dimensionality": 64}}}
        )
    assert caught.value.code == 400 and "output_dimensionality must be between 128 and 3072" in str(
        caught.value.message
    )
    async with httpx.AsyncClient(base_url=sim.base_url, headers={"x-goog-api-key": KEY}) as http:
        unknown = await http.post(CREATE, json={"batch": {"inputConfig": {"requests": {"requests": []}}, "color": 1}})
        assert unknown.status_code == 400 and 'Unknown name "color"' in unknown.json()["error"]["message"]
        both = await http.post(CREATE, json={"batch": {"inputConfig": {"fileName": "files/a", "requests": {}}}})
        assert both.status_code == 400
        assert (await http.put("/v1beta/batches")).status_code == 405
    assert sim.stats.batch_jobs_created == 0


# ----------------------------------------------------------------------------- injected trouble


@pytest.mark.asyncio
async def test_a_lost_create_answer_still_created_the_job_and_a_retry_makes_a_second(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    src: Any = {"inlined_requests": {"contents": ["once"]}}
    sim.config.batch_lost_create_rate = 1.0
    with pytest.raises(TRANSPORT_PROTOCOL_ERRORS):
        await client.aio.batches.create_embeddings(model=MODEL, src=src, config={"display_name": "nightly"})
    assert [job.name async for job in await client.aio.batches.list()] != []  # it exists all the same
    sim.config.batch_lost_create_rate = 0.0
    await client.aio.batches.create_embeddings(model=MODEL, src=src, config={"display_name": "nightly"})
    assert sim.stats.batch_jobs_by_display_name == {"nightly": 2} and sim.stats.faults["batch_lost_create"] == 1


@pytest.mark.asyncio
async def test_503s_have_no_effect(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    created = await client.aio.batches.create_embeddings(model=MODEL, src={"inlined_requests": {"contents": ["z"]}})
    sim.config.batch_error_rate_503 = 1.0
    for call in (
        client.aio.batches.get(name=str(created.name)),
        client.aio.batches.cancel(name=str(created.name)),
        client.aio.batches.create_embeddings(model=MODEL, src={"inlined_requests": {"contents": ["z"]}}),
    ):
        with pytest.raises(errors.ServerError) as caught:
            await call
        assert caught.value.code == 503
    sim.config.batch_error_rate_503 = 0.0
    job = await client.aio.batches.get(name=str(created.name))
    assert job.state is not None and job.state.name != "JOB_STATE_CANCELLED"
    assert sim.stats.batch_jobs_created == 1 and sim.stats.faults["batch_503"] == 3


# ----------------------------------------------------------------------------- the upload protocol


@pytest.mark.asyncio
async def test_resumable_upload_by_hand_and_the_rest_download_path(
    sim: GeminiSimulator, http: httpx.AsyncClient
) -> None:
    data = b'{"key": "a", "request": {"content": {"parts": [{"text": "hand"}]}}}\n'
    start = await http.post(
        "/upload/v1beta/files",
        json={"file": {"display_name": "by-hand"}},
        headers={
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(len(data)),
            "X-Goog-Upload-Header-Content-Type": "application/jsonl",
        },
    )
    assert start.status_code == 200 and start.headers["x-goog-upload-status"] == "active"
    upload_url = start.headers["x-goog-upload-url"]
    assert upload_url.startswith(f"{sim.base_url}/upload/v1beta/files?upload_id=")
    async with httpx.AsyncClient() as keyless:  # the upload URL is the credential
        wrong = await keyless.post(
            upload_url, content=data[:5], headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "3"}
        )
        assert wrong.status_code == 400 and wrong.headers["x-goog-upload-status"] == "final"
        part = await keyless.post(
            upload_url, content=data[:5], headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"}
        )
        assert part.headers["x-goog-upload-status"] == "active"
        rest = await keyless.post(
            upload_url,
            content=data[5:],
            headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "5"},
        )
    assert rest.headers["x-goog-upload-status"] == "final"
    file = rest.json()["file"]
    assert (file["displayName"], file["mimeType"], file["sizeBytes"]) == (
        "by-hand",
        "application/jsonl",
        str(len(data)),
    )
    assert (file["state"], file["source"]) == ("ACTIVE", "UPLOADED") and "downloadUri" not in file

    body = {"batch": {"display_name": "from-file", "input_config": {"file_name": file["name"]}}}
    name = (await http.post(CREATE, json=body)).json()["name"]
    operation = await finished(http, name)
    assert operation["metadata"]["inputConfig"] == {"fileName": file["name"]}
    result_file = operation["response"]["responsesFile"]
    assert operation["metadata"]["output"] == {"responsesFile": result_file}
    downloaded = await http.get(f"/download/v1beta/{result_file}:download", params={"alt": "media"})
    (line,) = [json.loads(x) for x in downloaded.content.splitlines()]
    assert line["key"] == "a"
    np.testing.assert_array_equal(
        np.asarray(line["response"]["embedding"]["values"], dtype=np.float32), simulated_embedding("hand", 3072)
    )
    described = (await http.get(f"/v1beta/{result_file}")).json()
    assert described["source"] == "GENERATED" and described["downloadUri"].endswith(f"{result_file}:download?alt=media")
    assert (await http.delete(f"/v1beta/{result_file}")).json() == {}
    gone = await http.get(f"/v1beta/{result_file}")
    assert gone.status_code == 403 and "or it may not exist" in gone.json()["error"]["message"]


# ----------------------------------------------------------------------------- the timeline


def _job(outcome: Outcome = Outcome.SUCCEED) -> BatchJob:
    return BatchJob("batches/x", 1, MODELS[MODEL], "", 0, [], outcome, create_time=100.0)


def test_transitions_take_effect_when_due_with_the_live_durations() -> None:
    config = SimulatorConfig(batch_pending_seconds=10, batch_running_seconds=20, batch_expire_seconds=1000)
    job = _job()
    assert next_transition(job, config) == (BatchState.RUNNING, 110.0)
    assert advance(job, 109.9, config) == []
    assert advance(job, 125.0, config) == [BatchState.RUNNING] and job.update_time == 110.0
    config.batch_running_seconds = 5  # live: the running job ends 5 s after it started
    assert advance(job, 999.0, config) == [BatchState.SUCCEEDED]
    assert (job.update_time, job.end_time) == (115.0, 115.0)
    assert next_transition(job, config) is None and advance(job, 10_000.0, config) == []


def test_a_job_expires_from_pending_or_running_at_its_deadline() -> None:
    config = SimulatorConfig(batch_pending_seconds=10, batch_running_seconds=20, batch_expire_seconds=25)
    slow = _job()
    assert advance(slow, 200.0, config) == [BatchState.RUNNING, BatchState.EXPIRED] and slow.end_time == 125.0
    stuck = _job(Outcome.EXPIRE)
    config.batch_running_seconds = 1
    assert advance(stuck, 124.0, config) == [BatchState.RUNNING]
    assert advance(stuck, 125.0, config) == [BatchState.EXPIRED]
    config.batch_pending_seconds = 50
    late = _job()
    assert advance(late, 130.0, config) == [BatchState.EXPIRED] and late.end_time == 125.0
    failing = _job(Outcome.FAIL)
    config.batch_pending_seconds = 1
    assert advance(failing, 130.0, config) == [BatchState.RUNNING, BatchState.FAILED] and failing.end_time == 102.0
