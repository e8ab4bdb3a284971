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
// Services.) It opens a netlink socket for the one dump; a Proxier keeps one open
// instead (netlinkCanary).
func NetlinkCanaryPresent(ctx context.Context, family knftables.Family, table string) (bool, error) {
	var once netlinkCanary
	defer once.socket.close()
	return once.present(ctx, family, table)
}

// netlinkCanary is NetlinkCanaryPresent over a socket kept from one check to the next
// (see keptSocket).
type netlinkCanary struct{ socket keptSocket }

func (c *netlinkCanary) present(_ context.Context, family knftables.Family, table string) (bool, error) {
	tableFamily := nftables.TableFamilyIPv4
	if family == knftables.IPv6Family {
		tableFamily = nftables.TableFamilyIPv6
	}
	var rules []*nftables.Rule
	err := c.socket.useNFT(func(conn *nftables.Conn) error {
		var err error
		rules, err = conn.GetRules(&nftables.Table{Name: table, Family: tableFamily}, &nftables.Chain{Name: canaryChain})
		if errors.Is(err, unix.ENOENT) {
			return nil // no table or chain: no canary, and the socket is fine
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("list canary chain of %s %s: %w", family, table, err)
	}
	return len(rules) > 0, nil
}
