// Command coredns is upstream's CoreDNS with only the plugins a cluster DNS for kube-clusterip's
// demo and tests needs (kubernetes, errors, health, ready, cache, bind to listen on one address
// only, and template to answer NXDOMAIN outside the cluster's zones where a cluster would forward
// to an upstream resolver the tests do not have), built from the Go module proxy
// so that machines that cannot download release binaries still run a real cluster DNS.
package main

import (
	"fmt"
	"os"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// Each plugin registers its directive in init; SetDirectives below orders them.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

// directives is upstream's execution order (core/dnsserver/zdirectives.go) cut down to the
// plugins imported above, with template where upstream has forward (after kubernetes, which
// passes on names outside its zones); a Corefile naming any other plugin is refused at startup.
var directives = []string{"bind", "ready", "health", "errors", "cache", "kubernetes", "template"}

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		fmt.Fprintln(os.Stderr, "coredns:", err)
		os.Exit(1)
	}
	coremain.Run()
}
