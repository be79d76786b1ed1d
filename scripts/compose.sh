#!/usr/bin/env bash
# compose.yaml for real on this machine: a Docker engine, compose v2 and the base images.
#
#   scripts/compose.sh engine    install the engine and compose v2 if missing (pinned)
#   scripts/compose.sh start     start dockerd if none answers (remembered in .run/)
#   scripts/compose.sh images    the base images: present, else pulled, else stand-ins
#                                built from Debian packages; prints NAME=image lines
#   scripts/compose.sh stop      stop dockerd if `start` started it
#   scripts/compose.sh test      all of the above, then the `compose` tests, then stop
#
# Official images are used whenever they can be had. Only where a pull fails (no
# registry is reachable from these machines) is a stand-in built, from Debian's
# packages and the broker's Maven jars, with the interface compose.yaml relies on
# (scripts/compose/*/Dockerfile); stand-ins stay in the engine's image store, so
# later runs reuse them. Users' `docker compose up` is unchanged: only the
# PYTHON_IMAGE, KAFKA_IMAGE, REDIS_IMAGE and PROMETHEUS_IMAGE variables differ.
# Grafana has no Debian package, so no stand-in: where its image cannot be pulled the
# tests start Prometheus alone and check Grafana's files statically.
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) fails it too

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run/compose"  # not .run/*.pid: `make down` stops those
CACHE="$ROOT/.cache/compose"
KAFKA_VERSION="${KAFKA_VERSION:-3.9.1}"
# pinned: Debian bookworm's engine, and compose v2 from the Go module proxy
DOCKER_IO_VERSION="${DOCKER_IO_VERSION:-20.10.24+dfsg1-1+deb12u1+b6}"
COMPOSE_MODULE="github.com/docker/compose/v5"
COMPOSE_VERSION="${COMPOSE_VERSION:-v5.6.0}"
PLUGIN="$HOME/.docker/cli-plugins/docker-compose"
# the official base images, and the names their stand-ins get
OFFICIAL=("PYTHON_IMAGE=python:3.11-slim" "KAFKA_IMAGE=apache/kafka:$KAFKA_VERSION"
  "REDIS_IMAGE=redis:7.0.15" "PROMETHEUS_IMAGE=prom/prometheus:v2.53.2")
STANDIN_PREFIX="driftline-standin"

mkdir -p "$RUN_DIR" "$CACHE"
export PATH="$PATH:/usr/local/go/bin"

log() { printf '[compose] %s\n' "$*" >&2; }
as_root() { if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi; }

engine() {
  local missing=()
  command -v dockerd >/dev/null || missing+=("docker.io=$DOCKER_IO_VERSION")
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
  fi
  if ! docker compose version >/dev/null 2>&1; then
    compose_plugin
  fi
  log "$(docker compose version)"
}

compose_plugin() {  # build compose v2 from the Go module proxy (`go install` refuses it)
  command -v go >/dev/null || { log "compose v2 needs Go to build it; none found"; return 1; }
  log "building docker compose $COMPOSE_VERSION from the Go module proxy (about a minute)"
  local src dir
  src="$(GOFLAGS=-mod=mod go mod download -json "$COMPOSE_MODULE@$COMPOSE_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$src" ]] || { log "could not download $COMPOSE_MODULE@$COMPOSE_VERSION"; return 1; }
  dir="$(mktemp -d)"
  cp -r "$src/." "$dir" && chmod -R u+w "$dir"
  mkdir -p "$(dirname "$PLUGIN")"
  (cd "$dir" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" \
    -o "$PLUGIN" ./cmd)
  rm -rf "$dir"
}

start() {
  if docker info >/dev/null 2>&1; then return 0; fi
  log "starting dockerd (log in $RUN_DIR/dockerd.log)"
  # dockerd writes its own pid there (and removes it when it stops): `stop` needs
  # dockerd's, not that of the shell or sudo that started it
  as_root dockerd --pidfile "$RUN_DIR/dockerd.pid" >"$RUN_DIR/dockerd.log" 2>&1 &
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      log "dockerd did not answer in 60 s"; tail -n 20 "$RUN_DIR/dockerd.log" >&2; return 1
    fi
    sleep 0.5
  done
}

stop() {
  local f="$RUN_DIR/dockerd.pid" pid
  [[ -s "$f" ]] || return 0
  pid="$(cat "$f")"
  log "stopping the dockerd this script started (pid $pid)"
  as_root kill "$pid" 2>/dev/null || true
  for _ in $(seq 120); do as_root kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if as_root kill -0 "$pid" 2>/dev/null; then
    log "dockerd did not stop in 60 s: killing it"
    as_root kill -9 "$pid" 2>/dev/null || true
  fi
  as_root rm -f "$f"
}

have() { docker image inspect "$1" >/dev/null 2>&1; }

pulled() {  # pulled IMAGE: present, or pulled now
  have "$1" && return 0
  log "pulling $1"
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

standin_python() {
  local name="$STANDIN_PREFIX/python:3.11-slim" rootfs="$CACHE/bookworm-python.tar"
  have "$name" && { echo "$name"; return; }
  if [[ ! -s "$rootfs" ]]; then
    log "debootstrap: Debian bookworm with its Python 3.11 (about a minute)"
    local dir
    dir="$(mktemp -d)"
    as_root debootstrap --variant=minbase \
      --include=python3,python3-pip,python3-venv,ca-certificates bookworm "$dir" >&2
    as_root ln -sf /usr/bin/python3 "$dir/usr/local/bin/python"
    as_root ln -sf /usr/bin/pip3 "$dir/usr/local/bin/pip"
    # pip may install into the system Python (as the official image's does), and
    # trusts what this machine trusts (its CA bundle reaches the package index)
    printf '[global]\nbreak-system-packages = true\ncert = /etc/ssl/certs/ca-certificates.crt\n' |
      as_root tee "$dir/etc/pip.conf" >/dev/null
    as_root cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
    as_root tar -C "$dir" -cf "$rootfs" .
    as_root rm -rf "$dir"
  fi
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' "$rootfs" "$name" >/dev/null
  echo "$name"
}

standin() {  # standin kafka|redis TAG BASE: build scripts/compose/NAME on BASE
  local what="$1" name="$STANDIN_PREFIX/$1:$2" base="$3" context
  have "$name" && { echo "$name"; return; }
  log "building $name from Debian packages"
  context="$(mktemp -d)"
  cp -r "$ROOT/scripts/compose/$what/." "$context"
  if [[ "$what" == kafka ]]; then
    "$ROOT/scripts/stack.sh" jars
    cp -r "$ROOT/.cache/kafka-$KAFKA_VERSION/libs" "$context/libs"
  fi
  docker build -q --build-arg "BASE=$base" -t "$name" "$context" >/dev/null
  rm -rf "$context"
  echo "$name"
}

images() {  # NAME=image for each base image compose.yaml takes from a variable
  local python="" entry var image
  for entry in "${OFFICIAL[@]}"; do
    var="${entry%%=*}" image="${entry#*=}"
    if pulled "$image"; then
      echo "$var=$image"
      continue
    fi
    log "no $image here (no registry reachable): a stand-in from Debian packages"
    [[ -n "$python" ]] || python="$(standin_python)" || return 1
    case "$var" in
      PYTHON_IMAGE) image="$python" ;;
      KAFKA_IMAGE) image="$(standin kafka "$KAFKA_VERSION" "$python")" || return 1 ;;
      REDIS_IMAGE) image="$(standin redis 7.0.15 "$python")" || return 1 ;;
      PROMETHEUS_IMAGE) image="$(standin prometheus 2.42 "$python")" || return 1 ;;
    esac
    echo "$var=$image"
  done
}

run_tests() {
  engine
  start
  trap stop EXIT
  local line
  images >"$RUN_DIR/images.env"
  while read -r line; do export "${line?}"; log "$line"; done <"$RUN_DIR/images.env"
  log "engine and base images ready after ${SECONDS} s"
  "$ROOT/.venv/bin/python" -m pytest -m compose -p no:cacheprovider "$ROOT/tests/compose" "$@"
  log "compose tests passed; ${SECONDS} s in all"
}

case "${1:-}" in
  engine) engine ;;
  start) start ;;
  images) images ;;
  stop) stop ;;
  test) shift; run_tests "$@" ;;
  *) echo "usage: $0 engine|start|images|stop|test [pytest args]" >&2; exit 2 ;;
esac
