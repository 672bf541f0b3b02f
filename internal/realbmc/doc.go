// Package realbmc holds fleetpass's end-to-end tests of bare-metal servers
// powered through a real BMC: OpenIPMI's ipmi_sim serving IPMI 2.0 over
// loopback (internal/ipmitest), whose chassis hook powers a stand-in server
// made of a guesttest guest (namespaces, sshd, the real fleetpass-agent
// binary, its state kept across power cycles). A whole server is assembled
// by server.Open as `fleetpass serve` does; power is cross-checked with
// ipmitool, resets are proven by SSH logins.
//
// The tests need root, ipmi_sim, ipmitool and what guesttest needs; under
// -short they are skipped. The package has no code outside tests.
package realbmc
