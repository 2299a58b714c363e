package backendtest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
	"github.com/coordkit/coordkit/backend/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newMemory(t *testing.T) backend.Driver {
	d := memory.New()
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestMemory(t *testing.T) { backendtest.Run(t, newMemory) }
