package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// TestCLIListsAndForgetsReplicas: `replicas list` shows the server that
// answers, alive and marked; `forget` refuses a live replica with the
// server's code.
func TestCLIListsAndForgetsReplicas(t *testing.T) {
	r := startAPI(t)
	res := runCLI(t, r.env, "", "replicas", "list")
	if res.code != 0 || !strings.Contains(res.stdout, "(this)") || !strings.Contains(res.stdout, "alive") ||
		!strings.Contains(res.stdout, "LAST HEARTBEAT") {
		t.Fatalf("replicas list: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, r.env, "", "-o", "json", "replicas", "list")
	var list apiv1.ReplicaList
	if err := json.Unmarshal([]byte(res.stdout), &list); err != nil || len(list.Replicas) != 1 || !list.Replicas[0].Self ||
		!list.Replicas[0].Alive || list.Replicas[0].Owns == nil {
		t.Fatalf("replicas list -o json: %v %s", err, res.stdout)
	}
	res = runCLI(t, r.env, "", "replicas", "forget", list.Replicas[0].ID, "r-nosuchreplica")
	if res.code != 1 || !strings.Contains(res.stderr, "REPLICA_ALIVE") || !strings.Contains(res.stderr, "REPLICA_NOT_FOUND") {
		t.Fatalf("replicas forget: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
}
