"""`python -m modules.gemini_simulator`: serve the simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from .config import SimulatorConfig, config_fields
from .server import GeminiSimulator

_EPILOG = """\
Point a client at the printed URL to dry-run your quota and retry settings without spending real
quota, e.g.:

  GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8089 GOOGLE_API_KEY=anything <your command>

(or genai.Client(http_options=types.HttpOptions(base_url=URL))). Any non-empty key is accepted
unless --api-key is given. Vectors are deterministic: SHA-256 of the text seeds them.

While it runs:
  curl URL/_sim/stats                               calls, statuses, faults, texts embedded
  curl -X POST URL/_sim/config -d '{"rpm": 10}'     change any setting above (JSON field names)
  curl -X POST URL/_sim/reset                       clear stats and quota windows

Quotas are per model. By default a sliding window: a call is admitted when the requests (tokens)
admitted in the last --window-seconds plus its own stay within --rpm (--tpm); a 429 says how long
until there is room. --quota-shape fixed|token_bucket changes how room comes back; --rpd adds a
per-day request quota (--day-seconds long), answered the way Google answers it.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modules.gemini_simulator",
        description="A local, wire-compatible simulator of the Gemini embedding REST API "
        "(gemini-embedding-001 and gemini-embedding-2: embedContent, batchEmbedContents; the Batch API's "
        "asyncBatchEmbedContent and batches.*, with the Files API).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8089, help="port to listen on, 0 = any free (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every embedding call to stderr")
    defaults = SimulatorConfig()
    for spec in config_fields():
        default = getattr(defaults, spec.name)
        shown = "none" if default is None else default
        parser.add_argument(
            f"--{spec.name.replace('_', '-')}",
            dest=spec.name,
            default=argparse.SUPPRESS,
            metavar=spec.metadata["metavar"],
            help=f"{spec.metadata['help']} (default: {shown})",
        )
    return parser


async def _serve(config: SimulatorConfig, host: str, port: int) -> None:
    async with GeminiSimulator(config, host=host, port=port) as sim:
        print(sim.base_url, flush=True)
        print(
            f"Gemini simulator listening; set GOOGLE_GEMINI_BASE_URL={sim.base_url} to use it. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    host = args.pop("host")
    port = args.pop("port")
    verbose = args.pop("verbose")
    config = SimulatorConfig()
    try:
        config.update(args)
    except ValueError as exc:
        parser.error(str(exc))
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        asyncio.run(_serve(config, host, port))
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
