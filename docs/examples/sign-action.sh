#!/bin/sh
# sign-action.sh: call fleetpass's action API (POST /api/v2/vm or /api/v2/zec)
# with a ZC2-HMAC-SHA256 signature made by openssl, and send it with curl.
#
#   echo '{"pageSize": 5}' | docs/examples/sign-action.sh vm DescribeInstances
#   docs/examples/sign-action.sh zec ResetInstancesPassword < body.json
#
# The JSON body is read from standard input, so a password in it never
# appears in a process's arguments. The key id and secret come from
# $FLEETPASS_DATA/admin-credentials (default ./fleetpass-data), the server
# from $FLEETPASS_URL (default http://127.0.0.1:8080). The secret is passed
# to openssl as an argument: fine on your own machine, not on a shared one.
set -eu
product=${1:?usage: sign-action.sh vm|zec ACTION < body.json}
action=${2:?usage: sign-action.sh vm|zec ACTION < body.json}
data=${FLEETPASS_DATA:-./fleetpass-data}
url=${FLEETPASS_URL:-http://127.0.0.1:8080}
creds="$data/admin-credentials"
key_id=$(sed -n 's/.*"keyId": *"\([^"]*\)".*/\1/p' "$creds")
secret=$(sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p' "$creds")

# Held in a shell variable, not a temporary file; printf is a shell
# builtin, so the body never becomes a process argument either.
body=$(cat)

host=${url#*://}
host=${host%%/*}
ts=$(date +%s)
ct=application/json
body_hash=$(printf '%s' "$body" | openssl dgst -sha256 -r | cut -d' ' -f1)
canonical_hash=$(printf 'POST\n/\n\ncontent-type:%s\nhost:%s\n\ncontent-type;host\n%s' "$ct" "$host" "$body_hash" |
	openssl dgst -sha256 -r | cut -d' ' -f1)
signature=$(printf 'ZC2-HMAC-SHA256\n%s\n%s' "$ts" "$canonical_hash" |
	openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)

printf '%s' "$body" | curl -sS -X POST "$url/api/v2/$product" \
	-H "Content-Type: $ct" \
	-H "X-ZC-Action: $action" \
	-H "X-ZC-Version: 2022-11-20" \
	-H "X-ZC-Timestamp: $ts" \
	-H "X-ZC-Signature-Method: ZC2-HMAC-SHA256" \
	-H "Authorization: ZC2-HMAC-SHA256 Credential=$key_id, SignedHeaders=content-type;host, Signature=$signature" \
	--data-binary @-
