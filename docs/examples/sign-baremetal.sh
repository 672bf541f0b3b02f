#!/bin/sh
# sign-baremetal.sh: call fleetpass's bare-metal API (/v2/index.php) with an
# API 2.0 signature (HmacSHA256) made by openssl, sent as a form POST by curl.
#
#   docs/examples/sign-baremetal.sh DescribeDeviceList limit=5
#   docs/examples/sign-baremetal.sh DescribeOperationResult taskId=1
#   printf 'passwd=%s\n' 'Str0ng!pw' | docs/examples/sign-baremetal.sh ResetDevicePasswd instanceIds.1=ins-...
#
# Parameters are NAME=VALUE arguments; lines NAME=VALUE on standard input
# (when it is not a terminal) are added too, so that a password need not be
# an argument. Values are sent form-encoded; the signature covers them raw,
# sorted by name, as the scheme says. The key id and secret come from
# $FLEETPASS_DATA/admin-credentials (default ./fleetpass-data), the server
# from $FLEETPASS_URL (default http://127.0.0.1:8080). The secret is passed
# to openssl as an argument: fine on your own machine, not on a shared one.
set -eu
action=${1:?usage: sign-baremetal.sh ACTION [NAME=VALUE...]}
shift
data=${FLEETPASS_DATA:-./fleetpass-data}
url=${FLEETPASS_URL:-http://127.0.0.1:8080}
creds="$data/admin-credentials"
key_id=$(sed -n 's/.*"keyId": *"\([^"]*\)".*/\1/p' "$creds")
secret=$(sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p' "$creds")

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
params="$dir/params"
{
	printf 'Action=%s\n' "$action"
	printf 'Timestamp=%s\n' "$(date +%s)"
	printf 'Nonce=%s\n' "$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"
	printf 'SecretId=%s\n' "$key_id"
	printf 'SignatureMethod=HmacSHA256\n'
	for p in "$@"; do printf '%s\n' "$p"; done
	if [ ! -t 0 ]; then cat; fi
} | LC_ALL=C sort -t= -k1,1 >"$params"

host=${url#*://}
host=${host%%/*}
string_to_sign="POST${host}/v2/index.php?$(paste -sd'&' "$params")"
signature=$(printf '%s' "$string_to_sign" | openssl dgst -sha256 -hmac "$secret" -binary | base64)

# curl form-encodes each value from a file of its own, so that no value
# (the password) becomes one of curl's arguments.
set --
i=0
while IFS= read -r line; do
	i=$((i + 1))
	printf '%s' "${line#*=}" >"$dir/v$i"
	set -- "$@" --data-urlencode "${line%%=*}@$dir/v$i"
done <"$params"
curl -sS -X POST "$url/v2/index.php" "$@" --data-urlencode "Signature=$signature"
