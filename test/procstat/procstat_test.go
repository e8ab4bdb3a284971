package procstat

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tail := " S 42 100 100 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 8 0 123 4096 100"
	for _, tc := range []struct {
		name    string
		line    string
		want    Stat
		wantErr string
	}{
		{name: "utime and stime add up, in clock ticks", line: "1234 (kube-apiserver)" + tail,
			want: Stat{Comm: "kube-apiserver", PPID: 42, CPU: 3250 * time.Millisecond}},
		{name: "a command may hold spaces and parentheses", line: "7 (a (b) c)" + tail,
			want: Stat{Comm: "a (b) c", PPID: 42, CPU: 3250 * time.Millisecond}},
		{name: "no command", line: "7 S 1 2", wantErr: "not a /proc/<pid>/stat line"},
		{name: "cut short", line: "7 (etcd) S 1 2 3", wantErr: "fields after the command"},
		{name: "a time that is not a number", line: "7 (etcd)" + strings.Replace(tail, " 250 ", " x ", 1), wantErr: "bad ppid, utime or stime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.line)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tc.line, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
			}
		})
	}
}

func TestReadThisProcess(t *testing.T) {
	got, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if got.PPID != os.Getppid() {
		t.Errorf("Read(this process).PPID = %d, want %d", got.PPID, os.Getppid())
	}
	if _, err := Read(-1); err == nil {
		t.Errorf("Read(-1) gave no error")
	}
}
