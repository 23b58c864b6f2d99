#!/bin/sh
# Kafdrop's start in docker-compose.secured.yml: authenticate to the broker as the read-only principal
# `kafdrop` (SASL/SCRAM-SHA-512, password from KAFDROP_KAFKA_PASSWORD), then run the image's own start script,
# which decodes KAFKA_PROPERTIES (base64) into the Kafka client properties file.
set -eu
if [ -z "${KAFDROP_KAFKA_PASSWORD:-}" ]; then
    echo "kafdrop: KAFDROP_KAFKA_PASSWORD is empty (set KAFKA_KAFDROP_PASSWORD in .env)" >&2
    exit 1
fi
KAFKA_PROPERTIES=$(printf '%s\n' \
    "security.protocol=SASL_PLAINTEXT" \
    "sasl.mechanism=SCRAM-SHA-512" \
    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"kafdrop\" password=\"${KAFDROP_KAFKA_PASSWORD}\";" \
    | base64 | tr -d '\n')
export KAFKA_PROPERTIES
exec /kafdrop.sh "$@"
