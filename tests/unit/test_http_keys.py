"""Keys on the HTTP data path: where they come from, and 401 / 403 / pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.ingestion.config import IngestionSettings
from services.serving.config import ServingSettings
from shared.http_keys import KeyCheck, load_key


def test_a_key_comes_from_its_value_then_its_file_then_the_local_secrets(tmp_path: Path) -> None:
    (tmp_path / "writer_key").write_text("from-secrets\n")
    file = tmp_path / "mounted"
    file.write_text("from-file")
    assert load_key("writer", SecretStr("v"), str(file), secrets_dir=tmp_path) == SecretStr("v")
    assert load_key("writer", None, str(file), secrets_dir=tmp_path) == SecretStr("from-file")
    assert load_key("writer", None, None, secrets_dir=tmp_path) == SecretStr("from-secrets")
    assert load_key("reader", None, None, secrets_dir=tmp_path) is None
    with pytest.raises(ValueError, match="does not exist"):
        load_key("reader", None, str(tmp_path / "missing"), secrets_dir=tmp_path)


def test_a_service_without_its_key_does_not_start(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing")
    with pytest.raises(ValidationError, match="does not exist"):
        IngestionSettings(driftline_writer_key_file=missing)
    with pytest.raises(ValidationError, match="does not exist"):
        ServingSettings(driftline_reader_key_file=missing)
    opened = ServingSettings(driftline_reader_key_file=missing, predict_needs_key=False)
    assert opened.driftline_reader_key is None
    assert "s3cret" not in repr(IngestionSettings(driftline_writer_key=SecretStr("s3cret")))


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("", 401),
        ("Bearer", 401),
        ("Basic czNjcmV0", 401),
        ("Bearer s3cre", 403),
        ("Bearer s3cret!", 403),
        ("bearer s3cret", None),
        ("Bearer  s3cret ", None),
    ],
)
def test_missing_is_401_wrong_is_403(header: str | None, status: int | None) -> None:
    refusal = KeyCheck(SecretStr("s3cret"), "writer").refusal(header)
    assert (refusal[0] if refusal else None) == status
    assert KeyCheck(None, "reader").refusal(header) is None
