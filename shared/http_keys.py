"""Bearer keys on the HTTP data path: who may write events and labels, who may predict.

Ingestion's `POST /events` and `POST /labels` take the writer key, serving's
`POST /predict` the reader key, each sent as `Authorization: Bearer <key>`. A request
without one is 401 (with `WWW-Authenticate: Bearer`), with another key 403; the
comparison takes the same time wherever the keys differ (`hmac.compare_digest`). The
keys come from `DRIFTLINE_WRITER_KEY` / `DRIFTLINE_READER_KEY`, or from the files
`DRIFTLINE_WRITER_KEY_FILE` / `DRIFTLINE_READER_KEY_FILE` (compose's secrets), or else
from `.secrets/writer_key` and `.secrets/reader_key` (`make setup` creates them). A
service that needs a key and has none does not start.

>>> check = KeyCheck("s3cret", "writer")
>>> check.refusal(None)[0], check.refusal("Bearer nope")[0], check.refusal("Bearer s3cret")
(401, 403, None)
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from pydantic import SecretStr

from shared.settings import SECRETS_DIR

__all__ = ["KeyCheck", "bearer", "load_key", "require_key"]


def load_key(
    name: str, value: SecretStr | None, file: str | None, *, secrets_dir: Path = SECRETS_DIR
) -> SecretStr | None:
    """The key `name` (writer, reader): `value`, else `file`'s content, else the local
    `.secrets/<name>_key`, else None."""
    if value is not None and value.get_secret_value():
        return value
    path = Path(file) if file else secrets_dir / f"{name}_key"
    if path.is_file():
        text = path.read_text().strip()
        return SecretStr(text) if text else None
    if file:
        raise ValueError(f"the {name} key file {file} does not exist")
    return None


def require_key(name: str, value: SecretStr | None, file: str | None, also: str = "") -> SecretStr:
    """`load_key`, or a `ValueError` saying how to give the key (`also`: another way)."""
    key = load_key(name, value, file)
    if key is None:
        upper = name.upper()
        raise ValueError(
            f"no {name} key: set DRIFTLINE_{upper}_KEY or DRIFTLINE_{upper}_KEY_FILE,"
            f" or run `make secrets` (.secrets/{name}_key){also}"
        )
    return key


def bearer(name: str) -> dict[str, str]:
    """Headers carrying the local key `name` (writer, reader), for the repository's own
    clients (demo, tests, benchmarks): the environment's `DRIFTLINE_<NAME>_KEY`, else
    `.secrets/<name>_key`; none if neither is there."""
    value = os.environ.get(f"DRIFTLINE_{name.upper()}_KEY")
    key = load_key(name, SecretStr(value) if value else None, None)
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}


class KeyCheck:
    """Checks an `Authorization` header against one key (`None`: every request passes)."""

    def __init__(self, key: SecretStr | str | None, role: str) -> None:
        secret = key.get_secret_value() if isinstance(key, SecretStr) else key
        self._key = secret.encode() if secret else None
        self.role = role

    @property
    def open(self) -> bool:
        return self._key is None

    def refusal(self, authorization: str | None) -> tuple[int, str] | None:
        """None if the header carries the key; else the status (401, 403) and why."""
        if self._key is None:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401, f"this needs the {self.role} key: send Authorization: Bearer <key>"
        if not hmac.compare_digest(token.strip().encode(), self._key):
            return 403, f"the key sent is not the {self.role} key"
        return None
