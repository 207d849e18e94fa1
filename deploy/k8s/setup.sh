#!/usr/bin/env bash
# Makes the certificates kustomization.yaml turns into Secrets, in ./secrets
# beside it (or $SECRETS_DIR): a CA, the coordinators' certificate for the
# sluice-coordinator Service, one client certificate per worker (CommonName
# its pod name, which is its --id) and an admin and a viewer certificate
# for the CLI. Files already there are kept.
set -o errexit -o nounset -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${SECRETS_DIR:-$here/secrets}
ns=${NAMESPACE:-sluice}
svc=sluice-coordinator

"$here/../certs.sh" "$dir" "$svc,$svc.$ns,$svc.$ns.svc,$svc.$ns.svc.cluster.local,localhost,127.0.0.1" \
	admin:admin viewer:viewer sluice-worker-0:worker sluice-worker-1:worker sluice-worker-2:worker
echo "secrets in $dir"
