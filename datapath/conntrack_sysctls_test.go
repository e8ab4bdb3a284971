package datapath

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestConntrackSettingsAreKubeProxys(t *testing.T) {
	// A kernel of its own defaults: 65536 entries, five days for an idle established
	// connection, a minute in CLOSE_WAIT.
	fresh := map[string]int{"nf_conntrack_max": 65536, "hashsize": 16384, "nf_conntrack_tcp_timeout_established": 432000,
		"nf_conntrack_tcp_timeout_close_wait": 60, "nf_conntrack_udp_timeout": 30, "nf_conntrack_udp_timeout_stream": 120,
		"nf_conntrack_tcp_be_liberal": 0}
	with := func(changes map[string]int) map[string]int {
		out := map[string]int{}
		for k, v := range fresh {
			out[k] = v
		}
		for k, v := range changes {
			out[k] = v
		}
		return out
	}
	defaults := DefaultConntrackSettings()
	tests := []struct {
		name     string
		settings ConntrackSettings
		cpus     int
		kernel   map[string]int // nil: no nf_conntrack (module not loaded)
		want     map[string]int
		changed  []string
		err      string
	}{
		{name: "2 CPUs: the minimum, a hash table a quarter of it, both TCP timeouts", settings: defaults, cpus: 2, kernel: fresh,
			want:    with(map[string]int{"nf_conntrack_max": 131072, "hashsize": 32768, "nf_conntrack_tcp_timeout_established": 86400, "nf_conntrack_tcp_timeout_close_wait": 3600}),
			changed: []string{"nf_conntrack_max=131072", "hashsize=32768", "nf_conntrack_tcp_timeout_established=86400", "nf_conntrack_tcp_timeout_close_wait=3600"}},
		{name: "8 CPUs: 32768 each", settings: defaults, cpus: 8, kernel: fresh,
			want:    with(map[string]int{"nf_conntrack_max": 262144, "hashsize": 65536, "nf_conntrack_tcp_timeout_established": 86400, "nf_conntrack_tcp_timeout_close_wait": 3600}),
			changed: []string{"nf_conntrack_max=262144", "hashsize=65536", "nf_conntrack_tcp_timeout_established=86400", "nf_conntrack_tcp_timeout_close_wait=3600"}},
		{name: "64 CPUs: capped at 1048576", settings: defaults, cpus: 64, kernel: fresh,
			want:    with(map[string]int{"nf_conntrack_max": 1048576, "hashsize": 262144, "nf_conntrack_tcp_timeout_established": 86400, "nf_conntrack_tcp_timeout_close_wait": 3600}),
			changed: []string{"nf_conntrack_max=1048576", "hashsize=262144", "nf_conntrack_tcp_timeout_established=86400", "nf_conntrack_tcp_timeout_close_wait=3600"}},
		{name: "a larger limit and hash table stay", settings: defaults, cpus: 2,
			kernel:  with(map[string]int{"nf_conntrack_max": 262144, "hashsize": 262144}),
			want:    with(map[string]int{"nf_conntrack_max": 262144, "hashsize": 262144, "nf_conntrack_tcp_timeout_established": 86400, "nf_conntrack_tcp_timeout_close_wait": 3600}),
			changed: []string{"nf_conntrack_tcp_timeout_established=86400", "nf_conntrack_tcp_timeout_close_wait=3600"}},
		{name: "a limit already right and a small hash table: only the hash table grows", settings: defaults, cpus: 2,
			kernel:  with(map[string]int{"nf_conntrack_max": 131072, "nf_conntrack_tcp_timeout_established": 86400, "nf_conntrack_tcp_timeout_close_wait": 3600}),
			want:    with(map[string]int{"nf_conntrack_max": 131072, "hashsize": 32768, "nf_conntrack_tcp_timeout_established": 86400, "nf_conntrack_tcp_timeout_close_wait": 3600}),
			changed: []string{"hashsize=32768"}},
		{name: "all set already (an --init-only before): nothing written", settings: defaults, cpus: 2,
			kernel: with(map[string]int{"nf_conntrack_max": 131072, "hashsize": 32768, "nf_conntrack_tcp_timeout_established": 86400, "nf_conntrack_tcp_timeout_close_wait": 3600}),
			want:   with(map[string]int{"nf_conntrack_max": 131072, "hashsize": 32768, "nf_conntrack_tcp_timeout_established": 86400, "nf_conntrack_tcp_timeout_close_wait": 3600})},
		{name: "a Min above the CPUs' share", settings: ConntrackSettings{MaxPerCore: 1000, Min: 200000}, cpus: 4, kernel: fresh,
			want: with(map[string]int{"nf_conntrack_max": 200000, "hashsize": 50000}), changed: []string{"nf_conntrack_max=200000", "hashsize=50000"}},
		{name: "MaxPerCore 0 leaves the limit and the hash table, even without them", cpus: 2,
			settings: ConntrackSettings{TCPEstablishedTimeout: 90 * time.Minute}, kernel: map[string]int{"nf_conntrack_tcp_timeout_established": 432000},
			want: map[string]int{"nf_conntrack_tcp_timeout_established": 5400}, changed: []string{"nf_conntrack_tcp_timeout_established=5400"}},
		{name: "UDP timeouts and liberal TCP, when asked; timeouts in whole seconds", cpus: 2,
			settings: ConntrackSettings{UDPTimeout: 1500 * time.Millisecond, UDPStreamTimeout: 3 * time.Minute, TCPBeLiberal: true}, kernel: fresh,
			want:    with(map[string]int{"nf_conntrack_udp_timeout": 1, "nf_conntrack_udp_timeout_stream": 180, "nf_conntrack_tcp_be_liberal": 1}),
			changed: []string{"nf_conntrack_udp_timeout=1", "nf_conntrack_udp_timeout_stream=180", "nf_conntrack_tcp_be_liberal=1"}},
		{name: "nothing asked: nothing written", cpus: 2, kernel: fresh, want: fresh},
		{name: "no nf_conntrack: a clear error", settings: defaults, cpus: 2,
			err: "write 131072 to /proc/sys/net/netfilter/nf_conntrack_max: open "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			path := func(name string) string {
				if name == "hashsize" {
					return filepath.Join(root, hashsizeFile)
				}
				return filepath.Join(root, sysctlDir, name)
			}
			for name, v := range tt.kernel {
				if err := os.MkdirAll(filepath.Dir(path(name)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path(name), []byte(strconv.Itoa(v)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			changed, err := tt.settings.Apply(root, tt.cpus)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "is the nf_conntrack module loaded?") {
					t.Fatalf("error %v; want one containing %q and the hint", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(changed, tt.changed) {
				t.Errorf("changed %q, want %q", changed, tt.changed)
			}
			for name, want := range tt.want {
				b, err := os.ReadFile(path(name))
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := strconv.Atoi(strings.TrimSpace(string(b))); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
		})
	}
}

// In the test's private network namespace, the real kernel: the TCP timeouts are the
// namespace's own (nf_conntrack_max is the host's, read-only here, and stays untouched).
func TestConntrackTimeoutsInTheKernel(t *testing.T) {
	requireDatapath(t)
	settings := DefaultConntrackSettings()
	settings.MaxPerCore = 0
	if _, err := settings.Apply("/", NodeCPUs()); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"nf_conntrack_tcp_timeout_established": "86400", "nf_conntrack_tcp_timeout_close_wait": "3600"} {
		b, err := os.ReadFile("/proc/sys/net/netfilter/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	if changed, err := settings.Apply("/", NodeCPUs()); err != nil || len(changed) != 0 {
		t.Errorf("applied again: changed %q, error %v; want nothing written", changed, err)
	}
}
