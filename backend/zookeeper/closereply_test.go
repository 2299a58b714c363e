package zookeeper

import (
	"encoding/binary"
	"slices"
	"testing"
)

// frameWithBody encodes a ZooKeeper frame whose body starts with the given
// int32s and has pad more bytes.
func frameWithBody(pad int, words ...int32) []byte {
	body := make([]byte, 4*len(words)+pad)
	for i, w := range words {
		binary.BigEndian.PutUint32(body[4*i:], uint32(w))
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestFrameScanner: frames are found whatever the chunks they arrive in,
// short bodies included.
func TestFrameScanner(t *testing.T) {
	stream := slices.Concat(
		frameWithBody(30, 0, 0),      // a connect frame
		frameWithBody(100, 7, -11),   // a long body
		frameWithBody(0),             // an empty body
		frameWithBody(1, 9),          // 5 bytes
		frameWithBody(12, -2, 11, 3), // a ping-like frame
	)
	want := [][]int32{{0, 0}, {7, -11}, {}, {9}, {-2, 11}}
	for chunk := 1; chunk <= len(stream); chunk++ {
		var got [][]int32
		s := &frameScanner{onFrame: func(i int, body []byte) {
			if i != len(got) {
				t.Fatalf("chunk %d: frame index %d, want %d", chunk, i, len(got))
			}
			var w []int32
			for len(body) >= 4 {
				w = append(w, int32(binary.BigEndian.Uint32(body)))
				body = body[4:]
			}
			got = append(got, w)
		}}
		for b := stream; len(b) > 0; {
			n := min(chunk, len(b))
			s.feed(b[:n])
			b = b[n:]
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: %d frames %v, want %v", chunk, len(got), got, want)
		}
		for i := range want {
			if !slices.Equal(got[i], want[i]) && !(len(got[i]) == 0 && len(want[i]) == 0) {
				t.Fatalf("chunk %d: frame %d starts %v, want %v", chunk, i, got[i], want[i])
			}
		}
	}
}

// TestCloseReply: only a reply with closeSession's xid, after it was sent,
// counts as the answer; the connect frames and other replies do not.
func TestCloseReply(t *testing.T) {
	var r closeReply
	c := newTrackedConn(nil, &r)
	c.out.feed(frameWithBody(30, 0, 0)) // connect request
	c.in.feed(frameWithBody(30, 5, 0))  // connect response
	c.in.feed(frameWithBody(8, 5, 0))   // a reply to xid 5, before closeSession
	c.out.feed(frameWithBody(0, 5, 4))  // xid 5: a getData
	c.out.feed(frameWithBody(0, 6, opCloseSession))
	if r.Answered() {
		t.Fatal("answered before any reply to closeSession")
	}
	c.in.feed(frameWithBody(8, 5, 0)) // the getData's reply
	if r.Answered() {
		t.Fatal("another request's reply taken for closeSession's")
	}
	c.in.feed(frameWithBody(8, 6, 0))
	if !r.Answered() {
		t.Fatal("closeSession's reply not seen")
	}
}
