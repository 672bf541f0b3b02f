package apiv1

import "time"

// Replica is one fleetpass server process sharing the installation's
// database (GET /v1/replicas).
type Replica struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Version string `json:"version"`
	// StartedAt and LastHeartbeat are on the database's clock.
	StartedAt     time.Time `json:"startedAt"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	// StoppedAt is set when the replica stopped gracefully.
	StoppedAt *time.Time `json:"stoppedAt,omitempty"`
	// Alive: its heartbeat is fresh and it has not stopped. Dead replicas
	// stay listed until forgotten (DELETE /v1/replicas/{id}, or after a
	// day).
	Alive bool `json:"alive"`
	// Self marks the replica that answered.
	Self bool `json:"self"`
	// Owns is what the replica holds for the cluster (host leases).
	Owns []string `json:"owns"`
}

// ReplicaList is GET /v1/replicas.
type ReplicaList struct {
	Replicas []Replica `json:"replicas"`
}
