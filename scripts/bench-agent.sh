#!/usr/bin/env bash
# The agent channel's benchmarks (docs/benchmarks.md, "Agent channel"):
#   1. 100 real test guests reset through the fleetpass agent, against a
#      plain parallel ssh+chpasswd loop and Ansible's user module on the
#      same guests in the same run, each until every guest is verified by
#      an SSH login; plus the agents' idle RSS;
#   2. a real server process with 1,000 connected agents (the agent's real
#      connection code, in one load-generator process, over loopback): its
#      CPU and RSS, and a batch of 100 resets under that load.
# Installs Ansible and sshpass (Ansible's password logins) when missing.
# Run as root from anywhere in the tree. FLEETPASS_BENCH_GUESTS=N changes
# the number of guests.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-deps.sh
missing=()
for p in ansible sshpass; do
	if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) != installed ]]; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	echo "bench-agent: installing ${missing[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

go test -run '^$' -bench 'AgentChannel' -benchtime 1x -timeout 90m -v ./internal/realguest/
