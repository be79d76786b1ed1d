"""Signed pickles: what is kept in Redis is unpickled only with a valid HMAC of the key."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.monitoring.config import MonitoringSettings
from services.serving.config import ServingSettings
from services.training.config import TrainingSettings
from shared.signing import (
    HEADER_BYTES,
    MAGIC,
    REJECTED,
    SignatureError,
    SigningKey,
    dumps_signed,
    header,
    loads_signed,
    sign,
    verify,
)
from tests.support import crafted_pickle

KEY = SigningKey(b"the-unit-test-signing-key")
OTHER = SigningKey(b"another-key-of-some-length")


def rejected(what: str, reason: str) -> float:
    return float(REJECTED.labels(what, reason)._value.get())


def test_a_signed_payload_verifies_and_round_trips() -> None:
    payload = pickle.dumps({"weights": [1.0, 2.0]})
    blob = sign(KEY, payload)
    assert blob.startswith(MAGIC) and len(blob) == HEADER_BYTES + len(payload)
    assert bytes(verify(KEY, blob)) == payload
    assert header(KEY, payload) + payload == blob
    assert loads_signed(KEY, dumps_signed(KEY, {"a": 1}), "artifact") == {"a": 1}
    assert verify(KEY, sign(KEY, b"")) == b""  # an empty payload is still signed


@pytest.mark.parametrize("position", [0, 3, len(MAGIC), HEADER_BYTES - 1, HEADER_BYTES, -1])
def test_one_byte_changed_anywhere_is_refused(position: int) -> None:
    blob = bytearray(sign(KEY, pickle.dumps(list(range(100)))))
    blob[position] ^= 0x01
    with pytest.raises(SignatureError) as refused:
        verify(KEY, bytes(blob))
    # the magic changed reads as no envelope at all; anything after it as a wrong MAC
    assert refused.value.reason == ("missing" if 0 <= position < len(MAGIC) else "wrong")


def test_another_key_a_missing_envelope_and_a_truncated_one_are_refused() -> None:
    payload = pickle.dumps("model")
    with pytest.raises(SignatureError, match="wrong signature") as wrong:
        verify(OTHER, sign(KEY, payload))
    assert wrong.value.reason == "wrong"
    for blob in (payload, b"", MAGIC, sign(KEY, payload)[: HEADER_BYTES - 1]):
        with pytest.raises(SignatureError, match="no signature") as missing:
            verify(KEY, blob)
        assert missing.value.reason == "missing"


def test_a_crafted_pickle_never_runs_signed_or_not(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    crafted = crafted_pickle(marker)
    pickle.loads(crafted)  # the control: plain unpickling does run it
    assert marker.exists()
    marker.unlink()

    before = rejected("artifact", "missing"), rejected("artifact", "wrong")
    with pytest.raises(SignatureError):
        loads_signed(KEY, crafted, "artifact")  # as it is
    with pytest.raises(SignatureError):
        loads_signed(KEY, sign(OTHER, crafted), "artifact")  # signed with another key
    with pytest.raises(SignatureError):  # in a stolen valid envelope, payload swapped
        loads_signed(KEY, sign(KEY, b"x")[:HEADER_BYTES] + crafted, "artifact")
    assert not marker.exists()
    assert (rejected("artifact", "missing"), rejected("artifact", "wrong")) == (
        before[0] + 1,
        before[1] + 2,
    )


def test_the_key_is_never_shown() -> None:
    assert "the-unit-test" not in repr(KEY) and "the-unit-test" not in str(KEY)
    assert "s3cret-signing-key" not in repr(
        TrainingSettings(driftline_signing_key=SecretStr("s3cret-signing-key"))
    )
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SigningKey(b"short")


def test_the_key_comes_from_the_setting_or_its_file(tmp_path: Path) -> None:
    file = tmp_path / "signing_key"
    file.write_text("from-the-mounted-secret-file\n")
    got = MonitoringSettings(driftline_signing_key=None, driftline_signing_key_file=str(file))
    assert got.signing_key() == SigningKey(b"from-the-mounted-secret-file")
    given = ServingSettings(driftline_signing_key=SecretStr("given-directly-as-a-value"))
    assert given.signing_key() == SigningKey(b"given-directly-as-a-value")


@pytest.mark.parametrize("settings", [TrainingSettings, ServingSettings, MonitoringSettings])
def test_a_service_that_signs_does_not_start_without_a_usable_key(
    settings: type[TrainingSettings], tmp_path: Path
) -> None:
    missing = str(tmp_path / "nothing")
    with pytest.raises(ValidationError, match="does not exist"):
        settings(driftline_signing_key=None, driftline_signing_key_file=missing)
    with pytest.raises(ValidationError, match="at least 16 bytes") as short:
        settings(driftline_signing_key=SecretStr("tiny-secret"))
    assert "tiny-secret" not in str(short.value), "the error shows no input"
