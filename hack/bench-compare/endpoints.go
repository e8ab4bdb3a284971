package main

// The endpoints workload of BenchmarkConverge (test/published.Workload), run against upstream
// kube-controller-manager.

import (
	"context"
	"path/filepath"
	"strconv"

	"github.com/kube-clusterip/kube-clusterip/test/published"
)

// runKubeControllerManager measures upstream's endpoint controllers on a fresh control plane:
// converge from empty, then readiness flips; figures keyed like BenchmarkConverge's metrics.
func runKubeControllerManager(ctx context.Context, o options, workload published.Workload) (map[string]float64, error) {
	cp, err := startControlPlane(o.assets, o.workDir)
	if err != nil {
		return nil, err
	}
	defer cp.stop()
	c := cp.client
	workload.Logf = func(format string, args ...any) { logf("kube-controller-manager: "+format, args...) }
	var kcm *process
	kcmCPU := func() (float64, error) {
		if kcm == nil {
			return 0, nil // not started yet
		}
		return published.ProcessCPU(kcm.cmd.Process.Pid)()
	}
	workload.CPU = published.ConvergeMeters(published.SumCPU(kcmCPU, published.SelfCPU()))
	result, err := workload.Run(ctx, c, func() (err error) {
		kcm, err = startProcess(o.workDir, filepath.Join(o.upstream, "kube-controller-manager"),
			"--kubeconfig="+cp.kubeconfig,
			"--controllers=endpoint,endpointslice,endpointslicemirroring",
			"--leader-elect=false",
			"--secure-port=0",
			"--kube-api-qps="+strconv.Itoa(o.qps),
			"--kube-api-burst="+strconv.Itoa(2*o.qps), // as our benchmark's manager
			"--v=1")
		return err
	})
	if kcm != nil {
		defer kcm.stop()
		if exitErr := kcm.exited(); exitErr != nil {
			return nil, exitErr
		}
	}
	if err != nil {
		return nil, err
	}
	figures := result.Metrics()
	figures["client-qps"] = float64(o.qps)
	return figures, nil
}

// runFloorWriter measures the endpoints floor (published.FloorWriter) on a fresh control plane
// at the same client QPS: what any controller needs at least on this API server. With readPods,
// the writer first streams the pods as an informer does: the least a controller that must know
// the pods before it publishes needs.
func runFloorWriter(ctx context.Context, o options, workload published.Workload, readPods bool) (map[string]float64, error) {
	cp, err := startControlPlane(o.assets, o.workDir)
	if err != nil {
		return nil, err
	}
	defer cp.stop()
	fixtures := cp.client
	floor, err := published.NewFloorWriter(cp.cfg, o.qps, readPods)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	side := "floor: "
	if readPods {
		side = "reading floor: "
	}
	workload.Logf = func(format string, args ...any) { logf(side+format, args...) }
	workload.BeforeStart = floor.Prepare
	workload.CPU = published.ConvergeMeters(published.SelfCPU())
	result, err := workload.Run(ctx, fixtures, func() error { return floor.Start(ctx) })
	if err != nil {
		return nil, err
	}
	return result.Metrics(), nil
}
