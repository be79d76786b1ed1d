#!/bin/sh
exec java ${KAFKA_HEAP_OPTS:--Xmx128m} -cp '/opt/kafka/libs/*' kafka.admin.BrokerApiVersionsCommand "$@"
