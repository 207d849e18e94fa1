#!/usr/bin/env bash
# Makes the files docker-compose.yml mounts, in ./secrets beside it (or
# $SECRETS_DIR): a CA and the coordinators' TLS certificate (deploy/certs.sh),
# a token file with an admin, a viewer and one token per worker, and the
# env files that give each worker and the CLI its token. Files already there
# are kept.
set -o errexit -o nounset -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${SECRETS_DIR:-$here/secrets}
workers=(w1 w2 w3)

"$here/../certs.sh" "$dir" coordinator-1,coordinator-2,localhost,127.0.0.1
cd "$dir"
umask 077

token() { openssl rand -hex 24; }

if [[ ! -f tokens ]]; then
	{
		echo "# role   name   token"
		echo "admin admin $(token)"
		echo "viewer viewer $(token)"
		for w in "${workers[@]}"; do echo "worker $w $(token)"; done
	} >tokens
fi
# The token of NAME in the token file, as SLUICE_TOKEN in NAME.env.
for name in admin "${workers[@]}"; do
	[[ -f $name.env ]] && continue
	t=$(awk -v n="$name" '$2 == n { print $3 }' tokens)
	if [[ -z $t ]]; then
		echo "$dir/tokens has no token for $name: delete it to make a new one" >&2
		exit 1
	fi
	echo "SLUICE_TOKEN=$t" >"$name.env"
done
# Mounted into containers that run as uid 10001 (see certs.sh).
chmod 0644 tokens
echo "secrets in $dir"
