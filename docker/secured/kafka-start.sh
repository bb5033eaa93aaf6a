#!/bin/bash
# A broker of the secured deployment: its only client listener is SASL_SSL (SCRAM-SHA-512
# over TLS), brokers and controllers talk over mutual TLS, and the SCRAM credentials
# of the brokers and of flowledger are written into the metadata when the storage is
# formatted (KRaft has no ZooKeeper to add them to later). Passwords come from the
# environment (compose reads them from yours), never from this file.
set -euo pipefail
: "${KAFKA_NODE_ID:?}" "${KAFKA_BROKER_PASSWORD:?}" "${FLOWLEDGER_KAFKA_PASSWORD:?}"
host="kafka-${KAFKA_NODE_ID}"
config=/var/lib/kafka/server.properties
mkdir -p /var/lib/kafka/data
jaas_password=${KAFKA_BROKER_PASSWORD//\\/\\\\}
jaas_password=${jaas_password//\"/\\\"}
cat > "$config" <<PROPERTIES
process.roles=broker,controller
node.id=${KAFKA_NODE_ID}
controller.quorum.voters=1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093
listeners=SASL_SSL://:9092,CONTROLLER://:9093
advertised.listeners=SASL_SSL://${host}:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${jaas_password}";
listener.name.controller.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=/certs/${host}.pem
ssl.truststore.type=PEM
ssl.truststore.location=/certs/ca.pem
log.dirs=/var/lib/kafka/data
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
PROPERTIES
chmod 0600 "$config"
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --config "$config" --cluster-id "${CLUSTER_ID:?}" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=${KAFKA_BROKER_PASSWORD}]" \
    --add-scram "SCRAM-SHA-512=[name=flowledger,password=${FLOWLEDGER_KAFKA_PASSWORD}]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$config"
