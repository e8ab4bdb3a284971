package main

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kube-clusterip/kube-clusterip/datapath"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

// printRulesetWithoutRoot is the demo without root: no namespaces can be created, so it shows
// what the datapath would program for the demo's Services, rendered into a knftables Fake.
func printRulesetWithoutRoot(w io.Writer) error {
	fmt.Fprintln(w, "make demo needs root: it creates network namespaces (the node and one per pod) and programs")
	fmt.Fprintln(w, "nftables inside them. Run it as root (sudo -E make demo); nothing touches the host's network.")
	fmt.Fprintln(w, "Without root, here is the nftables ruleset the datapath would apply on demo-node for the")
	fmt.Fprintln(w, "demo's Services (rendered through knftables.Fake, nothing is applied):")
	services, slices := exampleServicesAndSlices()
	for _, svc := range services {
		fmt.Fprintf(w, "  service/%s  ClusterIP %s\n", svc.Name, svc.Spec.ClusterIP)
	}
	fmt.Fprintln(w)

	proxier, err := datapath.NewFake(datapath.Config{
		NodeName:     nodeName,
		IPFamilies:   []corev1.IPFamily{corev1.IPv4Protocol},
		ClusterCIDRs: []string{clusterCIDR},
		ServiceCIDRs: []string{serviceCIDR},
	})
	if err != nil {
		return err
	}
	if err := proxier.Sync(context.Background(), services, slices); err != nil {
		return fmt.Errorf("render the ruleset: %w", err)
	}
	_, err = io.WriteString(w, proxier.Table(corev1.IPv4Protocol).Dump())
	return err
}

// exampleServicesAndSlices are the demo's Services with the addresses a run would typically
// give them, and the EndpointSlices the endpoints controllers would write.
func exampleServicesAndSlices() ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	backend, sticky, database := backendService(), stickyService(), externalDatabaseService()
	backend.Spec.ClusterIP, sticky.Spec.ClusterIP, database.Spec.ClusterIP = "10.96.0.10", "10.96.0.11", "10.96.0.12"
	var podIPs []string
	for i := range backendPodNames {
		podIPs = append(podIPs, fmt.Sprintf("10.244.0.%d", 11+i))
	}
	slices := []*discoveryv1.EndpointSlice{
		exampleSlice(backend, podIPs, backendPort),
		exampleSlice(sticky, podIPs, backendPort),
		exampleSlice(database, []string{databaseIP}, databasePort),
	}
	return []*corev1.Service{backend, sticky, database}, slices
}

func exampleSlice(svc *corev1.Service, ips []string, port int32) *discoveryv1.EndpointSlice {
	slice := kit.MakeEndpointSlice(svc.Name+"-example", svc.Namespace).Service(svc.Name).TCPPort(svc.Spec.Ports[0].Name, port)
	for _, ip := range ips {
		slice.Endpoints(kit.OnNode(kit.ReadyEndpoint(ip), nodeName))
	}
	return slice.Obj()
}
