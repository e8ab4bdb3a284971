// Command etcd is upstream's etcd server, built from the Go module proxy so that envtest has a
// real etcd on machines that cannot download release binaries.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
