"""Settings: defaults, the contract's names, and one clear line for each wrong value."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from modules.settings import (
    Secret,
    Settings,
    SettingsError,
    TableNames,
    declared,
    dotenv_path,
    env_example,
    load_settings,
    markdown_table,
    setting_names,
)


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
    s = load_settings(
        env={"DATABASE_URL": "postgresql://user:pa55word!@db.example:5432/postgres", "EMBEDDING_PROVIDER": "local"}
    )
    assert "pa55word!" in s.secrets()


def test_the_alert_webhook_is_a_secret_and_must_be_https_or_this_host() -> None:
    hook = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"
    s = load_settings(env={"ALERT_WEBHOOK_URL": hook})
    assert isinstance(s.alert_webhook_url, Secret) and hook in s.secrets()
    assert hook not in repr(s) and hook not in str(s.describe())
    assert load_settings(env={"ALERT_WEBHOOK_URL": "http://127.0.0.1:8080/hook"}).alert_webhook_url is not None
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"ALERT_WEBHOOK_URL": "http://hooks.example.com/secretpath"})
    assert "secretpath" not in str(caught.value)


def test_operations_defaults() -> None:
    s = load_settings(env={})
    assert (s.watch_interval, s.max_attempts, s.retry_cooldown, s.retry_cooldown_max) == (30.0, 5, 60.0, 3600.0)
    assert (s.alert_success_rate, s.alert_window, s.metrics_port, s.metrics_host) == (90.0, 60.0, None, "127.0.0.1")


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
        ({"DATABASE_URL": "mysql://x", "EMBEDDING_PROVIDER": "local"}, "DATABASE_URL"),
        ({"SUPABASE_URL": "https://x.supabase.co", "EMBEDDING_PROVIDER": "local"}, "SUPABASE_KEY"),
        ({"EMBEDDING_TASK_TYPE": "NOPE"}, "EMBEDDING_TASK_TYPE"),
        ({"EMBEDDING_QUOTA_WINDOW": "0"}, "EMBEDDING_QUOTA_WINDOW"),
        ({"EMBEDDING_RPM": "0"}, "EMBEDDING_RPM"),
        ({"ALERT_WEBHOOK_URL": "http://hooks.example.com/T0/B0/secretpath"}, "ALERT_WEBHOOK_URL"),
        ({"ALERT_WEBHOOK_URL": "ftp://127.0.0.1/x"}, "ALERT_WEBHOOK_URL"),
        ({"ALERT_SUCCESS_RATE": "150"}, "ALERT_SUCCESS_RATE"),
        ({"ALERT_WINDOW": "0"}, "ALERT_WINDOW"),
        ({"EMBEDDING_METRICS_PORT": "70000"}, "EMBEDDING_METRICS_PORT"),
        ({"EMBEDDING_MAX_ATTEMPTS": "0"}, "EMBEDDING_MAX_ATTEMPTS"),
        ({"EMBEDDING_RETRY_COOLDOWN": "120", "EMBEDDING_RETRY_COOLDOWN_MAX": "60"}, "EMBEDDING_RETRY_COOLDOWN_MAX"),
        ({"DASHBOARD_TIMEZONE": "Mars/Olympus_Mons"}, "DASHBOARD_TIMEZONE"),
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


# --- one declaration, and the documents made from it ----------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_every_settings_field_is_a_declared_setting() -> None:
    declared_fields = {f.name for f, _ in declared()}
    plain = {f.name for f in fields(Settings) if f.name not in ("tables", "warnings")}
    plain |= {f.name for f in fields(TableNames)}
    assert plain == declared_fields


def test_env_example_is_made_from_the_declaration() -> None:
    assert (ROOT / ".env.example").read_text(encoding="utf-8") == env_example()
    for _, spec in declared():
        assert f"{spec.env}=" in env_example()


def test_readme_settings_table_is_made_from_the_declaration() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme
    table = readme.split("<!-- settings table")[1].split("<!-- end of settings table")[0]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    named = {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    assert named <= setting_names(), named - setting_names()


def test_the_defaults_shown_are_the_defaults_loaded() -> None:
    s = load_settings(env={})
    for f, spec in declared():
        if spec.shown_default is None and f.name in {g.name for g in fields(Settings)}:
            value = getattr(s, f.name)
            assert value == f.default or (isinstance(value, Path) and value == Path(f.default).resolve())


def test_a_misspelt_setting_name_is_warned_about_not_ignored_silently() -> None:
    s = load_settings(env={"EMBEDING_BATCH_SIZE": "20", "PATH": "/usr/bin", "HOME": "/root"})
    assert s.batch_size == 10
    assert s.warnings == ("EMBEDING_BATCH_SIZE is not a setting; did you mean EMBEDDING_BATCH_SIZE? (it is ignored)",)


def test_paths_are_relative_to_the_working_directory_not_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={})
    assert s.embedded_pg_dir == tmp_path / ".data" / "postgres"
    assert s.log_file == Path("batch_embedding.log")
    assert dotenv_path({}) == Path(".env")


def test_a_database_url_whose_password_holds_an_at_sign_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            env={"DATABASE_URL": "postgresql://app:s3cr@t@db.example:5432/postgres", "EMBEDDING_PROVIDER": "local"}
        )
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: ") and "%40" in message
    assert "s3cr" not in message and "db.example" not in message
    encoded = load_settings(
        env={"DATABASE_URL": "postgresql://app:s3cr%40t@db.example:5432/postgres", "EMBEDDING_PROVIDER": "local"}
    )
    assert encoded.database_url is not None


@pytest.mark.parametrize("url", ["generativelanguage.googleapis.com", "ftp://host", "http://", "https://a b"])
def test_a_gemini_base_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"GOOGLE_GEMINI_BASE_URL": url})
    assert str(caught.value).startswith("GOOGLE_GEMINI_BASE_URL: ")


@pytest.mark.parametrize(
    "url", ["https://generativelanguage.googleapis.com", "http://127.0.0.1:8089", "http://[::1]:9/x"]
)
def test_gemini_base_urls_that_are_fine(url: str) -> None:
    assert load_settings(env={"GOOGLE_GEMINI_BASE_URL": url}).gemini_base_url == url


@pytest.mark.parametrize(
    "env",
    [
        {"DATABASE_URL": "postgresql://app:pw@db.example:5432/postgres"},
        {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_KEY": "service-role-key"},
    ],
)
def test_a_real_database_without_a_key_never_defaults_to_the_offline_model(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env=env)
    message = str(caught.value)
    assert message.startswith("GOOGLE_API_KEY: ") and "EMBEDDING_PROVIDER=local" in message
    assert ("SUPABASE_URL" if "SUPABASE_URL" in env else "DATABASE_URL") in message
    chosen = load_settings(env={**env, "EMBEDDING_PROVIDER": "local"})  # on purpose: allowed
    assert chosen.provider == "local"
