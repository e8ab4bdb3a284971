package endpoints

import (
	"fmt"
	"hash/fnv"

	"k8s.io/utils/dump"
)

// deepHash is the hash upstream sorts subsets and ports by, so that our canonical order is theirs.
func deepHash(obj any) []byte {
	hasher := fnv.New128a()
	fmt.Fprintf(hasher, "%v", dump.ForHash(obj))
	return hasher.Sum(nil)
}
