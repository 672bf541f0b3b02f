package ipmitest

import (
	"net"
	"sync"
	"testing"
)

// Lossy is a UDP relay in front of a BMC that can lose packets, as a busy
// network does: the driver's retransmissions are tested through it.
type Lossy struct {
	conn *net.UDPConn
	bmc  *net.UDPAddr

	mu        sync.Mutex
	upstreams map[string]*net.UDPConn
	drop      int
	dropped   int
}

// Lossy starts a relay to the BMC, closed when the test ends.
func (b *BMC) Lossy(t testing.TB) *Lossy {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	l := &Lossy{conn: conn, bmc: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: b.Port}, upstreams: map[string]*net.UDPConn{}}
	t.Cleanup(l.close)
	go l.relay()
	return l
}

// Addr is the relay's host:port, to use in place of the BMC's.
func (l *Lossy) Addr() string { return l.conn.LocalAddr().String() }

// DropResponses loses the BMC's next n answers (after the BMC acted on
// the requests they answer).
func (l *Lossy) DropResponses(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drop = n
}

// Dropped counts the answers lost so far.
func (l *Lossy) Dropped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

func (l *Lossy) relay() {
	buf := make([]byte, 65536)
	for {
		n, from, err := l.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		up, err := l.upstream(from)
		if err != nil {
			continue
		}
		_, _ = up.Write(buf[:n])
	}
}

func (l *Lossy) upstream(client *net.UDPAddr) (*net.UDPConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if up, ok := l.upstreams[client.String()]; ok {
		return up, nil
	}
	up, err := net.DialUDP("udp", nil, l.bmc)
	if err != nil {
		return nil, err
	}
	l.upstreams[client.String()] = up
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			l.mu.Lock()
			lose := l.drop > 0
			if lose {
				l.drop--
				l.dropped++
			}
			l.mu.Unlock()
			if !lose {
				_, _ = l.conn.WriteToUDP(buf[:n], client)
			}
		}
	}()
	return up, nil
}

func (l *Lossy) close() {
	l.conn.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, up := range l.upstreams {
		up.Close()
	}
}
