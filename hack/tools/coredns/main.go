// Command coredns is upstream's CoreDNS with only the plugins a cluster DNS for kube-clusterip's
// demo and tests needs (kubernetes, errors, health, ready, cache, and bind to listen on one
// address only), built from the Go module proxy
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
)

// directives is upstream's execution order (core/dnsserver/zdirectives.go) cut down to the
// plugins imported above; a Corefile naming any other plugin is refused at startup.
var directives = []string{"bind", "ready", "health", "errors", "cache", "kubernetes"}

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		fmt.Fprintln(os.Stderr, "coredns:", err)
		os.Exit(1)
	}
	coremain.Run()
}
