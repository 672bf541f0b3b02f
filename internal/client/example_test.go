package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/client/clienttest"
)

// exampleT lets the example start the fake outside a test.
type exampleT struct{}

func (exampleT) Cleanup(func()) {}
func (exampleT) Helper()        {}

// Reset the password of one instance with a generated password, then wait
// for the result.
func Example() {
	fake := clienttest.New(exampleT{})
	defer fake.Close()
	fake.AddInstance("ins-1a2b3c4d", "web-1", apiv1.StateRunning)

	ctx := context.Background()
	c, err := client.New(fake.URL(), clienttest.KeyID, clienttest.Secret)
	if err != nil {
		log.Fatal(err)
	}
	op, err := c.ResetPassword(ctx, apiv1.PasswordReset{
		InstanceIDs: []string{"ins-1a2b3c4d"},
		Generate:    true,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("generated a password:", op.GeneratedPassword != "")

	done, err := c.WaitOperation(ctx, op.ID)
	if err != nil {
		log.Fatal(err)
	}
	for _, it := range done.Items {
		fmt.Println(it.InstanceID, it.State)
	}
	// Output:
	// generated a password: true
	// ins-1a2b3c4d succeeded
}
