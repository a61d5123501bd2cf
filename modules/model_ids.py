"""Model ids, as the vector column records them, and the settings that embed with one.

A model id is `<model>@<dimensions>`: `gemini-embedding-001@768`, `gemini-embedding-2@1536`, or the
offline model's `wordllama-<config>-<native>@768`. A model migration's target is written the same
way on the command line (`--migrate-to gemini-embedding-2@768`), where `local` names the offline
model and a missing `@<dimensions>` keeps the column's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modules.settings import Provider, Settings, SettingsError, settings_for_model

LOCAL_PREFIX = "wordllama-"
_SPEC = re.compile(r"^(?P<model>[A-Za-z0-9][A-Za-z0-9._/-]*)(@(?P<dims>\d{1,5}))?$")


@dataclass(frozen=True)
class ModelChoice:
    provider: Provider
    model: str  # the API's model name (for the offline model: "local")
    dimensions: int

    def settings(self, base: Settings) -> Settings:
        return settings_for_model(base, self.provider, self.model, self.dimensions)


def parse_model_spec(spec: str, default_dimensions: int) -> ModelChoice:
    """`MODEL[@DIMS]` as --migrate-to takes it (and as model ids are recorded)."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise SettingsError(
            "--migrate-to", f"{spec!r} is not MODEL[@DIMENSIONS], e.g. gemini-embedding-2@768 or local@768"
        )
    model = match["model"].removeprefix("models/")
    dimensions = int(match["dims"]) if match["dims"] else default_dimensions
    if not 1 <= dimensions <= 16000:
        raise SettingsError("--migrate-to", f"{dimensions} dimensions is not a vector size pgvector takes")
    if model == "local" or model.startswith(LOCAL_PREFIX):
        return ModelChoice("local", "local", dimensions)
    return ModelChoice("gemini", model, dimensions)


def model_id_of(settings: Settings) -> str:
    """The model id these settings embed with (as the embedder will report it)."""
    if settings.provider == "local":
        from modules.embedders.local import local_model_id

        return local_model_id(settings.dimensions)
    return f"{settings.model.removeprefix('models/')}@{settings.dimensions}"


def dimensions_of(model_id: str) -> int | None:
    """The vector length a model id records, if it does."""
    _, _, dims = model_id.rpartition("@")
    return int(dims) if dims.isdigit() else None


def settings_for_model_id(base: Settings, model_id: str) -> Settings:
    """The settings that embed with `model_id` (the live model recorded by a cut-over)."""
    return parse_model_spec(model_id, base.dimensions).settings(base)
