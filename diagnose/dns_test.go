package diagnose

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

// fakeDNS answers from a zone of resource records ("name. 5 IN A 10.96.0.10"): NXDOMAIN for a
// name it lacks, NOERROR without answers for a type it lacks; err, when set, for every question.
type fakeDNS struct {
	records []string
	err     error
}

func (f fakeDNS) Query(_ context.Context, name string, qtype uint16) (*dns.Msg, error) {
	if f.err != nil {
		return nil, f.err
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	known := false
	for _, record := range f.records {
		rr, err := dns.NewRR(record)
		if err != nil {
			panic(err)
		}
		if strings.EqualFold(rr.Header().Name, name) {
			known = true
			if rr.Header().Rrtype == qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	if !known {
		m.Rcode = dns.RcodeNameError
	}
	return m, nil
}

func TestSearchCandidates(t *testing.T) {
	tests := []struct {
		name, query, namespace string
		want                   []string
	}{
		{name: "a short name goes through the pod's namespace first", query: "backend", namespace: "shop",
			want: []string{"backend.shop.svc.cluster.local.", "backend.svc.cluster.local.", "backend.cluster.local.", "backend."}},
		{name: "NAME.NS has fewer than 5 dots: search list first", query: "backend.shop", namespace: "web",
			want: []string{"backend.shop.web.svc.cluster.local.", "backend.shop.svc.cluster.local.", "backend.shop.cluster.local.", "backend.shop."}},
		{name: "a rooted name is asked as is", query: "backend.shop.svc.cluster.local.", namespace: "web",
			want: []string{"backend.shop.svc.cluster.local."}},
		{name: "5 dots or more: the name itself first", query: "a.b.c.d.e.f", namespace: "web",
			want: []string{"a.b.c.d.e.f.", "a.b.c.d.e.f.web.svc.cluster.local.", "a.b.c.d.e.f.svc.cluster.local.", "a.b.c.d.e.f.cluster.local."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, SearchCandidates(tt.query, tt.namespace, "cluster.local")); diff != "" {
				t.Errorf("SearchCandidates (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDiagnoseDNS(t *testing.T) {
	svc := kit.MakeService("backend", testNamespace).ClusterIP("10.96.0.20").Selector(backendLabels).TCPPort("http", 80, 8080).Obj()
	headless := kit.MakeService("db", testNamespace).Headless().Selector(backendLabels).TCPPort("pg", 5432, 5432).Obj()
	dualStack := kit.MakeService("backend", testNamespace).ClusterIP("10.96.0.20", "fd00:10:96::20").Selector(backendLabels).TCPPort("http", 80, 8080).Obj()
	kubeDNS := kit.MakeService("kube-dns", "kube-system").ClusterIP("10.96.0.10").Obj()
	dnsReady := []*discoveryv1.EndpointSlice{dnsSlice(true)}
	healthy := []string{
		"backend.shop.svc.cluster.local. 5 IN A 10.96.0.20",
		"_http._tcp.backend.shop.svc.cluster.local. 5 IN SRV 0 100 80 backend.shop.svc.cluster.local.",
	}
	tests := []struct {
		name          string
		in            DNSInputs
		wantProblems  []string // a substring of each PROBLEM message, in order
		wantFix       string   // a substring of the first problem's fix
		wantOKContain []string
	}{
		{
			name: "healthy: FQDN, NAME.NS, short name and SRV answer the ClusterIP and port",
			in:   DNSInputs{Service: svc, DNSService: kubeDNS, DNSEndpointSlice: dnsReady, Querier: fakeDNS{records: healthy}},
			wantOKContain: []string{
				"A backend.shop.svc.cluster.local. -> 10.96.0.20, as the API says",
				"backend.shop (from a pod in shop) -> backend.shop.svc.cluster.local. through the search path",
				"backend (from a pod in shop) -> backend.shop.svc.cluster.local. through the search path",
				"SRV _http._tcp.backend.shop.svc.cluster.local. -> 80 backend.shop.svc.cluster.local.",
			},
		},
		{
			name: "dual-stack: A and AAAA each answer the ClusterIP of their family",
			in: DNSInputs{Service: dualStack, DNSService: kubeDNS, DNSEndpointSlice: dnsReady, Querier: fakeDNS{records: append([]string{
				"backend.shop.svc.cluster.local. 5 IN AAAA fd00:10:96::20",
			}, healthy...)}},
			wantOKContain: []string{
				"A backend.shop.svc.cluster.local. -> 10.96.0.20, as the API says",
				"AAAA backend.shop.svc.cluster.local. -> fd00:10:96::20, as the API says",
			},
		},
		{
			name:         "dual-stack: no AAAA record for the IPv6 ClusterIP",
			in:           DNSInputs{Service: dualStack, DNSService: kubeDNS, DNSEndpointSlice: dnsReady, Querier: fakeDNS{records: healthy}},
			wantProblems: []string{"AAAA backend.shop.svc.cluster.local.: the DNS answers nothing, the API says fd00:10:96::20"},
			wantFix:      "answer differs",
		},
		{
			name:         "no cluster DNS Service",
			in:           DNSInputs{Service: svc, Querier: fakeDNS{records: healthy}},
			wantProblems: []string{"no cluster DNS Service kube-system/kube-dns"},
			wantFix:      "--dns-service",
		},
		{
			name:         "CoreDNS has no ready endpoint",
			in:           DNSInputs{Service: svc, DNSService: kubeDNS, DNSEndpointSlice: []*discoveryv1.EndpointSlice{dnsSlice(false)}, Querier: fakeDNS{records: healthy}},
			wantProblems: []string{"has no ready endpoint: CoreDNS is not running or not ready"},
			wantFix:      "k8s-app=kube-dns",
		},
		{
			name:         "CoreDNS does not answer",
			in:           DNSInputs{Service: svc, DNSService: kubeDNS, DNSEndpointSlice: dnsReady, Querier: fakeDNS{err: errors.New("no reply within 2s")}},
			wantProblems: []string{"no answer from the cluster DNS 10.96.0.10:53 for backend.shop.svc.cluster.local.: no reply within 2s"},
			wantFix:      "CoreDNS is down or unreachable",
		},
		{
			name:         "wrong namespace: the short name from a pod elsewhere finds nothing",
			in:           DNSInputs{Service: svc, DNSService: kubeDNS, DNSEndpointSlice: dnsReady, FromNamespace: "web", Querier: fakeDNS{records: healthy}},
			wantProblems: []string{"backend (from a pod in web): NXDOMAIN for every name of the search path"},
			wantFix:      "wrong namespace: the Service is in shop; from web use backend.shop",
		},
		{
			name: "wrong namespace: the short name from a pod elsewhere finds that namespace's own backend",
			in: DNSInputs{Service: svc, DNSService: kubeDNS, DNSEndpointSlice: dnsReady, FromNamespace: "web",
				Querier: fakeDNS{records: append([]string{"backend.web.svc.cluster.local. 5 IN A 10.96.0.99"}, healthy...)}},
			wantProblems: []string{"backend (from a pod in web) resolves to backend.web.svc.cluster.local. -> 10.96.0.99, another name than the Service's"},
			wantFix:      "wrong namespace",
		},
		{
			name: "answer differs from the ClusterIP",
			in: DNSInputs{Service: svc, DNSService: kubeDNS, DNSEndpointSlice: dnsReady,
				Querier: fakeDNS{records: []string{"backend.shop.svc.cluster.local. 5 IN A 10.96.0.21", healthy[1]}}},
			wantProblems: []string{"A backend.shop.svc.cluster.local.: the DNS answers 10.96.0.21, the API says 10.96.0.20"},
			wantFix:      "answer differs",
		},
		{
			name:         "the Service exists but the DNS says NXDOMAIN",
			in:           DNSInputs{Service: svc, DNSService: kubeDNS, DNSEndpointSlice: dnsReady, Querier: fakeDNS{}},
			wantProblems: []string{"backend.shop.svc.cluster.local.: NXDOMAIN from 10.96.0.10:53, though the Service exists"},
			wantFix:      "kubernetes plugin",
		},
		{
			name: "headless: the A records are the ready endpoints, not the not-ready one",
			in: DNSInputs{Service: headless, DNSService: kubeDNS, DNSEndpointSlice: dnsReady,
				EndpointSlices: []*discoveryv1.EndpointSlice{podSlice("db", map[string]bool{"10.244.0.11": true, "10.244.0.12": false})},
				Querier: fakeDNS{records: []string{
					"db.shop.svc.cluster.local. 5 IN A 10.244.0.12",
					"db.shop.svc.cluster.local. 5 IN A 10.244.0.11",
					"_pg._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 50 5432 10-244-0-11.db.shop.svc.cluster.local.",
				}}},
			wantProblems: []string{"A db.shop.svc.cluster.local.: the DNS answers 10.244.0.11 10.244.0.12, the API says 10.244.0.11"},
			wantFix:      "answer differs",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.DNSServiceName = DefaultDNSService
			tt.in.Server = "10.96.0.10:53"
			if tt.in.FromNamespace == "" {
				tt.in.FromNamespace = testNamespace
			}
			got := DiagnoseDNS(context.Background(), tt.in)
			var problems []Finding
			var oks []string
			for _, f := range got {
				if f.Check != CheckDNS {
					t.Errorf("finding of check %q, want %q: %+v", f.Check, CheckDNS, f)
				}
				switch f.Severity {
				case Problem:
					problems = append(problems, f)
				case OK:
					oks = append(oks, f.Message)
				}
			}
			if len(problems) != len(tt.wantProblems) {
				t.Fatalf("%d problems, want %d: %+v", len(problems), len(tt.wantProblems), got)
			}
			for i, want := range tt.wantProblems {
				if !strings.Contains(problems[i].Message, want) {
					t.Errorf("problem %d: %q lacks %q", i, problems[i].Message, want)
				}
			}
			if len(problems) > 0 && !strings.Contains(problems[0].Fix, tt.wantFix) {
				t.Errorf("fix %q lacks %q", problems[0].Fix, tt.wantFix)
			}
			for _, want := range tt.wantOKContain {
				if !containsSubstring(oks, want) {
					t.Errorf("no OK finding with %q in %q", want, oks)
				}
			}
		})
	}
}

func containsSubstring(items []string, sub string) bool {
	for _, item := range items {
		if strings.Contains(item, sub) {
			return true
		}
	}
	return false
}

// dnsSlice is kube-dns's EndpointSlice with one CoreDNS endpoint, ready or not.
func dnsSlice(ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "kube-dns-x", Namespace: "kube-system", Labels: map[string]string{discoveryv1.LabelServiceName: "kube-dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}},
	}
}

// podSlice is a Service's EndpointSlice with the given addresses and their readiness.
func podSlice(service string, ready map[string]bool) *discoveryv1.EndpointSlice {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: service + "-x", Namespace: testNamespace, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for ip, r := range ready {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(r)}})
	}
	return slice
}
