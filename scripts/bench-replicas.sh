#!/usr/bin/env bash
# Throughput with one replica and with three sharing one database server
# (docs/benchmarks.md, "Throughput with one and with three replicas"):
# BenchmarkOneAgainstThreeReplicas, PAIRS pairs of rounds in one process
# and on one throwaway PostgreSQL cluster, one replica first in odd pairs
# and three first in even ones. Prints every pair (resets/s, CPU and
# statements per reset, the ratio) and the medians.
# Usage: scripts/bench-replicas.sh [PAIRS], default 6.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-6}

./scripts/install-test-deps.sh
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go test -c -o "$bin/server.test" ./internal/server
cd internal/server
"$bin/server.test" -test.run '^$' -test.bench '^BenchmarkOneAgainstThreeReplicas$' -test.benchtime 1x \
	-test.timeout 60m -replica-pairs "$pairs"
