package datapath_test

import (
	"context"
	"log"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-clusterip/kube-clusterip/datapath"
)

// A node agent's reconciler: one Proxier for the node, Run for the periodic work,
// and Update + Apply for each Service event (Apply's error means: requeue with
// backoff).
func Example() {
	proxier, err := datapath.New(datapath.Config{
		NodeName:     "node-a",
		ClusterCIDRs: []string{"10.244.0.0/16", "fd00:10:244::/48"},
		ServiceCIDRs: []string{"10.96.0.0/12", "fd00:10:96::/112"},
		OnSync: func(r datapath.SyncResult) {
			log.Printf("sync %s full=%v reason=%q took=%v ops=%d err=%v", r.Family, r.Full, r.Reason, r.Duration, r.Operations, r.Err)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go proxier.Run(ctx)

	reconcile := func(key types.NamespacedName, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) (requeueAfter time.Duration) {
		proxier.Update(key, svc, slices) // svc == nil: the Service was deleted
		if err := proxier.Apply(ctx); err != nil {
			log.Printf("apply: %v", err)
			return time.Second
		}
		return 0
	}
	_ = reconcile
}
