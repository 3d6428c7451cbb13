"""The settings object: K2_* variables under explicit values, every field converted and checked, every problem
reported at once and named, secrets kept out of its repr."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k2.settings import Settings, SettingsError


def test_environment_is_read_and_explicit_values_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K2_HOME", str(tmp_path))
    monkeypatch.setenv("k2_topic_partitions", "8")  # any case, like the shells users come from
    monkeypatch.setenv("K2_MATERIALIZE_BARS", "off")
    monkeypatch.setenv("K2_LOG_LEVEL", "debug")
    monkeypatch.setenv("K2_INGEST_COMMIT_SECONDS", "2.5")
    monkeypatch.setenv("K2_NOT_A_SETTING", "ignored")
    settings = Settings(topic_partitions=3, unknown_keyword="ignored too")
    assert settings.home == tmp_path and isinstance(settings.home, Path)
    assert settings.topic_partitions == 3 and settings.materialize_bars is False
    assert settings.log_level == "DEBUG" and settings.ingest_commit_seconds == 2.5
    assert settings.kafka_bootstrap is None and Settings(kafka_bootstrap="h:1").kafka_bootstrap == "h:1"


def test_every_problem_is_reported_at_once_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K2_TOPIC_PARTITIONS", "many")
    with pytest.raises(SettingsError) as raised:
        Settings(api_port=70_000, broker="redpanda", query_cache_mb=-1, api_rate_point="fast",
                 materialize_bars="maybe", ingest_commit_seconds=0, consume_batch=2.5)
    problems = {loc[0]: message for loc, message in raised.value.problems}
    assert set(problems) == {"topic_partitions", "api_port", "broker", "query_cache_mb", "api_rate_point",
                             "materialize_bars", "ingest_commit_seconds", "consume_batch"}
    assert "whole number" in problems["topic_partitions"] and "'many'" in problems["topic_partitions"]
    assert "at most 65535" in problems["api_port"] and "at least 0" in problems["query_cache_mb"]
    assert "'tansu' or 'noida' or 'kafka'" in problems["broker"]
    assert "greater than 0" in problems["ingest_commit_seconds"] and "rate limit" in problems["api_rate_point"]


def test_a_rule_across_settings_is_checked_after_the_fields() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings(catalog_type="rest")
    assert raised.value.problems == [((), "K2_CATALOG_TYPE=rest needs K2_CATALOG_URI, the REST catalog's URL "
                                           "(http://host:port)")]
    with pytest.raises(SettingsError, match="both K2_S3_ACCESS_KEY_ID"):
        Settings(s3_access_key_id="only-half")


def test_copy_dump_equality_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("K2_")]:  # the test run sets some (K2_KAFKA_DIST)
        monkeypatch.delenv(name)
    settings = Settings(s3_access_key_id="key", s3_secret_access_key="very-secret", catalog_credential="id:pw")
    copy = settings.model_copy(update={"query_cache_mb": 0})
    assert copy.query_cache_mb == 0 and settings.query_cache_mb == 1024 and copy.s3_access_key_id == "key"
    assert copy != settings and copy.model_copy(update={"query_cache_mb": 1024}) == settings
    assert settings.model_dump(exclude_defaults=True) == {
        "s3_access_key_id": "key", "s3_secret_access_key": "very-secret", "catalog_credential": "id:pw"}
    assert "very-secret" not in repr(settings) and "id:pw" not in repr(settings) and "key" in repr(settings)
    assert Settings().model_dump() == {name: spec.default for name, spec in Settings.model_fields.items()}
