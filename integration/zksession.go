package integration

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// ErrZooKeeperSessionInvalid is returned by ExpireZooKeeperSession when the
// server refuses to reattach the session: it has already expired, or the
// password is wrong (ZooKeeper answers both the same way).
var ErrZooKeeperSessionInvalid = errors.New("integration: ZooKeeper refused the session (expired already, or wrong password)")

const (
	zkOpCloseSession = -11
	zkMaxFrame       = 1 << 20
)

// ZooKeeperConnectResponse is the server's answer to a ConnectRequest, the
// first frame a ZooKeeper server sends on a connection.
type ZooKeeperConnectResponse struct {
	ProtocolVersion int32
	// Timeout is the negotiated session timeout in milliseconds; 0 means
	// the server refused the session.
	Timeout   int32
	SessionID int64
	Passwd    []byte
	ReadOnly  bool
}

// ParseZooKeeperConnectResponse decodes the body of a ConnectResponse frame
// (without its 4-byte length prefix).
func ParseZooKeeperConnectResponse(body []byte) (ZooKeeperConnectResponse, error) {
	var r ZooKeeperConnectResponse
	if len(body) < 20 {
		return r, fmt.Errorf("connect response too short (%d bytes)", len(body))
	}
	r.ProtocolVersion = int32(binary.BigEndian.Uint32(body[0:4]))
	r.Timeout = int32(binary.BigEndian.Uint32(body[4:8]))
	r.SessionID = int64(binary.BigEndian.Uint64(body[8:16]))
	n := int32(binary.BigEndian.Uint32(body[16:20]))
	rest := body[20:]
	switch {
	case n < 0:
		n = 0
	case int(n) > len(rest):
		return r, fmt.Errorf("connect response: password length %d exceeds frame", n)
	}
	r.Passwd = append([]byte(nil), rest[:n]...)
	if rest = rest[n:]; len(rest) > 0 {
		r.ReadOnly = rest[0] != 0
	}
	return r, nil
}

// zkConnectRequest encodes a ConnectRequest frame (with length prefix).
func zkConnectRequest(timeout time.Duration, sessionID int64, passwd []byte) []byte {
	body := make([]byte, 0, 4+8+4+8+4+len(passwd)+1)
	body = binary.BigEndian.AppendUint32(body, 0)                                     // protocolVersion
	body = binary.BigEndian.AppendUint64(body, 0)                                     // lastZxidSeen
	body = binary.BigEndian.AppendUint32(body, uint32(int32(timeout.Milliseconds()))) // timeOut
	body = binary.BigEndian.AppendUint64(body, uint64(sessionID))                     // sessionId
	body = binary.BigEndian.AppendUint32(body, uint32(len(passwd)))                   // passwd
	body = append(body, passwd...)
	body = append(body, 0) // readOnly
	return frame(body)
}

// zkCloseSessionRequest encodes a closeSession request frame.
func zkCloseSessionRequest(xid int32) []byte {
	body := binary.BigEndian.AppendUint32(nil, uint32(xid))
	op := int32(zkOpCloseSession)
	body = binary.BigEndian.AppendUint32(body, uint32(op))
	return frame(body)
}

func frame(body []byte) []byte {
	out := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body)))
	return append(out, body...)
}

// readFrame reads one length-prefixed frame body.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(hdr[:]))
	if n < 0 || n > zkMaxFrame {
		return nil, fmt.Errorf("bad frame length %d", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body, nil
}

// ExpireZooKeeperSession makes the ZooKeeper server really close a client's
// session, the way Curator's KillSession did: it attaches to the session
// from a second connection (with the session's id and password, which a
// ZooKeeper-aware Proxy records) and sends closeSession. The server deletes
// the session's ephemeral nodes, fires their watches, and answers the
// original client's next contact with "session expired". When it returns
// nil the session is closed on the servers.
//
// serverAddr can be any member of the ensemble. Attaching to the session
// makes the server drop the original client's connection; if that client
// reconnects before closeSession is processed, the attempt is repeated
// until ctx ends (30s without a deadline). It returns
// ErrZooKeeperSessionInvalid if the server does not know the session (it
// expired already) or the password is wrong.
func ExpireZooKeeperSession(ctx context.Context, serverAddr string, sessionID int64, passwd []byte) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var last error
	closeSent := false
	for attempt := 0; ; attempt++ {
		res, err := expireOnce(ctx, serverAddr, sessionID, passwd)
		switch res {
		case expireClosed:
			return nil
		case expireInvalid:
			if closeSent {
				// An earlier closeSession went through, but the server
				// closed the connection instead of answering.
				return nil
			}
			return fmt.Errorf("expire ZooKeeper session 0x%x: %w", sessionID, ErrZooKeeperSessionInvalid)
		case expireUnknown:
			// The session was attached and closeSession sent, but the
			// connection ended without a reply: either the server closed
			// the session (it may close the connection instead of
			// answering) or the original client took the session back.
			// The next attempt tells which.
			closeSent = true
		}
		last = err
		if ctx.Err() != nil {
			return fmt.Errorf("expire ZooKeeper session 0x%x: %w (last: %v)", sessionID, ctx.Err(), last)
		}
		if res == expireFailed {
			t := time.NewTimer(time.Duration(attempt+1) * 20 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

type expireResult int

const (
	expireFailed  expireResult = iota // nothing known; retry
	expireClosed                      // the server acknowledged closeSession
	expireInvalid                     // the server refused the session
	expireUnknown                     // closeSession sent, no answer
)

// expireOnce makes one attempt.
func expireOnce(ctx context.Context, addr string, sessionID int64, passwd []byte) (expireResult, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return expireFailed, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if step := time.Now().Add(10 * time.Second); step.Before(deadline) {
		deadline = step
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	// Send both frames at once: the server handles the closeSession right
	// after it has reattached the session, which leaves the original
	// client little time to take the session back.
	req := append(zkConnectRequest(10*time.Second, sessionID, passwd), zkCloseSessionRequest(1)...)
	if _, err := conn.Write(req); err != nil {
		return expireFailed, fmt.Errorf("send connect+closeSession: %w", err)
	}
	body, err := readFrame(conn)
	if err != nil {
		return expireFailed, fmt.Errorf("read connect response: %w", err)
	}
	resp, err := ParseZooKeeperConnectResponse(body)
	if err != nil {
		return expireFailed, err
	}
	if resp.Timeout <= 0 || resp.SessionID != sessionID {
		return expireInvalid, nil
	}
	// The reply header: xid int32, zxid int64, err int32.
	for {
		body, err := readFrame(conn)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				return expireUnknown, fmt.Errorf("closeSession: connection closed without a reply")
			}
			return expireFailed, fmt.Errorf("read closeSession reply: %w", err)
		}
		if len(body) < 16 {
			return expireFailed, fmt.Errorf("closeSession reply too short (%d bytes)", len(body))
		}
		if xid := int32(binary.BigEndian.Uint32(body[0:4])); xid != 1 {
			continue // not our reply (a notification)
		}
		if code := int32(binary.BigEndian.Uint32(body[12:16])); code != 0 {
			return expireFailed, fmt.Errorf("closeSession answered error code %d", code)
		}
		return expireClosed, nil
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
