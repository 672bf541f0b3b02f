#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the Debian packages the
# real-component tests need (sshd, qemu-guest-agent, chromium, libvirt and
# QEMU), checks formatting, vet (the Windows agent's too) and staticcheck,
# cross-compiles for Windows, runs the short tests under the race detector,
# then every test (real processes, real sshd, real qemu-ga, real Chromium,
# real VMs under a real libvirtd, real PostgreSQL included; the server and
# CLI suites once on SQLite and once on PostgreSQL) and each Go fuzz target for a
# few thousand inputs.
# Run it as root from anywhere in the tree. The VM tests' guest image is
# built on the first run (about 2.5 minutes) and cached in
# /var/cache/fleetpass/vm.
#
#   ./scripts/test.sh            everything
#   FUZZTIME=200000x ./scripts/test.sh   longer fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."

# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# report its own deadline as a failure when the time is up while a worker
# is mid-input (golang/go#75804, fixed in Go 1.27), which a loaded 2-core
# machine hits now and then.
fuzztime=${FUZZTIME:-10000x}

# Pinned: a newer staticcheck brings new checks, and a new finding should
# come with a change to the tree, not with a fresh CI machine.
staticcheck_version=v0.8.2

step() { printf '\n==> %s\n' "$*"; }

step "test dependencies"
./scripts/install-test-deps.sh

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [[ -n $unformatted ]]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi

step "docs stand alone"
# Code, tests, migrations and docs point to docs/design.md by path, never
# to a design document outside the repository.
if git grep -n 'DESIGN §' -- . ':!scripts/test.sh'; then
	echo "refer to docs/design.md (by path and section) instead" >&2
	exit 1
fi

step "go vet"
go vet ./...

step "build (linux, and the agent for windows)"
go build ./...
GOOS=windows GOARCH=amd64 go build -o /dev/null ./cmd/fleetpass-agent
GOOS=windows GOARCH=amd64 go vet ./cmd/fleetpass-agent ./internal/agent/...

step "staticcheck ${staticcheck_version}"
staticcheck=$(go env GOPATH)/bin/staticcheck
if [[ ! -x $staticcheck ]] || ! "$staticcheck" -version | grep -q "(${staticcheck_version#v})"; then
	go install "honnef.co/go/tools/cmd/staticcheck@${staticcheck_version}"
fi
"$staticcheck" ./...
GOOS=windows GOARCH=amd64 "$staticcheck" ./cmd/fleetpass-agent ./internal/agent/...

step "short tests under the race detector"
go test -race -short -count=1 -timeout 30m ./...

step "tests (all of them, real components included)"
go test -count=1 -timeout 45m ./...

# The store's conformance suite runs on both databases above; the server
# and CLI suites run on SQLite above and once more on PostgreSQL here (a
# throwaway cluster per test binary, a fresh database per test).
step "server and CLI tests on PostgreSQL"
FLEETPASS_TEST_DATABASE=postgres go test -count=1 -timeout 30m ./internal/server ./internal/cli

step "Tencent bare-metal SDK test (a module of its own: the SDK's bm package cannot share the main module's build)"
(cd internal/dialect/tencent/sdktest && go vet ./... && go test -count=1 -timeout 10m ./...)

step "fuzz targets, ${fuzztime} each"
# Each package's Fuzz functions, found in its test files.
for dir in $(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | xargs -n1 dirname | sort -u); do
	for fn in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //' | sort -u); do
		echo "fuzz ./$dir $fn"
		go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$fuzztime" "./$dir" >/tmp/fleetpass-fuzz.log 2>&1 || {
			cat /tmp/fleetpass-fuzz.log >&2
			exit 1
		}
	done
done

step "all tests passed"
