package integration_test

import (
	"testing"

	"github.com/coordkit/coordkit/integration"
)

// Servers shared by the tests of this package (start-up costs seconds on a
// 2-core machine). Tests that stop or kill members start clusters of their
// own; tests that inject faults through a proxy may use these.
var (
	sharedZK         = integration.ShareZooKeeper()
	sharedZKEnsemble = integration.ShareZooKeeper(integration.WithMembers(3))
	sharedEtcd       = integration.ShareEtcd()
	sharedEtcd3      = integration.ShareEtcd(integration.WithMembers(3))
)

func TestMain(m *testing.M) {
	integration.VerifyTestMain(m, sharedZK, sharedZKEnsemble, sharedEtcd, sharedEtcd3)
}
