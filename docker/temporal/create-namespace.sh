#!/bin/sh
# Registers the namespace flowledger uses once the frontend answers (the temporal CLI
# of the admin-tools image; TEMPORAL_ADDRESS and TEMPORAL_TLS_* are its own settings).
set -eu
ns="${NAMESPACE:-default}"
until temporal operator cluster health >/dev/null 2>&1; do sleep 2; done
temporal operator namespace describe --namespace "$ns" >/dev/null 2>&1 ||
  temporal operator namespace create --namespace "$ns" --retention 7d
