// Package sdktest tests fleetpass's bare-metal Tencent Cloud API 3.0
// actions (bm 2018-04-23) with the official Go SDK's bm/v20180423 package.
//
// Only the SDK's monolithic module (v1.0.162) has that package, and it
// cannot share a build with the split modules the main module's tests use
// (both provide tencentcloud/common), so this is a module of its own. It
// imports nothing of fleetpass: it builds the fleetpass binary from the
// enclosing module, starts `fleetpass serve --demo` on a loopback port and
// talks to it as a user would. scripts/test.sh runs it:
//
//	cd internal/dialect/tencent/sdktest && go test ./...
package sdktest
