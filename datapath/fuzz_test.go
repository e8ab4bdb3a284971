package datapath

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/test/fuzzbytes"
)

// FuzzRender builds Services and EndpointSlices from random bytes and checks that
// rendering never panics, and that knftables' Fake and the kernel accept the full sync
// and an incremental sync to a second random state (its Services keeping the first
// state's endpoint slot counts, see padSlots). In the private network namespace,
// nft commits the full sync over tables that hold an empty cluster's ruleset, then the
// incremental sync, and a full sync back to the empty cluster readies the tables for
// the next input. Without root or nft, only the Fake checks.
func FuzzRender(f *testing.F) {
	f.Add([]byte("backend\x00\x50\x1f\x90\x03\x01"), []byte{})
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"), []byte("\xff\xfe\xfd"))
	cfg := Config{NodeName: "node-a", ClusterCIDRs: []string{"10.244.0.0/16", "fd00::/48"}, ServiceCIDRs: []string{"10.96.0.0/12"},
		NodeIPs: []string{"192.168.0.5"}}
	families := cfg.withDefaults().IPFamilies
	empty := map[corev1.IPFamily]*Ruleset{}
	for _, family := range families {
		empty[family] = Render(cfg, family, nil, nil)
	}
	nft := emptyClusterTables(f, families, empty)
	table := DefaultTableName
	if nft != nil {
		table = nft.table
	}
	f.Fuzz(func(t *testing.T, first, second []byte) {
		var full, incremental strings.Builder
		wants := map[corev1.IPFamily]*Ruleset{}
		for _, family := range families {
			svcs1, slices1 := fuzzObjects(first)
			svcs2, slices2 := fuzzObjects(second)
			have := Render(cfg, family, svcs1, slices1)
			// A Service of both states keeps its slot counts, as the Proxier's
			// incremental renders do (padSlots).
			want := renderKeeping(cfg, family, svcs2, slices2, func(key types.NamespacedName) []portSlots {
				if f := have.Services[key]; f != nil {
					return f.slots
				}
				return nil
			})
			wants[family] = want
			fake := knftables.NewFake(NFTFamily(family), table)
			full.WriteString(runOnFake(t, fake, "full sync", func(tx *knftables.Transaction) {
				planFull(tx, have, existingObjects{})
			}))
			incremental.WriteString(runOnFake(t, fake, "incremental sync", func(tx *knftables.Transaction) {
				planIncremental(tx, have, want, unionKeys(have, want), nil, time.Now())
			}))
			_ = udpFrontendsToClean(have, want, nil, true)
		}
		if nft != nil {
			nft.commitSyncs(t, full.String(), incremental.String(), empty)
			nft.netlinkMatchesText(t, wants)
		}
	})
}

// emptyClusterTables returns the real nft with this process's tables holding the empty
// cluster's rulesets (deleted when f ends), or nil (and the coordinator says why) when
// there is no kernel to use.
func emptyClusterTables(f *testing.F, families []corev1.IPFamily, empty map[corev1.IPFamily]*Ruleset) *realNFT {
	nft, err := newRealNFT(families)
	if err != nil {
		if !isFuzzWorker() {
			fmt.Fprintf(os.Stderr, "%s: checking with knftables' Fake only, not the kernel: %v\n", f.Name(), err)
		}
		return nil
	}
	f.Cleanup(func() {
		if err := nft.drop(); err != nil {
			f.Errorf("delete table %s: %v", nft.table, err)
		}
	})
	if err := nft.fullSyncTo(empty); err != nil {
		f.Fatalf("kernel rejected the empty cluster's ruleset: %v", err)
	}
	return nft
}

// runOnFake has the Fake run what plan writes and returns it as nft input.
func runOnFake(t *testing.T, fake *knftables.Fake, what string, plan func(*knftables.Transaction)) string {
	t.Helper()
	tx := fake.NewTransaction()
	plan(tx)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatalf("%s rejected by knftables' Fake: %v\n%s", what, err, tx)
	}
	return tx.String()
}

// fuzzObjects decodes bytes into up to 8 Services (in 3 namespaces, so names repeat
// and ClusterIPs collide) with slices whose endpoints mix families, conditions, ports
// and nodes.
func fuzzObjects(data []byte) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	r := fuzzbytes.New(data)
	var services []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	for n := int(r.Byte() % 9); n > 0 && !r.Done(); n-- {
		svc := fuzzService(r)
		services = append(services, svc)
		for m := int(r.Byte() % 3); m > 0; m-- {
			slices = append(slices, fuzzSlice(r, svc))
		}
	}
	return services, slices
}

func fuzzService(r *fuzzbytes.Reader) *corev1.Service {
	ips := []string{fmt.Sprintf("10.96.0.%d", r.Byte()%8), fmt.Sprintf("fd00:96::%x", r.Byte()%8), "None", "", "not-an-ip"}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", r.Byte()%3), Name: fmt.Sprintf("svc%d", r.Byte()%4)},
		Spec:       corev1.ServiceSpec{ClusterIP: ips[int(r.Byte())%len(ips)]},
	}
	svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP, ips[int(r.Byte())%len(ips)]}
	if r.Byte()%4 == 0 {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		if t := int32(r.Byte()); t%2 == 0 {
			svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &t}}
		}
	}
	if r.Byte()%4 == 0 {
		svc.Spec.InternalTrafficPolicy = knftables.PtrTo(corev1.ServiceInternalTrafficPolicyLocal)
	}
	protos := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP, "ICMP"}
	for n := int(r.Byte() % 4); n > 0; n-- {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: []string{"", "http", "dns"}[r.Byte()%3], Protocol: protos[r.Byte()%4],
			Port: int32(r.Byte()%4) * 80, TargetPort: intstr.FromInt32(int32(r.Byte()))})
	}
	fuzzExternal(r, svc)
	return svc
}

// fuzzExternal gives svc external frontends from small pools, so that Services collide
// on external IPs and NodePorts, and an external IP may equal a ClusterIP.
func fuzzExternal(r *fuzzbytes.Reader, svc *corev1.Service) {
	if r.Done() {
		return
	}
	addrs := []string{"203.0.113.1", "203.0.113.2", "10.96.0.1", "2001:db8::1", "bad"}
	for n := int(r.Byte() % 3); n > 0; n-- {
		svc.Spec.ExternalIPs = append(svc.Spec.ExternalIPs, addrs[int(r.Byte())%len(addrs)])
	}
	for n := int(r.Byte() % 3); n > 0; n-- {
		ing := corev1.LoadBalancerIngress{IP: addrs[int(r.Byte())%len(addrs)]}
		if r.Byte()%3 == 0 {
			ing.IPMode = knftables.PtrTo(corev1.LoadBalancerIPModeProxy)
		}
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, ing)
	}
	ranges := []string{"192.168.0.0/16", " 10.0.0.0/8", "0.0.0.0/0", "2001:db8::/32", "bad"}
	for n := int(r.Byte() % 3); n > 0; n-- {
		svc.Spec.LoadBalancerSourceRanges = append(svc.Spec.LoadBalancerSourceRanges, ranges[int(r.Byte())%len(ranges)])
	}
	if r.Byte()%2 == 0 {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	for i := range svc.Spec.Ports {
		svc.Spec.Ports[i].NodePort = []int32{0, 30000, 30001, 70000}[r.Byte()%4]
	}
}

func fuzzSlice(r *fuzzbytes.Reader, svc *corev1.Service) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: fmt.Sprintf("%s-%d", svc.Name, r.Byte()%2),
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN}[r.Byte()%3],
	}
	for _, p := range svc.Spec.Ports {
		port := int32(r.Byte())*256 + int32(r.Byte()) - 10
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: knftables.PtrTo(p.Name), Protocol: knftables.PtrTo(p.Protocol), Port: &port})
	}
	for n := int(r.Byte() % 5); n > 0; n-- {
		addrs := []string{fmt.Sprintf("10.244.0.%d", r.Byte()%6), fmt.Sprintf("fd00::%x", r.Byte()%6), "db.example.com", "::ffff:10.0.0.1"}
		ep := discoveryv1.Endpoint{Addresses: []string{addrs[int(r.Byte())%len(addrs)]},
			NodeName: knftables.PtrTo([]string{"node-a", "node-b"}[r.Byte()%2])}
		ep.Conditions.Ready = fuzzBool(r)
		ep.Conditions.Serving = fuzzBool(r)
		ep.Conditions.Terminating = fuzzBool(r)
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func fuzzBool(r *fuzzbytes.Reader) *bool {
	switch r.Byte() % 3 {
	case 0:
		return nil
	case 1:
		return knftables.PtrTo(true)
	}
	return knftables.PtrTo(false)
}
