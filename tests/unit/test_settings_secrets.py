"""The Redis password: from `make setup`'s secret file by default, or from a secret file
named by REDIS_PASSWORD_FILE (compose)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import settings
from shared.settings import CommonSettings, local_redis_url


def test_the_local_url_carries_the_password_make_setup_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "SECRETS_DIR", tmp_path)
    assert local_redis_url() == "redis://127.0.0.1:6379/0"
    (tmp_path / "redis_password").write_text("s3cret\n")
    assert local_redis_url() == "redis://default:s3cret@127.0.0.1:6379/0"


def test_a_password_file_goes_into_the_url(tmp_path: Path) -> None:
    secret = tmp_path / "redis_password"
    secret.write_text("abc123\n")
    got = CommonSettings(redis_url="redis://redis:6379/2", redis_password_file=str(secret))
    assert got.redis_url == "redis://default:abc123@redis:6379/2"
    replaced = CommonSettings(
        redis_url="redis://:old@redis:6379/0", redis_password_file=str(secret)
    )
    assert replaced.redis_url == "redis://default:abc123@redis:6379/0"
