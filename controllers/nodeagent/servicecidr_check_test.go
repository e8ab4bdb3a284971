package nodeagent

import "testing"

func TestServiceCIDRMismatch(t *testing.T) {
	cases := []struct {
		name       string
		configured []string
		cluster    []string
		mismatch   bool
		err        bool
	}{
		{name: "same", configured: []string{"10.96.0.0/12"}, cluster: []string{"10.96.0.0/12"}},
		{name: "same after masking and in another order", configured: []string{"fd00::/108", "10.96.0.1/12"}, cluster: []string{"10.96.0.0/12", "fd00::/108"}},
		{name: "duplicates count once", configured: []string{"10.96.0.0/12", "10.96.0.0/12"}, cluster: []string{"10.96.0.0/12"}},
		{name: "another range", configured: []string{"10.96.0.0/12"}, cluster: []string{"10.0.0.0/16"}, mismatch: true},
		{name: "a range the cluster added", configured: []string{"10.96.0.0/12"}, cluster: []string{"10.96.0.0/12", "10.200.0.0/16"}, mismatch: true},
		{name: "a wider range", configured: []string{"10.96.0.0/11"}, cluster: []string{"10.96.0.0/12"}, mismatch: true},
		{name: "invalid configured", configured: []string{"10.96.0.0"}, cluster: []string{"10.96.0.0/12"}, err: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := ServiceCIDRMismatch(tc.configured, tc.cluster)
			if (err != nil) != tc.err {
				t.Fatalf("error = %v, want error: %v", err, tc.err)
			}
			if (msg != "") != tc.mismatch {
				t.Fatalf("mismatch = %q, want a mismatch: %v", msg, tc.mismatch)
			}
		})
	}
}
