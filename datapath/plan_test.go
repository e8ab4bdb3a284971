package datapath

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"
)

// TestPlanFullStepsFillsNewSetsAndSwapsTheKernelsOnes plans a full sync into a kernel
// that has no table, and into one whose table has the ClusterIP set: the elements (and
// flush) of a set the kernel has go to swap, one transaction, and every other set's to
// fill, which may be cut into several; none is lost or written twice.
func TestPlanFullStepsFillsNewSetsAndSwapsTheKernelsOnes(t *testing.T) {
	services, slices := manyServicesOfType(corev1.ServiceTypeNodePort, 3, 2)
	svc, slice := seedSticky()
	services, slices = append(services, svc), append(slices, slice)
	want := Render(Config{NodeName: "node-a", ClusterCIDRs: []string{clusterCIDRv4}}, corev1.IPv4Protocol, services, slices)
	all := &opLog{}
	planFull(all, want, existingObjects{})
	var contentOps int // flushes and fillings of sets and maps
	for _, op := range all.ops {
		if isContentOp(op) {
			contentOps++
		}
	}

	for _, tc := range []struct {
		name        string
		existing    existingObjects
		swappedSets []string
	}{
		{name: "no table", existing: existingObjects{}},
		{name: "the ClusterIP set in the kernel", existing: existingObjects{sets: []string{clusterIPsSet}}, swappedSets: []string{clusterIPsSet}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prepare, fill, swap, commit := &opLog{}, &opLog{}, &opLog{}, &opLog{}
			planFullSteps(fullSteps{prepare: prepare, fill: fill, swap: swap, commit: commit}, want, tc.existing)
			swapped := map[string]int{}
			for _, op := range swap.ops {
				swapped[op.setName()]++
			}
			for _, name := range tc.swappedSets {
				if swapped[name] < 2 {
					t.Errorf("swap has %d operations on %s, want its flush and elements", swapped[name], name)
				}
			}
			if len(swapped) != len(tc.swappedSets) {
				t.Errorf("swap works on sets %v, want %v", swapped, tc.swappedSets)
			}
			for _, op := range fill.ops {
				if swapped[op.setName()] > 0 {
					t.Errorf("set %s has operations in both fill and swap", op.setName())
				}
				if !isContentOp(op) {
					t.Errorf("fill has %v %T, want only flushes and elements", op.verb, op.obj)
				}
			}
			if got := len(fill.ops) + len(swap.ops); got != contentOps {
				t.Errorf("fill and swap have %d operations, want the %d of the one-transaction plan", got, contentOps)
			}
		})
	}
}

// isContentOp tells whether op flushes a set or map or adds an element.
func isContentOp(op loggedOp) bool {
	switch op.obj.(type) {
	case *knftables.Set, *knftables.Map:
		return op.verb == opFlush
	}
	return op.elem != nil
}
