#!/usr/bin/env bash
# Runs Driftline's local stack without Docker: a real Kafka broker (KRaft, jars from
# Maven Central), Debian's redis-server and the Python services. Every process we
# start gets a pid file in .run/; `down` stops exactly those pids, never by name.
#
#   scripts/stack.sh jars               resolve the broker's jars once into .cache/
#   scripts/stack.sh infra              start Kafka + Redis, wait until both answer
#   scripts/stack.sh service NAME PORT  start `python -m services.NAME` under `supervise`
#                                       (restarted whenever it exits), wait for /healthz
#   scripts/stack.sh down               stop everything we started (data kept)
#   scripts/stack.sh clean              down + delete local data
#   scripts/stack.sh status             what is running
#
# Kafka listens for clients with SASL/SCRAM-SHA-512 on KAFKA_PORT (9092), the same over
# TLS on KAFKA_TLS_PORT (9094), and for its own controller on KAFKA_CONTROLLER_PORT
# (9093); each principal's password is
# .secrets/kafka_<name> (`make secrets`), its ACLs are granted by `python -m shared.acls`.
# A second broker beside the first: other ports, DATA_DIR and RUN_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-3.9.1}"
RUN_DIR="${RUN_DIR:-$ROOT/.run}"
DATA_DIR="${DATA_DIR:-$ROOT/.data}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
# SASL_SSL for clients off the host: on loopback only until KAFKA_TLS_HOST names this
# machine as they reach it (it is in the broker's certificate: see scripts/kafka/tls.sh)
KAFKA_TLS_PORT="${KAFKA_TLS_PORT:-9094}"
KAFKA_TLS_HOST="${KAFKA_TLS_HOST:-127.0.0.1}"
case "$KAFKA_TLS_HOST" in localhost | 127.0.0.1) KAFKA_TLS_BIND=127.0.0.1 ;; *) KAFKA_TLS_BIND=0.0.0.0 ;; esac
SECRETS="$ROOT/.secrets"
# the SCRAM users made when the storage is formatted (shared/kafka_auth.py's PRINCIPALS)
PRINCIPALS="admin operator producer ingestion features training serving monitoring"
LIB_DIR="$ROOT/.cache/kafka-$KAFKA_VERSION/libs"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
KAFKA_HEAP="${KAFKA_HEAP:--Xms512m -Xmx1g}"
WAIT_SECONDS="${WAIT_SECONDS:-90}"

mkdir -p "$RUN_DIR" "$DATA_DIR"

log() { printf '[stack] %s\n' "$*" >&2; }

pid_alive() {  # pid_alive NAME -> 0 when .run/NAME.pid names a live process
  local f="$RUN_DIR/$1.pid"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

kafka_password() { cat "$SECRETS/kafka_$1"; }
# kcat's settings as `admin`, in a file of our own (mode 600), not on the command line
kcat_admin() {
  local conf="$RUN_DIR/kcat-admin.conf"
  (umask 077; printf 'security.protocol=sasl_plaintext\nsasl.mechanisms=SCRAM-SHA-512\n%s\n%s\n' \
    "sasl.username=admin" "sasl.password=$(kafka_password admin)" >"$conf")
  echo "$conf"
}
kafka_answers() { kcat -F "$(kcat_admin)" -L -b "127.0.0.1:$KAFKA_PORT" -m 2 >/dev/null 2>&1; }
# Redis's password, created by `make setup` (none: Redis runs without one)
REDIS_SECRET="$ROOT/.secrets/redis_password"
redis_password() { [[ -s "$REDIS_SECRET" ]] && cat "$REDIS_SECRET" || true; }
redis_answers() {
  [[ "$(REDISCLI_AUTH="$(redis_password)" redis-cli --no-auth-warning -h 127.0.0.1 -p 6379 ping \
    2>/dev/null)" == "PONG" ]]
}

wait_for() {  # wait_for WHAT CHECK-COMMAND...
  local what="$1"; shift
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@"; do
    if ((SECONDS > deadline)); then
      log "$what did not become ready in ${WAIT_SECONDS}s; see $RUN_DIR/$what.log"
      tail -n 30 "$RUN_DIR/$what.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
}

jars() {
  if compgen -G "$LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null; then
    return 0
  fi
  log "resolving Kafka $KAFKA_VERSION jars from Maven Central (cached in ~/.m2)"
  mkdir -p "$LIB_DIR"
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB_DIR"
}

start_kafka() {
  if pid_alive kafka; then log "kafka already running (pid $(cat "$RUN_DIR/kafka.pid"))"; return 0; fi
  if kafka_answers; then
    log "a broker already answers on 127.0.0.1:$KAFKA_PORT; reusing it"; grant_acls; return 0
  fi
  jars
  local name
  for name in $PRINCIPALS; do
    [[ -s "$SECRETS/kafka_$name" ]] || { log "no $SECRETS/kafka_$name: run make secrets"; return 1; }
  done
  [[ -s "$SECRETS/kafka_broker.pem" ]] || { log "no $SECRETS/kafka_broker.pem: run make secrets"; return 1; }
  local kdir="$DATA_DIR/kafka" props="$DATA_DIR/kafka/server.properties"
  mkdir -p "$kdir/logs"
  (umask 077; sed -e "s#@DATA_DIR@#$kdir#" -e "s#@CLIENT_PORT@#$KAFKA_PORT#g" \
    -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" -e "s#@TLS_PORT@#$KAFKA_TLS_PORT#g" \
    -e "s#@TLS_HOST@#$KAFKA_TLS_HOST#g" -e "s#@TLS_BIND@#$KAFKA_TLS_BIND#g" \
    -e "s#@SECRETS_DIR@#$SECRETS#g" \
    -e "s#@ADMIN_PASSWORD@#$(kafka_password admin)#g" \
    "$ROOT/scripts/kafka/server.properties.in" >"$props")
  local java=(java -cp "$LIB_DIR/*" -Dkafka.logs.dir="$kdir"
    -Dlog4j.configuration="file:$ROOT/scripts/kafka/log4j.properties")
  if [[ ! -f "$kdir/logs/meta.properties" ]]; then
    local cluster_id scram=()
    cluster_id="$("${java[@]}" kafka.tools.StorageTool random-uuid)"
    # KRaft keeps SCRAM users in the metadata log: the first ones are written by format
    for name in $PRINCIPALS; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$(kafka_password "$name")]")
    done
    "${java[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$props" \
      --ignore-formatted "${scram[@]}" >"$RUN_DIR/kafka-format.log" 2>&1
    echo "$PRINCIPALS" >"$kdir/scram-users"
  elif [[ ! -f "$kdir/scram-users" ]]; then
    log "$kdir was formatted before Kafka had users (SCRAM users are made at format):"
    log "make clean (deletes the local data), then make infra"
    return 1
  fi
  log "starting kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (SASL/SCRAM-SHA-512)," \
    "$KAFKA_TLS_BIND:$KAFKA_TLS_PORT (SASL_SSL, as $KAFKA_TLS_HOST)"
  # shellcheck disable=SC2086
  nohup "${java[@]}" $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true kafka.Kafka "$props" >"$RUN_DIR/kafka.log" 2>&1 &
  echo $! >"$RUN_DIR/kafka.pid"
  wait_for kafka kafka_answers
  log "kafka is ready"
  grant_acls
}

grant_acls() {  # each principal's ACLs (shared/acls.py) on TOPIC_PREFIX's topics, as admin; twice is harmless
  KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT" KAFKA_USERNAME=admin KAFKA_PASSWORD= \
    KAFKA_PASSWORD_FILE= TOPIC_PREFIX="${TOPIC_PREFIX:-}" \
    "$PYTHON" -m shared.acls >"$RUN_DIR/acls.log" 2>&1 || {
    log "granting the ACLs failed; see $RUN_DIR/acls.log"; tail -n 5 "$RUN_DIR/acls.log" >&2
    return 1; }
}

start_redis() {
  if pid_alive redis; then log "redis already running (pid $(cat "$RUN_DIR/redis.pid"))"; return 0; fi
  if redis_answers; then log "a redis already answers on 127.0.0.1:6379; reusing it"; return 0; fi
  mkdir -p "$DATA_DIR/redis"
  log "starting redis on 127.0.0.1:6379 (AOF on)"
  # the password goes in a config file of our own (mode 600), not on the command line
  local conf="$RUN_DIR/redis.conf"
  (umask 077; {
    echo "include $ROOT/scripts/redis.conf"
    if [[ -s "$REDIS_SECRET" ]]; then echo "requirepass $(redis_password)"; fi
  } >"$conf")
  nohup redis-server "$conf" --dir "$DATA_DIR/redis" >"$RUN_DIR/redis.log" 2>&1 &
  echo $! >"$RUN_DIR/redis.pid"
  wait_for redis redis_answers
  log "redis is ready"
}

# supervise NAME: run `python -m services.NAME` and start it again whenever it exits
# (a crash, a kill -9, a loop that gave up), after 1 s, doubling to 30 s while it keeps
# failing within a minute of its start. TERM or INT: stop the service, then return.
# The service's pid is in NAME.child; the supervisor's in NAME.pid.
supervise() {
  local name="$1" delay=1 started child rc
  trap 'kill -TERM "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true
        rm -f "$RUN_DIR/$name.child"; exit 0' TERM INT
  cd "$ROOT"
  while true; do
    started=$SECONDS
    "$PYTHON" -m "services.$name" >>"$RUN_DIR/$name.log" 2>&1 &
    child=$!
    echo "$child" >"$RUN_DIR/$name.child"
    rc=0; wait "$child" || rc=$?
    if ((SECONDS - started >= 60)); then delay=1; fi
    printf '[supervise] %s exited with %s; starting it again in %ss\n' "$name" "$rc" "$delay" \
      >>"$RUN_DIR/$name.log"
    sleep "$delay" & wait $!
    delay=$((delay * 2 > 30 ? 30 : delay * 2))
  done
}

start_service() {  # start_service NAME PORT
  local name="$1" port="$2"
  if pid_alive "$name"; then log "$name already running"; return 0; fi
  log "starting $name on 127.0.0.1:$port"
  : >"$RUN_DIR/$name.log"
  nohup bash "$ROOT/scripts/stack.sh" supervise "$name" >/dev/null 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
  wait_for "$name" curl -fs -o /dev/null "http://127.0.0.1:$port/healthz"
  log "$name is healthy"
}

stop_one() {  # stop_one NAME: TERM, wait, then KILL the pid we recorded
  local f="$RUN_DIR/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
  f="$RUN_DIR/$1.child"  # a service whose supervisor had to be killed
  if [[ -f "$f" ]]; then kill -KILL "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; fi
}

down() {
  local f name
  # services first, then the infrastructure they depend on
  for f in "$RUN_DIR"/*.pid; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .pid)"
    [[ "$name" == kafka || "$name" == redis ]] || stop_one "$name"
  done
  stop_one kafka
  stop_one redis
}

status() {
  local f
  for f in "$RUN_DIR"/*.pid; do
    [[ -e "$f" ]] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then
      local child="${f%.pid}.child"
      if [[ -f "$child" ]]; then
        echo "$(basename "$f" .pid): running (pid $(cat "$child"), supervised by $(cat "$f"))"
      else
        echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
      fi
    else
      echo "$(basename "$f" .pid): dead (stale pid file)"
    fi
  done
}

case "${1:-}" in
  jars) jars ;;
  infra) start_redis; start_kafka ;;
  service) start_service "$2" "$3" ;;
  supervise) supervise "$2" ;;
  down) down ;;
  clean) down; rm -rf "$DATA_DIR" "$RUN_DIR" ;;
  status) status ;;
  *) echo "usage: $0 jars|infra|service NAME PORT|supervise NAME|down|clean|status" >&2; exit 2 ;;
esac
