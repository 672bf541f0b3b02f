package store

// SeedLock is the WithSessionLock namespace under which a server seeds
// its simulated demo and load fleets, so that replicas started together on
// one empty database seed once. It has a number of its own, apart from the
// namespaces numbered in dialect.go, so that namespaces added there never
// take it.
const SeedLock int32 = 64
