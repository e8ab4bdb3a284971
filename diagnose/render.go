package diagnose

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// Write writes the report in the output format: text, json or yaml.
func Write(w io.Writer, r *Report, output string) error {
	switch output {
	case "json":
		return WriteJSON(w, r)
	case "yaml":
		return WriteYAML(w, r)
	}
	return WriteText(w, r)
}

// WriteYAML writes the report as YAML with the field names of the JSON output.
func WriteYAML(w io.Writer, r *Report) error {
	data, err := yaml.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// WriteJSON writes the report as indented JSON, for scripts.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people: the Service as pods see it, then the findings grouped
// as OK, WARNING and PROBLEM lines (each warning and problem with its fix), then the verdict.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	if s := r.Service; s != nil {
		writeSummary(&b, s)
		b.WriteString("\n")
	}
	for _, severity := range []Severity{OK, Warning, Problem} {
		for _, f := range r.Findings {
			if f.Severity != severity {
				continue
			}
			fmt.Fprintf(&b, "%-8s %-14s %s\n", f.Severity, f.Check, f.Message)
			if f.Fix != "" {
				fmt.Fprintf(&b, "%-8s %-14s fix: %s\n", "", "", f.Fix)
			}
		}
	}
	fmt.Fprintf(&b, "\nverdict: %s (exit status %d)\n", r.Verdict, r.ExitCode())
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSummary(b *strings.Builder, s *ServiceSummary) {
	fmt.Fprintf(b, "Service %s/%s (%s)\n", s.Namespace, s.Name, s.Type)
	if s.ExternalName != "" {
		fmt.Fprintf(b, "  externalName:     %s\n", s.ExternalName)
	}
	for _, ip := range s.ClusterIPs {
		pool := ip.Pool
		if pool == "" {
			pool = "none"
		}
		fmt.Fprintf(b, "  clusterIP:        %s (pool %s)\n", ip.IP, pool)
	}
	if len(s.Selector) > 0 {
		fmt.Fprintf(b, "  selector:         %s\n", endpointrules.SelectorString(s.Selector))
	} else if s.Type != "ExternalName" {
		fmt.Fprintf(b, "  selector:         none (endpoints are written by hand)\n")
	}
	for _, p := range s.Ports {
		name := p.Name
		if name == "" {
			name = "(unnamed)"
		}
		fmt.Fprintf(b, "  port:             %s %d/%s -> %s\n", name, p.Port, p.Protocol, p.TargetPort)
	}
	if s.SessionAffinity != "" {
		fmt.Fprintf(b, "  sessionAffinity:  %s\n", s.SessionAffinity)
	}
	fmt.Fprintf(b, "  DNS:              %s\n", strings.Join(s.DNSNames, ", "))
	for _, srv := range s.SRVNames {
		fmt.Fprintf(b, "  DNS SRV:          %s\n", srv)
	}
	if len(s.EnvVars) > 0 {
		b.WriteString("  env (pods created after the Service, same namespace):\n")
		var dockerLinks []string
		for _, v := range s.EnvVars {
			if strings.HasPrefix(v.Name, envVarName(s.Name)+"_SERVICE_") {
				fmt.Fprintf(b, "    %s=%s\n", v.Name, v.Value)
			} else {
				dockerLinks = append(dockerLinks, v.Name)
			}
		}
		fmt.Fprintf(b, "    and Docker-link variables %s\n", strings.Join(dockerLinks, " "))
	}
}
