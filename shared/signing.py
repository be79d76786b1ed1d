"""Signed bytes: everything pickled into Redis carries an HMAC-SHA256 of the signing key.

Unpickling runs whatever code the bytes name, so a service unpickles only what a
holder of the signing key wrote: every registry artifact, live slot, checkpoint and
snapshot is stored as an envelope, `MAGIC` + HMAC-SHA256(key, `MAGIC` + payload) +
payload, and `loads_signed` checks the MAC (`hmac.compare_digest`) before the payload
reaches `pickle`. Bytes without the envelope (`missing`: an unsigned pickle, data from
before signing) or with a MAC that does not match (`wrong`: tampered, or another
key's) raise `SignatureError` and are counted in `driftline_registry_rejected_total`
by what was refused (artifact, live, checkpoint, snapshot) and why.

One envelope per value, not a signature stored beside it: each Redis write stays one
value (a registry artifact is a plain `SET`), so the MAC can never be out of step with
its bytes; the magic tells an unsigned pickle (which starts `\\x80`) from a wrong MAC,
and its version byte, inside the MAC, leaves room for another scheme later.

The key comes from `DRIFTLINE_SIGNING_KEY`, or the file `DRIFTLINE_SIGNING_KEY_FILE`
(compose's secret), or else `.secrets/signing_key` (`make setup` creates it); a service
that signs or verifies (`SigningSettings`: training, serving, monitoring) does not
start without one. The key is never logged: `SigningKey`'s repr hides it.

>>> key = SigningKey(b"0123456789abcdef")
>>> blob = dumps_signed(key, {"w": 1.5})
>>> loads_signed(key, blob, "artifact")
{'w': 1.5}
>>> loads_signed(SigningKey(b"another key, 16+"), blob, "artifact")
Traceback (most recent call last):
...
shared.signing.SignatureError: wrong signature (tampered with, or signed with another key)
>>> key
SigningKey(<hidden>)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import Counter
from pydantic import SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.http_keys import load_key, require_key
from shared.settings import CommonSettings

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "REJECTED",
    "SignatureError",
    "SigningKey",
    "SigningSettings",
    "dumps_signed",
    "header",
    "loads_signed",
    "local_signing_key",
    "sign",
    "verify",
]

MAGIC = b"DLSIG\x01"  # "Driftline signed", envelope version 1 (HMAC-SHA256)
MAC_BYTES = hashlib.sha256().digest_size
HEADER_BYTES = len(MAGIC) + MAC_BYTES
MIN_KEY_BYTES = 16

Refused = Literal["artifact", "live", "checkpoint", "snapshot"]
Buffer = bytes | bytearray | memoryview

REJECTED = Counter(
    "driftline_registry_rejected_total",
    "Stored pickles refused before unpickling: signature missing or wrong, by what"
    " (artifact, live, checkpoint, snapshot)",
    ["what", "reason"],
)
for _what in ("artifact", "live", "checkpoint", "snapshot"):  # shown at 0 from the start
    for _reason in ("missing", "wrong"):
        REJECTED.labels(_what, _reason)


class SignatureError(ValueError):
    """Bytes whose signature is `missing` (no envelope) or `wrong` (the MAC differs)."""

    def __init__(self, reason: Literal["missing", "wrong"]) -> None:
        self.reason = reason
        super().__init__(
            "no signature (unsigned data, e.g. written before signing)"
            if reason == "missing"
            else "wrong signature (tampered with, or signed with another key)"
        )


@dataclass(frozen=True)
class SigningKey:
    """The HMAC key; its repr never shows it."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise ValueError(f"a signing key needs at least {MIN_KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return "SigningKey(<hidden>)"


def _mac(key: SigningKey, payload: Buffer) -> bytes:
    mac = hmac.new(key.secret, MAGIC, hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def header(key: SigningKey, payload: Buffer) -> bytes:
    """The envelope's head for `payload`: `header(key, p) + p == sign(key, p)` (lets a
    writer send the two without copying a large payload into one buffer)."""
    return MAGIC + _mac(key, payload)


def sign(key: SigningKey, payload: bytes) -> bytes:
    """`payload` in its envelope: magic, HMAC-SHA256, payload."""
    return header(key, payload) + payload


def verify(key: SigningKey, blob: Buffer) -> memoryview:
    """The payload of a signed `blob` (a view, not a copy), or `SignatureError`."""
    view = memoryview(blob)
    if view.nbytes < HEADER_BYTES or view[: len(MAGIC)] != MAGIC:
        raise SignatureError("missing")
    payload = view[HEADER_BYTES:]
    if not hmac.compare_digest(view[len(MAGIC) : HEADER_BYTES], _mac(key, payload)):
        raise SignatureError("wrong")
    return payload


def dumps_signed(key: SigningKey, obj: object) -> bytes:
    """`obj` pickled (highest protocol) and signed."""
    return sign(key, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def loads_signed(
    key: SigningKey,
    blob: Buffer,
    what: Refused,
    loads: Callable[[memoryview], Any] = pickle.loads,
) -> Any:
    """Verify `blob`, then unpickle its payload with `loads`. A missing or wrong
    signature is counted (`what`, why) and raised as `SignatureError`: nothing of the
    payload is unpickled."""
    try:
        payload = verify(key, blob)
    except SignatureError as error:
        REJECTED.labels(what, error.reason).inc()
        raise
    return loads(payload)


def local_signing_key() -> SigningKey | None:
    """The local key, for the repository's own clients (tests, benchmarks) that write
    what the services read: `DRIFTLINE_SIGNING_KEY`, else `.secrets/signing_key`; None
    if neither is there."""
    value = os.environ.get("DRIFTLINE_SIGNING_KEY")
    key = load_key("signing", SecretStr(value) if value else None, None)
    return SigningKey(key.get_secret_value().encode()) if key is not None else None


class SigningSettings(CommonSettings):
    """`CommonSettings` plus the signing key: the settings of a service that signs or
    verifies what it keeps in Redis. No key: the service does not start."""

    # a refused setting's error shows no input: it would print the key (or REDIS_URL's password)
    model_config = SettingsConfigDict(env_file=None, extra="ignore", hide_input_in_errors=True)

    # The key, or a file holding it (compose's secret); else .secrets/signing_key.
    driftline_signing_key: SecretStr | None = None
    driftline_signing_key_file: str | None = None

    @model_validator(mode="after")
    def _signing_key(self) -> SigningSettings:
        self.driftline_signing_key = require_key(
            "signing", self.driftline_signing_key, self.driftline_signing_key_file
        )
        self.signing_key()  # too short: refused here, at start
        return self

    def signing_key(self) -> SigningKey:
        secret = self.driftline_signing_key
        if secret is None:  # the validator always sets it
            raise ValueError("no signing key")
        return SigningKey(secret.get_secret_value().encode())
