package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
)

// Reset the password of one instance with a generated password, then wait
// for the result. (The client's tests run the same calls against the real
// server in process; see internal/servertest.)
func Example() {
	ctx := context.Background()
	c, err := client.New("https://fleetpass.example.net:8443", os.Getenv("FLEETPASS_KEY_ID"), os.Getenv("FLEETPASS_KEY_SECRET"))
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
}
