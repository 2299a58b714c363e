package etcddriverdev

import (
	"testing"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
)

func TestEtcdDriverDevConformance(t *testing.T) {
	ep := devEtcd(t)
	backendtest.Run(t, func(t *testing.T) backend.Driver {
		return devDriver(t, ep)
	})
}
