package zookeeper

import (
	"fmt"
	"strings"

	"go.uber.org/zap"
)

// zkLogger adapts go-zookeeper's Printf logger to zap. It also reads the
// line go-zookeeper prints once a session is established,
//
//	authenticated: id=%d, timeout=%d
//
// because that is the only place go-zookeeper reveals the session timeout
// the server negotiated (Conn.Timeout).
type zkLogger struct {
	log    *zap.Logger
	onAuth func(id, timeoutMs int64)
}

// Printf implements zk.Logger.
func (l zkLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(msg, "authenticated: ") && l.onAuth != nil {
		var id, timeoutMs int64
		if n, err := fmt.Sscanf(msg, "authenticated: id=%d, timeout=%d", &id, &timeoutMs); err == nil && n == 2 {
			l.onAuth(id, timeoutMs)
		}
	}
	switch {
	case strings.HasPrefix(msg, "failed to connect"),
		strings.HasPrefix(msg, "authentication failed"),
		strings.HasPrefix(msg, "Failed to set previous watches"),
		strings.HasPrefix(msg, "error in resending auth"):
		l.log.Warn(msg)
	default:
		l.log.Debug(msg)
	}
}
