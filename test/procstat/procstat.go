// Package procstat reads a Linux process's /proc/<pid>/stat: its command, its parent and the
// CPU time it has used. Benchmarks meter processes with it; tests find their ancestors.
package procstat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Stat is what the tests and benchmarks need of /proc/<pid>/stat.
type Stat struct {
	// Comm is the command, as the kernel keeps it (at most 15 bytes).
	Comm string
	PPID int
	// CPU is the user and system time used so far.
	CPU time.Duration
}

// clockTicksPerSecond is the unit of the file's times (USER_HZ, 100 on Linux).
const clockTicksPerSecond = 100

// Read reads the Stat of the process with pid.
func Read(pid int) (Stat, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, err
	}
	return Parse(string(data))
}

// Parse reads a /proc/<pid>/stat line: "pid (comm) state ppid ... utime stime ...", where comm
// may hold spaces and parentheses.
func Parse(line string) (Stat, error) {
	open, closing := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || closing < open {
		return Stat{}, fmt.Errorf("not a /proc/<pid>/stat line: %q", line)
	}
	// After the command: state (field 3), ppid (4), ..., utime (14), stime (15).
	fields := strings.Fields(line[closing+1:])
	if len(fields) < 13 {
		return Stat{}, fmt.Errorf("/proc/<pid>/stat line with %d fields after the command: %q", len(fields), line)
	}
	ppid, err1 := strconv.Atoi(fields[1])
	utime, err2 := strconv.ParseUint(fields[11], 10, 64)
	stime, err3 := strconv.ParseUint(fields[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return Stat{}, fmt.Errorf("/proc/<pid>/stat line with a bad ppid, utime or stime: %q", line)
	}
	ticks := time.Duration(utime + stime)
	return Stat{Comm: line[open+1 : closing], PPID: ppid, CPU: ticks * time.Second / clockTicksPerSecond}, nil
}
