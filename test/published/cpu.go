package published

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/kube-clusterip/kube-clusterip/test/procstat"
)

// CPUMeter reads how much CPU time (user and system, in seconds) a process has used so far.
// The Workload reads its meters when the controllers start and once they have converged: on two
// CPUs a converge is bound by CPU, so where that time went is why one run is slower than another.
type CPUMeter func() (float64, error)

// ProcessCPU meters the process with pid.
func ProcessCPU(pid int) CPUMeter {
	return func() (float64, error) {
		stat, err := procstat.Read(pid)
		if err != nil {
			return 0, err
		}
		return stat.CPU.Seconds(), nil
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

// ConvergeMeters is the Workload's usual set of CPU meters: the envtest control plane this
// process started ("apiserver", "etcd") and "controller", the processes of the controller under
// test with the Workload's observer (they share the benchmark's process; the observer's part is
// the same for every controller).
func ConvergeMeters(controller CPUMeter) map[string]CPUMeter {
	return map[string]CPUMeter{"apiserver": ChildCPU("kube-apiserver"), "etcd": ChildCPU("etcd"), "controller": controller}
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
		stat, err := procstat.Read(pid)
		if err == nil && stat.PPID == self && stat.Comm == comm {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child process %q of this process (%d)", comm, self)
}
