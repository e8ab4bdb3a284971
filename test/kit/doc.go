// Package kit is the shared test kit: builders for the objects tests write (Services, Pods,
// EndpointSlices, Nodes) in the MakeX(...).Option(...).Obj() style, so that every test, benchmark
// and the demo build them the same way. It imports Kubernetes types only, so that any package's
// tests may use it.
package kit

func apply[T any](obj *T, edits []func(*T)) {
	for _, edit := range edits {
		edit(obj)
	}
}
