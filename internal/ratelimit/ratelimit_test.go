package ratelimit

import "testing"

func TestABurstIsAllowedThenRefusedWithAWaitPerPrincipal(t *testing.T) {
	var refused []string
	l := New(0.001, 2, func(door string) { refused = append(refused, door) })
	for i, want := range []bool{true, true, false, false} {
		d, ok := l.Allow("native", "key:a")
		if ok != want || (!ok && d <= 0) {
			t.Fatalf("request %d: ok %v wait %s, want ok %v", i+1, ok, d, want)
		}
	}
	// Another principal has its own bucket; the same one at another door
	// shares its bucket.
	if _, ok := l.Allow("action", "key:b"); !ok {
		t.Fatal("key b was refused")
	}
	if _, ok := l.Allow("action", "key:a"); ok {
		t.Fatal("key a got a fresh budget at another door")
	}
	if len(refused) != 3 || refused[2] != "action" {
		t.Fatalf("refusals reported %v", refused)
	}
}

func TestNoRateMeansNoLimit(t *testing.T) {
	l := New(0, 0, nil)
	for range 1000 {
		if _, ok := l.Allow("native", "key:a"); !ok {
			t.Fatal("refused without a limit")
		}
	}
}
