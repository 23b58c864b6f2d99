#!/bin/bash
# One-shot job of docker-compose.secured.yml: create the SCRAM-SHA-512 user of every principal in
# MBYN_PRINCIPALS, each with the password of its variable KAFKA_<NAME>_PASSWORD (upper case, '-' → '_').
# It talks to the broker as `admin` over SASL/PLAIN (the broker's static admin login), so it works on a
# fresh cluster that has no SCRAM user yet. Idempotent: re-running resets each password to the variable's.
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD}"
umask 077
config=$(mktemp)
trap 'rm -f "$config"' EXIT
cat > "$config" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
PROPS
for name in ${MBYN_PRINCIPALS:?set MBYN_PRINCIPALS}; do
    var="KAFKA_$(echo "$name" | tr 'a-z-' 'A-Z_')_PASSWORD"
    password="${!var:-}"
    if [ -z "$password" ]; then
        echo "create-scram-users: $var is not set (the password of principal $name)" >&2
        exit 1
    fi
    /opt/kafka/bin/kafka-configs.sh --bootstrap-server "${KAFKA_BOOTSTRAP:-kafka:29092}" --command-config "$config" \
        --alter --entity-type users --entity-name "$name" --add-config "SCRAM-SHA-512=[password=${password}]"
done
echo "create-scram-users: $(echo $MBYN_PRINCIPALS | wc -w) SCRAM users in place"
