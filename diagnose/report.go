package diagnose

import "fmt"

// Severity grades a finding.
type Severity string

// The severities, from harmless to breaking.
const (
	// OK is a check that passed; it is evidence, not noise.
	OK Severity = "OK"
	// Warning is something unusual that may still work (traffic may flow).
	Warning Severity = "WARNING"
	// Problem is something that breaks or degrades traffic to the Service; it comes with a fix.
	Problem Severity = "PROBLEM"
)

// Checks a finding belongs to, in the order a user walks the checklist.
const (
	CheckService        = "service"
	CheckPool           = "pool"
	CheckSelector       = "selector"
	CheckReadiness      = "readiness"
	CheckPorts          = "ports"
	CheckEndpoints      = "endpoints"
	CheckEndpointSlices = "endpointslices"
	CheckDatapath       = "datapath"
)

// Finding is one line of the verdict: what was checked, what was found, and for a problem the one
// thing to do about it.
type Finding struct {
	Severity Severity `json:"severity"`
	Check    string   `json:"check"`
	Message  string   `json:"message"`
	Fix      string   `json:"fix,omitempty"`
}

// Verdict sums up a Report.
type Verdict string

// The verdicts.
const (
	VerdictHealthy  Verdict = "healthy"
	VerdictWarnings Verdict = "warnings"
	VerdictProblems Verdict = "problems"
)

// Report is the outcome of Diagnose: the Service as pods see it, and the findings.
type Report struct {
	Service  *ServiceSummary `json:"service,omitempty"`
	Verdict  Verdict         `json:"verdict"`
	Findings []Finding       `json:"findings"`
}

// Exit statuses of the diagnose command.
const (
	ExitHealthy = 0
	ExitProblem = 1
	ExitError   = 2
)

// ExitCode is the command's exit status for the report: 1 when a problem was found, 0 otherwise
// (warnings alone do not fail scripts).
func (r *Report) ExitCode() int {
	if r.Verdict == VerdictProblems {
		return ExitProblem
	}
	return ExitHealthy
}

// verdictOf is the worst severity among the findings.
func verdictOf(findings []Finding) Verdict {
	verdict := VerdictHealthy
	for _, f := range findings {
		switch f.Severity {
		case Problem:
			return VerdictProblems
		case Warning:
			verdict = VerdictWarnings
		}
	}
	return verdict
}

// findings collects findings of one check.
type findings []Finding

func (fs *findings) ok(check, format string, args ...any) {
	*fs = append(*fs, Finding{Severity: OK, Check: check, Message: fmt.Sprintf(format, args...)})
}

func (fs *findings) warn(check, message, fix string) {
	*fs = append(*fs, Finding{Severity: Warning, Check: check, Message: message, Fix: fix})
}

func (fs *findings) problem(check, message, fix string) {
	*fs = append(*fs, Finding{Severity: Problem, Check: check, Message: message, Fix: fix})
}
