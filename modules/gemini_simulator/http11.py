"""HTTP/1.1 over asyncio streams with h11: reading a request, and the ways an answer can leave.

An answer goes whole (the normal case), or not at all (the connection is dropped), or never (a hang:
the request is read and the server waits, silent, until the client gives up and closes), or a few
bytes at a time (a drip: the status line and headers at once, then the body at a set pace, so a
client whose timeout is per read never times out and only a total deadline ends the wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import h11

JSON = "application/json; charset=UTF-8"
BASE_HEADERS = (("server", "scaffolding on HTTPServer2"), ("vary", "Origin, X-Origin, Referer"))
MAX_HEADER_BYTES = 64 * 1024
_READ_SIZE = 256 * 1024
_DRIPS_PER_SECOND = 4  # a dripped body is written in this many pieces a second (at least a byte each)
_REASONS = {200: b"OK", 400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed"}
_REASONS |= {301: b"Moved Permanently", 302: b"Found", 303: b"See Other", 307: b"Temporary Redirect"}
_REASONS |= {308: b"Permanent Redirect", 429: b"Too Many Requests", 500: b"Internal Server Error"}
_REASONS |= {409: b"Conflict", 503: b"Service Unavailable"}


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = JSON
    headers: Sequence[tuple[str, str]] = ()  # extra headers (e.g. Location)
    drop: bool = False  # close the connection without answering
    close: bool = False  # answer, then close the connection
    hang: bool = False  # never answer; close once the client has gone
    drip_bytes_per_second: float | None = None  # send the body at this pace
    on_delivered: Callable[[], None] | None = None  # called once the whole body was written


class BodyTooLarge(Exception):
    pass


async def read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_body: int
) -> tuple[h11.Request, bytes] | None:
    """The next request and its body, or None when the client closed the connection."""
    request: h11.Request | None = None
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:  # curl asks before sending large bodies
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            conn.receive_data(await reader.read(_READ_SIZE))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > max_body:
                raise BodyTooLarge
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, b"".join(chunks)
        else:  # ConnectionClosed, PAUSED
            return None


def _head(conn: h11.Connection, reply: Reply) -> bytes:
    headers = [
        ("content-type", reply.content_type),
        ("content-length", str(len(reply.body))),
        *BASE_HEADERS,
        *reply.headers,
    ]
    if reply.close:
        headers.append(("connection", "close"))
    response = h11.Response(status_code=reply.status, headers=headers, reason=_REASONS.get(reply.status, b""))
    return conn.send(response) or b""


def send(conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
    """Write the whole answer (the caller drains)."""
    writer.write(_head(conn, reply))
    if reply.body:
        writer.write(conn.send(h11.Data(data=reply.body)) or b"")
    writer.write(conn.send(h11.EndOfMessage()) or b"")


async def send_dripping(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: Reply, pace: float
) -> bool:
    """Write the head at once and the body at `pace` bytes a second. False if the client went away
    first (then the connection is no use any more)."""
    writer.write(_head(conn, reply))
    await writer.drain()
    data = (conn.send(h11.Data(data=reply.body)) or b"") if reply.body else b""
    piece = max(1, round(pace / _DRIPS_PER_SECOND))
    for start in range(0, len(data), piece):
        await asyncio.sleep(piece / pace)
        if reader.at_eof():  # the client closed its side: nobody reads the rest
            return False
        writer.write(data[start : start + piece])
        await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    await writer.drain()
    return True


async def wait_until_closed(reader: asyncio.StreamReader) -> None:
    """Read and discard until the client closes the connection (a hung request's wait)."""
    while await reader.read(_READ_SIZE):
        pass
