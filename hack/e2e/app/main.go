// Command app is the workload of make test-e2e's pods, one static binary for every role:
//
//	app serve            answer HTTP on $PORTS (default 8080) with the pod's name; /ready fails
//	                     once /tmp/unready exists (a readiness probe's endpoint)
//	app unready          create /tmp/unready (kubectl exec ... -- /app unready)
//	app get URL N        N requests, each on a new connection; print each answer or error
//	app loop URL DUR     requests on new connections for DUR; print every failure, then a summary
//	app sleep            wait forever (a client pod to exec into)
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kube-clusterip/kube-clusterip/test/podhttp"
)

const unreadyFile = "/tmp/unready"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: app serve|unready|get URL N|loop URL DURATION|sleep")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve()
	case "unready":
		err = os.WriteFile(unreadyFile, nil, 0o644)
	case "get":
		err = get(os.Args[2:])
	case "loop":
		err = loop(os.Args[2:])
	case "sleep":
		for {
			time.Sleep(time.Hour)
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

func serve() error {
	name, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := os.Stat(unreadyFile); err == nil {
			http.Error(w, "unready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/", podhttp.Answer(name))
	ports := os.Getenv("PORTS")
	if ports == "" {
		ports = "8080"
	}
	errs := make(chan error)
	for _, port := range strings.Split(ports, ",") {
		go func() { errs <- http.ListenAndServe(":"+port, mux) }()
	}
	return <-errs
}

// requestTimeout bounds each request: a longer wait counts as a failure.
const requestTimeout = 2 * time.Second

func fetch(ctx context.Context, url string) (string, error) {
	return podhttp.Get(ctx, url, nil, requestTimeout)
}

func get(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: app get URL N")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	for range n {
		answer, err := fetch(context.Background(), args[0])
		if err != nil {
			answer = "error: " + err.Error()
		}
		fmt.Println(answer)
	}
	return nil
}

func loop(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: app loop URL DURATION")
	}
	d, err := time.ParseDuration(args[1])
	if err != nil {
		return err
	}
	ok, failed := 0, 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		if _, err := fetch(context.Background(), args[0]); err != nil {
			failed++
			fmt.Printf("error at %s: %v\n", time.Now().Format(time.TimeOnly), err)
			continue
		}
		ok++
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("ok=%d failed=%d\n", ok, failed)
	return nil
}
