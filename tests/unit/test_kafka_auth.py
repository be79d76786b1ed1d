"""Kafka principals and their grants, without a broker (tests/integration/test_kafka_auth.py
tries them on the real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.features.config import FeaturesSettings
from services.ingestion.config import IngestionSettings
from shared.acls import Groups, grants
from shared.kafka_auth import PRINCIPALS, KafkaAuth, password_of
from shared.settings import CommonSettings


def test_every_topic_grant_but_the_operators_names_the_prefix() -> None:
    for grant in grants("tenant.", Groups(features="tenant.driftline-features")):
        if grant.resource == "topic" and grant.principal != "operator":
            assert grant.name.startswith("tenant."), grant.describe()
        if grant.name == "*":
            assert grant.principal == "operator", grant.describe()


def test_only_features_has_a_prefixed_grant_on_its_own_faust_topics() -> None:
    prefixed = [g for g in grants("t.", Groups(features="t.driftline-features")) if g.prefixed]
    assert [(g.principal, g.operation, g.name) for g in prefixed] == [
        ("features", "all", "t.driftline-features-")
    ]


def test_the_outside_producer_only_writes_the_raw_topics() -> None:
    mine = [g.describe() for g in grants("", Groups()) if g.principal == "producer"]
    assert mine == ["producer: write topic events.raw", "producer: write topic labels.raw"]


def test_every_principal_with_grants_has_a_password_made_by_make_secrets() -> None:
    granted = {g.principal for g in grants("", Groups())}
    assert granted | {"admin"} == set(PRINCIPALS)
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert f"KAFKA_PRINCIPALS := {' '.join(PRINCIPALS)}" in makefile


def test_options_for_aiokafka_kcat_and_tls() -> None:
    options = KafkaAuth("serving", "s3cret").aiokafka()
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_plain_username"] == "serving"
    auth = KafkaAuth("serving", "s3cret", "/ca.crt")
    assert auth.protocol == "SASL_SSL"
    assert "s3cret" not in repr(auth)
    assert "security.protocol=sasl_ssl" in auth.kcat_config()
    assert "ssl.ca.location=/ca.crt" in auth.kcat_config()


def test_a_service_is_its_own_principal_with_its_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    settings = IngestionSettings(kafka_password_file=str(secret))
    assert settings.kafka_auth().username == "ingestion"
    assert settings.kafka()["sasl_plain_password"] == "from-file"
    assert FeaturesSettings().kafka_username == "features"
    assert CommonSettings().kafka_username == "operator"


def test_a_missing_password_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        password_of("serving", str(tmp_path / "absent"))
