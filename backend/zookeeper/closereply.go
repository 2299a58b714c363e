package zookeeper

import (
	"encoding/binary"
	"net"
	"sync"
)

// go-zookeeper's Close sends closeSession but reports nothing: not whether
// the server answered, nor whether the request ever left (it fails it
// locally when its loop ends first, and gives up waiting for the answer
// after a second). Only an answer proves that the server ended the session
// and deleted its ephemeral nodes, so the Conn reads the answer off the
// wire: the connections it dials are wrapped in a trackedConn, which picks
// the xid of closeSession out of the requests written and looks for a reply
// with that xid among the frames read. ZooKeeper frames are a 4-byte
// big-endian length and a body; a request body starts with its xid and
// opcode, a reply body with the request's xid. The first frame each way on
// a connection is the connect request or response, which has neither.

// opCloseSession is ZooKeeper's opcode of closeSession.
const opCloseSession = -11

// closeReply records whether the server answered this Conn's closeSession.
// It is shared by all the connections the Conn dials.
type closeReply struct {
	mu       sync.Mutex
	xid      int32 // of the closeSession written, if sent
	sent     bool
	answered bool
}

// request notes a request frame about to be written.
func (r *closeReply) request(xid, op int32) {
	if op != opCloseSession {
		return
	}
	r.mu.Lock()
	r.xid, r.sent = xid, true
	r.mu.Unlock()
}

// reply notes a reply frame read.
func (r *closeReply) reply(xid int32) {
	r.mu.Lock()
	if r.sent && xid == r.xid {
		r.answered = true
	}
	r.mu.Unlock()
}

// Answered reports whether the server answered closeSession.
func (r *closeReply) Answered() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.answered
}

// frameScanner splits one direction of a connection into frames and hands
// the first 8 bytes of each body (fewer if the body is shorter), with the
// frame's index on the connection, to onFrame.
type frameScanner struct {
	head    [12]byte // the length, then the start of the body
	have    int      // bytes of head filled
	want    int      // bytes of head to fill: 4, then 4 + the body's start
	skip    int      // bytes of the body after head still to pass
	index   int
	onFrame func(index int, body []byte)
}

func (s *frameScanner) feed(b []byte) {
	for len(b) > 0 {
		if s.want == 0 {
			s.want = 4
		}
		if s.have == s.want {
			// The head is in: pass the rest of the body.
			n := min(s.skip, len(b))
			s.skip -= n
			b = b[n:]
			if s.skip == 0 {
				s.next()
			}
			continue
		}
		n := copy(s.head[s.have:s.want], b)
		s.have += n
		b = b[n:]
		if s.have < s.want {
			return
		}
		if s.want == 4 {
			size := int(binary.BigEndian.Uint32(s.head[:4]))
			s.want = 4 + min(size, 8)
			s.skip = size - (s.want - 4)
			if s.want > 4 {
				continue // the start of the body next
			}
		}
		s.onFrame(s.index, s.head[4:s.want])
		if s.skip == 0 {
			s.next()
		}
	}
}

// next starts the next frame.
func (s *frameScanner) next() { s.have, s.want, s.index = 0, 0, s.index+1 }

// trackedConn is a connection go-zookeeper uses: it closes itself when a
// read fails (see closeOnReadError) and tells r of closeSession and of its
// answer. go-zookeeper reads from one goroutine and writes from another;
// each direction has its own scanner.
type trackedConn struct {
	net.Conn
	in, out *frameScanner
}

func newTrackedConn(nc net.Conn, r *closeReply) *trackedConn {
	return &trackedConn{
		Conn: nc,
		in: &frameScanner{onFrame: func(i int, body []byte) {
			if i > 0 && len(body) >= 4 {
				r.reply(int32(binary.BigEndian.Uint32(body)))
			}
		}},
		out: &frameScanner{onFrame: func(i int, body []byte) {
			if i > 0 && len(body) >= 8 {
				r.request(int32(binary.BigEndian.Uint32(body)), int32(binary.BigEndian.Uint32(body[4:])))
			}
		}},
	}
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := closeOnReadError{c.Conn}.Read(b)
	c.in.feed(b[:n])
	return n, err
}

// Write notes what it writes first: the server's answer may be read before
// Write returns.
func (c *trackedConn) Write(b []byte) (int, error) {
	c.out.feed(b)
	return c.Conn.Write(b)
}
