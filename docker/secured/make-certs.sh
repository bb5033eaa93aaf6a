#!/bin/sh
# One-shot certificate authority of the secured deployment (compose.secured.yml):
# a CA, a server certificate per Kafka broker, Temporal's frontend and the projection
# database, and one client certificate for the flowledger roles (Temporal mTLS).
# Written once into the shared `certs` volume; replace them with your own PKI's.
set -eu
apk add --no-cache openssl >/dev/null
out=/certs
[ -f "$out/ca.pem" ] && exit 0
cd "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=flowledger deployment CA" -keyout ca.key -out ca.pem
issue() { # name, extendedKeyUsage, subjectAltName
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$1" -keyout "$1.key" -out "$1.csr"
  printf 'extendedKeyUsage=%s\nsubjectAltName=%s\n' "$2" "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$1.ext" -out "$1.crt"
  # PKCS#8, which Kafka's PEM keystore, PostgreSQL and the Temporal SDK all read.
  openssl pkcs8 -topk8 -nocrypt -in "$1.key" -out "$1.pk8" && mv "$1.pk8" "$1.key"
  cat "$1.key" "$1.crt" > "$1.pem"
  rm -f "$1.csr" "$1.ext"
}
for n in 1 2 3; do issue "kafka-$n" serverAuth,clientAuth "DNS:kafka-$n"; done
issue temporal serverAuth,clientAuth DNS:temporal
issue projections-db serverAuth DNS:projections-db
issue flowledger clientAuth DNS:flowledger
chmod 0644 ./*.crt ca.pem
# The images run as different users (Kafka's appuser, temporal, flowledger's 10001);
# the volume is private to this deployment, so its keys are readable inside it.
chmod 0644 ./*.key ./*.pem
# PostgreSQL's image runs as uid 999 and reads its key only if it owns it.
chown 999:999 projections-db.key && chmod 0600 projections-db.key
rm -f ca.key
