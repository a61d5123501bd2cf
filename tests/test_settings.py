"""Settings: defaults, the contract's names, and one clear line for each wrong value."""

from __future__ import annotations

import pytest

from modules.settings import Secret, SettingsError, load_settings


def test_defaults_without_a_key_use_the_local_provider() -> None:
    s = load_settings(env={})
    assert s.provider == "local"
    assert (s.model, s.dimensions, s.batch_size, s.retry_batch_size) == ("gemini-embedding-001", 768, 10, 5)
    assert (s.max_retries, s.retry_delay, s.auto_generate) == (3, 2.0, False)
    assert s.database_url is None


def test_a_key_selects_gemini_and_never_shows_itself() -> None:
    s = load_settings(env={"GEMINI_API_KEY": "AIzaSecretValue123"})
    assert s.provider == "gemini"
    assert isinstance(s.google_api_key, Secret)
    assert "AIzaSecretValue123" not in repr(s)
    assert "AIzaSecretValue123" not in str(s.describe())
    assert "AIzaSecretValue123" in s.secrets()


def test_database_password_counts_as_a_secret() -> None:
    s = load_settings(env={"DATABASE_URL": "postgresql://user:pa55word!@db.example:5432/postgres"})
    assert "pa55word!" in s.secrets()


def test_model_prefix_is_accepted() -> None:
    assert load_settings(env={"EMBEDDING_MODEL": "models/gemini-embedding-001"}).model == "gemini-embedding-001"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"EMBEDDING_PROVIDER": "gemini"}, "GOOGLE_API_KEY"),
        ({"EMBEDDING_PROVIDER": "openai"}, "EMBEDDING_PROVIDER"),
        ({"EMBEDDING_BATCH_SIZE": "101"}, "EMBEDDING_BATCH_SIZE"),
        ({"EMBEDDING_BATCH_SIZE": "ten"}, "EMBEDDING_BATCH_SIZE"),
        ({"EMBEDDING_DIMENSIONS": "0"}, "EMBEDDING_DIMENSIONS"),
        ({"EMBEDDING_MAX_RETRIES": "-1"}, "EMBEDDING_MAX_RETRIES"),
        ({"EMBEDDING_RETRY_DELAY": "soon"}, "EMBEDDING_RETRY_DELAY"),
        ({"AUTO_GENERATE_EMBEDDINGS": "maybe"}, "AUTO_GENERATE_EMBEDDINGS"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"SUPABASE_URL": "https://x.supabase.co"}, "SUPABASE_KEY"),
        ({"EMBEDDING_TASK_TYPE": "NOPE"}, "EMBEDDING_TASK_TYPE"),
        ({"EMBEDDING_QUOTA_WINDOW": "0"}, "EMBEDDING_QUOTA_WINDOW"),
        ({"EMBEDDING_RPM": "0"}, "EMBEDDING_RPM"),
    ],
)
def test_a_wrong_value_names_its_setting_in_one_line(env: dict[str, str], setting: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env=env)
    message = str(caught.value)
    assert message.startswith(f"{setting}: ")
    assert "\n" not in message


def test_batch_size_auto() -> None:
    s = load_settings(env={"EMBEDDING_BATCH_SIZE": "auto"})
    assert s.batch_size == "auto" and s.fixed_batch_size is None


def test_a_given_quota_and_its_window() -> None:
    s = load_settings(env={"EMBEDDING_RPM": "1500", "EMBEDDING_TPM": "1000000", "EMBEDDING_QUOTA_WINDOW": "1.875"})
    assert (s.rpm, s.tpm, s.quota_window) == (1500, 1_000_000, 1.875)
    assert load_settings(env={}).quota_window == 60.0
