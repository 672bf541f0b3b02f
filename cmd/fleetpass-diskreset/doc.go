// Command fleetpass-diskreset is the helper through which the fleetpass
// server sets a password by editing a shut-off Linux machine's disk with
// libguestfs (see package diskreset for the wire format). The server runs
// it once per edit, beside its own executable or from PATH; it is not meant
// to be run by hand, except as
//
//	fleetpass-diskreset --probe
//
// which prints, as JSON, whether this machine can edit disks (libguestfs,
// its backend, an appliance kernel) without opening any.
//
// Its cgo and libguestfs dependencies stay out of the fleetpass binary. On
// a build without cgo, or for another OS, it builds to a stub that says so.
package main
