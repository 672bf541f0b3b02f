// Package rendezvous picks, among a set of replicas, the one that owns a
// key (a libvirt host, an instance to sync), by rendezvous (highest random
// weight) hashing: every replica that sees the same set picks the same
// owner with no coordination, and when a replica joins or leaves only the
// keys it wins or held move.
package rendezvous

import "hash/fnv"

// Pick returns the owner of key among nodes, or "" when nodes is empty.
func Pick(key string, nodes []string) string {
	best, bestW := "", uint64(0)
	for _, n := range nodes {
		if w := weight(key, n); best == "" || w > bestW || (w == bestW && n < best) {
			best, bestW = n, w
		}
	}
	return best
}

// weight hashes key and node together. FNV alone mixes the last bytes
// poorly, so the sum goes through a finaliser (splitmix64's).
func weight(key, node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(node))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
