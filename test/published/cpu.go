package published

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CPUMeter reads how much CPU time (user and system, in seconds) a process has used so far.
// The Workload reads its meters when the controllers start and once they have converged: on two
// CPUs a converge is bound by CPU, so where that time went is why one run is slower than another.
type CPUMeter func() (float64, error)

// clockTicksPerSecond is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on Linux).
const clockTicksPerSecond = 100

// ProcessCPU meters the process with pid.
func ProcessCPU(pid int) CPUMeter {
	return func() (float64, error) {
		stat, err := readProcStat(pid)
		if err != nil {
			return 0, err
		}
		return stat.cpuSeconds, nil
	}
}

// SelfCPU meters this process.
func SelfCPU() CPUMeter { return ProcessCPU(os.Getpid()) }

// ChildCPU meters the child of this process whose command is comm (kube-apiserver, etcd: the
// control plane envtest started), found on the first read.
func ChildCPU(comm string) CPUMeter {
	pid := 0
	return func() (float64, error) {
		if pid == 0 {
			found, err := childByComm(comm)
			if err != nil {
				return 0, err
			}
			pid = found
		}
		return ProcessCPU(pid)()
	}
}

// SumCPU meters several processes as one.
func SumCPU(meters ...CPUMeter) CPUMeter {
	return func() (float64, error) {
		total := 0.0
		for _, m := range meters {
			s, err := m()
			if err != nil {
				return 0, err
			}
			total += s
		}
		return total, nil
	}
}

type procStat struct {
	comm       string
	ppid       int
	cpuSeconds float64
}

func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(string(data))
}

// parseProcStat reads the command, the parent and the CPU time from a /proc/<pid>/stat line:
// "pid (comm) state ppid ... utime stime ...", where comm may hold spaces and parentheses.
func parseProcStat(line string) (procStat, error) {
	open, closing := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("not a /proc/<pid>/stat line: %q", line)
	}
	// After the command: state (field 3), ppid (4), ..., utime (14), stime (15).
	fields := strings.Fields(line[closing+1:])
	if len(fields) < 13 {
		return procStat{}, fmt.Errorf("/proc/<pid>/stat line with %d fields after the command: %q", len(fields), line)
	}
	ppid, err1 := strconv.Atoi(fields[1])
	utime, err2 := strconv.ParseUint(fields[11], 10, 64)
	stime, err3 := strconv.ParseUint(fields[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, fmt.Errorf("/proc/<pid>/stat line with a bad ppid, utime or stime: %q", line)
	}
	return procStat{comm: line[open+1 : closing], ppid: ppid, cpuSeconds: float64(utime+stime) / clockTicksPerSecond}, nil
}

func childByComm(comm string) (int, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		stat, err := readProcStat(pid)
		if err == nil && stat.ppid == self && stat.comm == comm {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child process %q of this process (%d)", comm, self)
}

// ConvergeMeters is the Workload's usual set of CPU meters: the envtest control plane this
// process started ("apiserver", "etcd") and "controller", the processes of the controller under
// test with the Workload's observer (they share the benchmark's process; the observer's part is
// the same for every controller).
func ConvergeMeters(controller CPUMeter) map[string]CPUMeter {
	return map[string]CPUMeter{"apiserver": ChildCPU("kube-apiserver"), "etcd": ChildCPU("etcd"), "controller": controller}
}
