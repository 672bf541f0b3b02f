package store

import (
	"context"
	"slices"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

func TestNamePrefixMatchesByCharactersNotBytes(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if _, err := s.CreateTenant(ctx, s.DB, "acme", "acme"); err != nil {
		t.Fatal(err)
	}
	names := []string{"café-01", "cafe-02", "日本-web", "日本語-db", "web"}
	for i, name := range names {
		in := apiv1.Instance{ID: "ins-prefix0" + string(rune('a'+i)), Tenant: "acme", Name: name, OSType: "linux",
			AdminUser: "root", State: apiv1.StateStopped}
		in.Power.Driver, in.Power.Address = "sim", name
		in.Guest.Driver, in.Guest.Address = "sim", name
		if err := s.CreateInstance(ctx, s.DB, &in); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"caf", []string{"cafe-02", "café-01"}},
		{"café", []string{"café-01"}},
		{"日本", []string{"日本-web", "日本語-db"}},
		{"日本語", []string{"日本語-db"}},
		{"日本語-db-x", nil},
		{"w", []string{"web"}},
	}
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			list, err := s.ListInstances(ctx, InstanceFilter{Tenant: "acme", NamePrefix: tc.prefix, Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, in := range list {
				got = append(got, in.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("prefix %q: got %q, want %q", tc.prefix, got, tc.want)
			}
		})
	}
}
