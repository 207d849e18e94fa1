#!/usr/bin/env bash
# Makes a CA, a coordinator server certificate and client certificates with
# openssl, for the compose and Kubernetes examples (not for `sluice dev`,
# which makes its own with --tls).
#
#   deploy/certs.sh DIR SERVER_NAMES [NAME:ROLE ...]
#
# SERVER_NAMES: comma-separated DNS names and IP addresses the coordinators
# are dialled by (the certificate's subjectAltNames). Each NAME:ROLE makes
# NAME.pem and NAME-key.pem with CommonName NAME (the principal) and
# OrganizationalUnit ROLE (admin, viewer or worker): a worker's NAME is its
# --id. Files already in DIR are kept, so that running it again only adds.
set -o errexit -o nounset -o pipefail

if [[ $# -lt 2 ]]; then
	echo "usage: $0 DIR SERVER_NAMES [NAME:ROLE ...]" >&2
	exit 2
fi
dir=$1 names=$2
shift 2
mkdir -p "$dir"
chmod 0700 "$dir"
cd "$dir"
umask 077

if [[ ! -f ca.pem ]]; then
	openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem
	openssl req -x509 -new -key ca-key.pem -sha256 -days 3650 -subj "/CN=sluice CA" -out ca.pem
fi

# sign NAME SUBJECT EXTENSIONS
sign() {
	[[ -f $1.pem ]] && return
	openssl ecparam -name prime256v1 -genkey -noout -out "$1-key.pem"
	openssl req -new -key "$1-key.pem" -subj "$2" -out "$1.csr"
	openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 -days 825 \
		-extfile <(printf '%s\n' "$3") -out "$1.pem"
	rm -f "$1.csr"
}

san=
IFS=, read -ra list <<<"$names"
for n in "${list[@]}"; do
	if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
sign server "/CN=sluice coordinator" "subjectAltName=${san%,}
extendedKeyUsage=serverAuth"

for c in "$@"; do
	name=${c%%:*} role=${c#*:}
	case $role in admin | viewer | worker) ;; *)
		echo "$c: the role must be admin, viewer or worker" >&2
		exit 2
		;;
	esac
	sign "$name" "/CN=$name/OU=$role" "extendedKeyUsage=clientAuth"
done
# Mounted one by one into containers that run as uid 10001, the files must
# be readable by it; on the host the directory (0700) guards them. The CA's
# key is mounted nowhere.
chmod 0644 ./*.pem
chmod 0600 ca-key.pem
