package datapath

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// NetlinkCanaryPresent reports whether the canary chain of the table still holds its
// rule, with one netlink dump of that chain. `nft flush table` empties every chain and
// `nft delete table` removes it, so either makes this false. (Running `nft list chain`
// instead would make nft load every set element of the table first: seconds at 10k
// Services.)
func NetlinkCanaryPresent(_ context.Context, family knftables.Family, table string) (bool, error) {
	conn, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open netlink connection for canary check: %w", err)
	}
	tableFamily := nftables.TableFamilyIPv4
	if family == knftables.IPv6Family {
		tableFamily = nftables.TableFamilyIPv6
	}
	rules, err := conn.GetRules(&nftables.Table{Name: table, Family: tableFamily}, &nftables.Chain{Name: canaryChain})
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("list canary chain of %s %s: %w", family, table, err)
	}
	return len(rules) > 0, nil
}
