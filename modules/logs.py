"""Logger names and secret scrubbing for library code.

The library never configures logging: no handlers, levels, files or `propagate` changes happen when
it is imported or used. It only names its loggers, all under one parent (`batch_embedding`), so that
a host application configures them as one, and it keeps secrets out of the texts it produces. The
faces (the CLI scripts, the standalone app) set logging up: `modules/cli/logging_setup.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

ROOT_LOGGER = "batch_embedding"


def get_logger(module_name: str) -> logging.Logger:
    """The logger of a module: `batch_embedding.<module path without 'modules.'>`."""
    suffix = module_name.removeprefix("modules.")
    return logging.getLogger(f"{ROOT_LOGGER}.{suffix}" if suffix and suffix != "__main__" else ROOT_LOGGER)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (longest first) replaced by '***'."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text
