#!/bin/sh
# As the official image does: every KAFKA_FOO_BAR=v becomes foo.bar=v ("___" -> "_",
# "__" -> "-"), the storage is formatted with $CLUSTER_ID once, then the broker runs.
set -euf  # -f: the classpath's "*" is for Java, not the shell
config=/opt/kafka/config/server.properties
: > "$config"
env | grep '^KAFKA_' | grep -v -E '^KAFKA_(HEAP_OPTS|OPTS|JVM_PERFORMANCE_OPTS|LOG4J_OPTS)=' |
  while IFS='=' read -r name value; do
    key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' |
      sed -e 's/___/\x01/g' -e 's/__/-/g' -e 's/_/./g' -e 's/\x01/_/g')
    printf '%s=%s\n' "$key" "$value" >> "$config"
  done
java="java ${KAFKA_HEAP_OPTS:--Xmx1g} -cp /opt/kafka/libs/* -Dkafka.logs.dir=/tmp
  -Dlog4j.configuration=file:/opt/kafka/config/log4j.properties"
$java kafka.tools.StorageTool format -t "${CLUSTER_ID:?}" -c "$config" --ignore-formatted
exec $java kafka.Kafka "$config"
