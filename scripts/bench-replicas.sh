#!/usr/bin/env bash
# Throughput with one replica and with three sharing one database server
# (docs/benchmarks.md, "Throughput with one and with three replicas"), as
# alternating pairs: each variant of BenchmarkReplicaThroughput in a
# process (and a throwaway PostgreSQL cluster) of its own, one replica
# first in odd pairs and three first in even ones, so that neither a
# warmer cluster nor a drift of the shared machine's speed favours either.
# Prints every run, each pair's ratio (three replicas' resets/s over one's)
# and the median ratio. Usage: scripts/bench-replicas.sh [PAIRS], default 6.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-6}

./scripts/install-test-deps.sh
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go test -c -o "$bin/server.test" ./internal/server

# run VARIANT prints the run's benchmark line and leaves its resets/s in
# $rate; a run that fails prints all it wrote and stops the script.
run() {
	local out line
	out=$(cd internal/server && "$bin/server.test" -test.run '^$' -test.bench "ReplicaThroughput/$1" \
		-test.benchtime 1x -test.timeout 20m 2>&1) || { echo "$out" >&2; exit 1; }
	line=$(grep '^Benchmark' <<<"$out") || { echo "$out" >&2; exit 1; }
	echo "$line"
	rate=$(awk '{for (i = 2; i <= NF; i++) if ($i == "resets/s") print $(i-1)}' <<<"$line")
}

ratios=()
for ((p = 1; p <= pairs; p++)); do
	if ((p % 2)); then
		run 'replicas=1$'; one=$rate
		run 'replicas=3/shared'; three=$rate
	else
		run 'replicas=3/shared'; three=$rate
		run 'replicas=1$'; one=$rate
	fi
	ratios+=("$(awk -v a="$three" -v b="$one" 'BEGIN {printf "%.2f", a / b}')")
	echo "pair $p: 3 shared / 1 = ${ratios[-1]}"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{r[NR] = $1} END {
	m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
	printf "median of %d pairs: 3 shared / 1 = %.2f\n", NR, m }'
