#!/bin/sh
# sign-tencent.sh: call fleetpass's Tencent Cloud API 3.0 dialect (POST /)
# with a TC3-HMAC-SHA256 signature made by openssl, and send it with curl.
#
#   echo '{"Limit": 5}' | docs/examples/sign-tencent.sh 2017-03-12 DescribeInstances
#   docs/examples/sign-tencent.sh 2017-03-12 ResetInstancesPassword < body.json
#   echo '{"TaskId": 1}' | docs/examples/sign-tencent.sh 2018-04-23 DescribeOperationResult
#
# The version picks the service: 2017-03-12 is cvm, 2018-04-23 bm. The JSON
# body is read from standard input, so a password in it never appears in a
# process's arguments. The SecretId and SecretKey come from
# $FLEETPASS_DATA/admin-credentials (default ./fleetpass-data), the server
# from $FLEETPASS_URL (default http://127.0.0.1:8080). The secret is passed
# to openssl as an argument: fine on your own machine, not on a shared one.
set -eu
usage='usage: sign-tencent.sh 2017-03-12|2018-04-23 ACTION < body.json'
version=${1:?$usage}
action=${2:?$usage}
case $version in
2017-03-12) service=cvm ;;
2018-04-23) service=bm ;;
*) echo "$usage" >&2; exit 2 ;;
esac
data=${FLEETPASS_DATA:-./fleetpass-data}
url=${FLEETPASS_URL:-http://127.0.0.1:8080}
creds="$data/admin-credentials"
secret_id=$(sed -n 's/.*"keyId": *"\([^"]*\)".*/\1/p' "$creds")
secret=$(sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p' "$creds")

# Held in a shell variable, not a temporary file; printf is a shell
# builtin, so the body never becomes a process argument either.
body=$(cat)

host=${url#*://}
host=${host%%/*}
ts=$(date +%s)
date=$(date -u -d "@$ts" +%Y-%m-%d 2>/dev/null || date -u -r "$ts" +%Y-%m-%d)
ct=application/json
sha256() { openssl dgst -sha256 -r | cut -d' ' -f1; }
# hmac KEY-OPTION: HMAC-SHA256 of standard input, in hex.
hmac() { openssl dgst -sha256 -mac HMAC -macopt "$1" -r | cut -d' ' -f1; }

body_hash=$(printf '%s' "$body" | sha256)
canonical_hash=$(printf 'POST\n/\n\ncontent-type:%s\nhost:%s\n\ncontent-type;host\n%s' "$ct" "$host" "$body_hash" | sha256)
scope="$date/$service/tc3_request"
k_date=$(printf '%s' "$date" | hmac "key:TC3$secret")
k_service=$(printf '%s' "$service" | hmac "hexkey:$k_date")
k_signing=$(printf 'tc3_request' | hmac "hexkey:$k_service")
signature=$(printf 'TC3-HMAC-SHA256\n%s\n%s\n%s' "$ts" "$scope" "$canonical_hash" | hmac "hexkey:$k_signing")

printf '%s' "$body" | curl -sS -X POST "$url/" \
	-H "Content-Type: $ct" \
	-H "X-TC-Action: $action" \
	-H "X-TC-Version: $version" \
	-H "X-TC-Timestamp: $ts" \
	-H "X-TC-Region: ap-guangzhou" \
	-H "Authorization: TC3-HMAC-SHA256 Credential=$secret_id/$scope, SignedHeaders=content-type;host, Signature=$signature" \
	--data-binary @-
echo
