#!/bin/sh
# Kafka in compose, with authentication (mounted over the image's entrypoint):
# server.properties from the KAFKA_* variables as the official image makes it, plus
# the broker's own credentials read from its secret; the storage formatted once with
# every principal's SCRAM-SHA-512 credentials (KRaft keeps SCRAM users in its metadata
# log, so format is where the first ones are made); then the broker.
set -euf  # -f: the classpath's "*" is for Java, not the shell
secrets="${SECRETS_DIR:-/run/secrets}"  # (overridable to try the script outside compose)
libs="${KAFKA_LIBS:-/opt/kafka/libs}"
principals="admin operator producer ingestion features training serving monitoring"
tmp="${TMPDIR:-/tmp}"
config="$tmp/server.properties"  # holds the broker's password: this container's only
client="$tmp/admin.properties"   # the healthcheck's client settings, as admin
umask 077
: > "$config"
env | grep '^KAFKA_' | grep -v -E '^KAFKA_(HEAP_OPTS|OPTS|JVM_PERFORMANCE_OPTS|LOG4J_OPTS|LIBS|LOG4J)=' |
  while IFS='=' read -r name value; do
    key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' |
      sed -e 's/___/\x01/g' -e 's/__/-/g' -e 's/_/./g' -e 's/\x01/_/g')
    printf '%s=%s\n' "$key" "$value" >> "$config"
  done
admin=$(cat "$secrets/kafka_admin")
scram="org.apache.kafka.common.security.scram.ScramLoginModule required"
plain="org.apache.kafka.common.security.plain.PlainLoginModule required"
for listener in internal host external; do
  echo "listener.name.$listener.scram-sha-512.sasl.jaas.config=$scram username=\"admin\" password=\"$admin\";" >> "$config"
done
echo "listener.name.controller.plain.sasl.jaas.config=$plain username=\"admin\" password=\"$admin\" user_admin=\"$admin\";" >> "$config"
printf 'security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=%s username="admin" password="%s";\n' \
  "$scram" "$admin" > "$client"

java="java ${KAFKA_HEAP_OPTS:--Xmx1g} -cp $libs/* -Dkafka.logs.dir=$tmp
  -Dlog4j.configuration=file:${KAFKA_LOG4J:-/opt/kafka/config/log4j.properties}"
data="${KAFKA_LOG_DIRS:?}"
if [ ! -f "$data/meta.properties" ]; then
  set --
  for name in $principals; do
    set -- "$@" --add-scram "SCRAM-SHA-512=[name=$name,password=$(cat "$secrets/kafka_$name")]"
  done
  $java kafka.tools.StorageTool format -t "${CLUSTER_ID:?}" -c "$config" --ignore-formatted "$@"
  echo "$principals" > "$data/driftline-scram-users"
elif [ ! -f "$data/driftline-scram-users" ]; then
  echo "the kafka-data volume was formatted before Kafka had users:" \
    "docker compose down -v (deletes the data), then up again" >&2
  exit 1
fi
exec $java kafka.Kafka "$config"
