package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// tableResource is one resource `kubectl get` would list: its API path and the prefix kubectl
// puts before names when it lists several kinds at once.
type tableResource struct {
	path   string
	prefix string
}

// printGetTables prints what `kubectl get clusterippools,svc,endpoints,endpointslices` prints.
// It asks the API server for Tables, as kubectl does, so the columns (including the CRD's
// printer columns) are the server's; kubectl need not be installed.
func printGetTables(ctx context.Context, client rest.Interface, w io.Writer) error {
	resources := []tableResource{
		{"/apis/ipam.clusterip.dev/v1alpha1/clusterippools", "clusterippool.ipam.clusterip.dev/"},
		{"/api/v1/namespaces/default/services", "service/"},
		{"/api/v1/namespaces/default/endpoints", "endpoints/"},
		{"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", "endpointslice.discovery.k8s.io/"},
	}
	for i, r := range resources {
		raw, err := client.Get().AbsPath(r.path).
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
			Do(ctx).Raw()
		if err != nil {
			return fmt.Errorf("list %s: %w", r.path, err)
		}
		var table metav1.Table
		if err := json.Unmarshal(raw, &table); err != nil {
			return fmt.Errorf("decode the table of %s: %w", r.path, err)
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		writeTable(w, &table, r.prefix)
	}
	return nil
}

// writeTable lays a Table out as kubectl does: upper-case headers, no wide columns, names
// prefixed by their kind.
func writeTable(w io.Writer, table *metav1.Table, namePrefix string) {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	var shown []int
	var header []string
	for i, c := range table.ColumnDefinitions {
		if c.Priority == 0 {
			shown = append(shown, i)
			header = append(header, strings.ToUpper(strings.ReplaceAll(c.Name, " ", "-")))
		}
	}
	fmt.Fprintln(tw, "    "+strings.Join(header, "\t"))
	for _, row := range table.Rows {
		var cells []string
		for n, i := range shown {
			cell := "<none>"
			if i < len(row.Cells) && row.Cells[i] != nil {
				cell = fmt.Sprint(row.Cells[i])
			}
			if n == 0 {
				cell = namePrefix + cell
			}
			cells = append(cells, cell)
		}
		fmt.Fprintln(tw, "    "+strings.Join(cells, "\t"))
	}
	tw.Flush()
}
