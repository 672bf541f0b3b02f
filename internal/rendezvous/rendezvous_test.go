package rendezvous

import (
	"fmt"
	"testing"
)

func TestEveryReplicaPicksTheSameOwnerWhateverTheOrder(t *testing.T) {
	a := []string{"r1", "r2", "r3"}
	b := []string{"r3", "r1", "r2"}
	for i := range 100 {
		key := fmt.Sprintf("host:%d", i)
		if Pick(key, a) != Pick(key, b) {
			t.Fatalf("%s: %s with %v, %s with %v", key, Pick(key, a), a, Pick(key, b), b)
		}
	}
	if got := Pick("x", nil); got != "" {
		t.Fatalf("Pick over no replicas = %q, want empty", got)
	}
}

func TestKeysSpreadAndOnlyTheLeaversKeysMove(t *testing.T) {
	three := []string{"r1", "r2", "r3"}
	two := []string{"r1", "r3"}
	count := map[string]int{}
	const keys = 3000
	for i := range keys {
		key := fmt.Sprintf("ins-%d", i)
		owner := Pick(key, three)
		count[owner]++
		after := Pick(key, two)
		if owner != "r2" && after != owner {
			t.Fatalf("%s moved from %s to %s when r2 left", key, owner, after)
		}
	}
	for _, r := range three {
		if count[r] < keys/3*8/10 || count[r] > keys/3*12/10 {
			t.Errorf("%s owns %d of %d keys, want about a third: %v", r, count[r], keys, count)
		}
	}
}
