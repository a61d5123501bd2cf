"""A wire-compatible simulator of Google's Gemini embedding REST API (embedContent and
batchEmbedContents), with quotas, Google's real error bodies and injectable faults.

Vectors are a pure function of the text (`simulated_embedding`), so tests can check exactly what
was stored. Run it in-process (`async with GeminiSimulator(...)`), in a thread
(`run_simulator_in_thread`) or as `python -m modules.gemini_simulator` and point the SDK at it
with `GOOGLE_GEMINI_BASE_URL` or `HttpOptions(base_url=...)`.
"""

from .config import SimulatorConfig
from .google_errors import ApiError
from .models import MAX_BATCH, MODELS, ModelSpec
from .quota import format_retry_delay
from .server import GeminiSimulator, run_simulator_in_thread
from .stats import SimulatorStats
from .tokens import count_tokens, truncate_to_tokens
from .vectors import NATIVE_DIMENSIONS, model_embedding, simulated_embedding, text_sha256

__all__ = [
    "MAX_BATCH",
    "MODELS",
    "NATIVE_DIMENSIONS",
    "ApiError",
    "GeminiSimulator",
    "ModelSpec",
    "SimulatorConfig",
    "SimulatorStats",
    "count_tokens",
    "format_retry_delay",
    "model_embedding",
    "run_simulator_in_thread",
    "simulated_embedding",
    "text_sha256",
    "truncate_to_tokens",
]
