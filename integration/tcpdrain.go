package integration

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// openTCPConns counts the TCP connections of this network namespace that
// are still open (ESTABLISHED or CLOSE_WAIT) with a local or remote port
// in ports, from /proc/net/tcp and /proc/net/tcp6. ok is false when the
// tables cannot be read (not Linux).
func openTCPConns(ports map[int]bool) (n int, ok bool) {
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		ok = true
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 {
				continue
			}
			if st := fields[3]; st != "01" && st != "08" {
				continue
			}
			if ports[hexPort(fields[1])] || ports[hexPort(fields[2])] {
				n++
			}
		}
		f.Close()
	}
	return n, ok
}

func hexPort(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return -1
	}
	p, err := strconv.ParseInt(addr[i+1:], 16, 32)
	if err != nil {
		return -1
	}
	return int(p)
}

// waitTCPDrained waits, up to timeout, until no connection to or from
// ports is open.
func waitTCPDrained(ports map[int]bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		n, ok := openTCPConns(ports)
		if !ok || n == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
