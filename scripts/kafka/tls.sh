#!/usr/bin/env bash
# The local CA and the broker's certificate for Kafka's SASL_SSL listener (clients off
# the host), made with openssl by `make secrets` when missing:
#
#   .secrets/kafka_ca.crt      the CA's certificate: give it to clients (not secret)
#   .secrets/kafka_ca.key      the CA's key (mode 600; only this script uses it)
#   .secrets/kafka_broker.pem  the broker's key + certificate + CA, Kafka's PEM keystore
#
# The certificate names localhost, 127.0.0.1, kafka (compose) and KAFKA_TLS_HOST if set
# (the name or address off-host clients use). To re-issue it for another name:
# rm .secrets/kafka_broker.pem && make secrets KAFKA_TLS_HOST=broker.example.org
set -euo pipefail

DIR="${1:?usage: tls.sh SECRETS_DIR}"
HOST="${KAFKA_TLS_HOST:-}"
DAYS=825  # what clients accept for a server certificate
cd "$DIR"
umask 077

if [[ ! -s kafka_ca.key || ! -s kafka_ca.crt ]]; then
  openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days 3650 -subj "/CN=Driftline local CA" \
    -keyout kafka_ca.key -out kafka_ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  rm -f kafka_broker.pem  # a new CA: the broker's certificate too
  echo "created $DIR/kafka_ca.crt (the local CA)"
fi

if [[ ! -s kafka_broker.pem ]]; then
  san="DNS:localhost,IP:127.0.0.1,DNS:kafka"
  if [[ -n "$HOST" ]]; then
    if [[ "$HOST" =~ ^[0-9.]+$ || "$HOST" == *:* ]]; then san="$san,IP:$HOST"; else san="$san,DNS:$HOST"; fi
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  openssl req -newkey rsa:3072 -sha256 -nodes -subj "/CN=${HOST:-localhost}" \
    -keyout "$work/broker.key" -out "$work/broker.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
    "$san" >"$work/ext"
  openssl x509 -req -in "$work/broker.csr" -CA kafka_ca.crt -CAkey kafka_ca.key -CAcreateserial \
    -days "$DAYS" -sha256 -extfile "$work/ext" -out "$work/broker.crt" 2>/dev/null
  # Kafka's PEM keystore: the key (PKCS#8), then the certificate chain
  cat "$work/broker.key" "$work/broker.crt" kafka_ca.crt >kafka_broker.pem
  rm -f kafka_ca.srl
  echo "created $DIR/kafka_broker.pem (the broker's certificate for $san)"
fi
# as the other secrets: compose bind-mounts these files for the broker's own user
chmod 644 kafka_ca.crt kafka_broker.pem
chmod 600 kafka_ca.key
