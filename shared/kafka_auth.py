"""Who a Kafka client is: SASL/SCRAM-SHA-512 credentials, and TLS for the SASL_SSL listener.

Each service is its own principal (`ingestion`, `features`, `training`, `serving`,
`monitoring`); `producer` is for clients outside the stack, `operator` reads
everything, `admin` is the broker's own (topics, ACLs). `make setup` writes each one's
password to `.secrets/kafka_<principal>`. A client's password is `KAFKA_PASSWORD`, else
the file `KAFKA_PASSWORD_FILE` (compose's secret), else `.secrets/kafka_<username>`;
with none, the client connects without SASL (and a broker with ACLs refuses it).

>>> KafkaAuth("serving", "pw").aiokafka()["sasl_mechanism"]
'SCRAM-SHA-512'
>>> KafkaAuth("serving", None).aiokafka()
{'security_protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MECHANISM", "PRINCIPALS", "SECRETS_DIR", "KafkaAuth", "password_of"]

# `make setup` creates the local stack's secrets here (git-ignored).
SECRETS_DIR = Path(__file__).resolve().parent.parent / ".secrets"

MECHANISM = "SCRAM-SHA-512"
# Every principal `make setup` makes a password for (the broker's SCRAM users).
PRINCIPALS = (
    "admin",
    "operator",
    "producer",
    "ingestion",
    "features",
    "training",
    "serving",
    "monitoring",
)


def password_of(
    username: str, file: str | None = None, *, secrets_dir: Path = SECRETS_DIR
) -> str | None:
    """`file`'s content, else `.secrets/kafka_<username>`'s, else None."""
    path = Path(file) if file else secrets_dir / f"kafka_{username}"
    if path.is_file():
        return path.read_text().strip() or None
    if file:
        raise ValueError(f"the Kafka password file {file} does not exist")
    return None


@dataclass(frozen=True)
class KafkaAuth:
    """One principal's way in: username, password (None: no SASL), and the CA file
    that makes it SASL_SSL (the listener for clients off the host)."""

    username: str
    password: str | None
    ca_file: str | None = None

    def __repr__(self) -> str:  # never the password
        return f"KafkaAuth(username={self.username!r}, tls={self.ca_file is not None})"

    @property
    def protocol(self) -> str:
        sasl = self.password is not None
        if self.ca_file:
            return "SASL_SSL" if sasl else "SSL"
        return "SASL_PLAINTEXT" if sasl else "PLAINTEXT"

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.password is not None:
            options.update(
                sasl_mechanism=MECHANISM,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        if self.ca_file:
            options["ssl_context"] = self.ssl_context()
        return options

    def faust(self) -> Any:
        """faust-streaming's `broker_credentials` (None: no SASL)."""
        import faust

        if self.password is None:
            return None
        return faust.SASLCredentials(
            username=self.username,
            password=self.password,
            mechanism=MECHANISM,
            ssl_context=self.ssl_context(),
        )

    def kcat_config(self) -> str:
        """librdkafka properties (kcat's `-F` file) for this principal."""
        lines = [f"security.protocol={self.protocol.lower()}"]
        if self.password is not None:
            lines += [
                f"sasl.mechanisms={MECHANISM}",
                f"sasl.username={self.username}",
                f"sasl.password={self.password}",
            ]
        if self.ca_file:
            lines.append(f"ssl.ca.location={self.ca_file}")
        return "\n".join(lines) + "\n"

    @classmethod
    def local(cls, username: str) -> KafkaAuth:
        """The principal `username` with its password from `.secrets/`."""
        return cls(username, password_of(username))
