// Command sluice runs Sluice: `sluice dev` for one machine, `sluice
// coordinator` and `sluice worker` for a cluster, and client commands to
// submit and inspect jobs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = []command{
	{"dev", "run etcd, a Kafka broker, a coordinator and workers in one process", runDev},
	{"coordinator", "run a coordinator (leads or stands by, via etcd election)", runCoordinator},
	{"worker", "run a worker that connects to the coordinators", runWorker},
	{"submit", "submit a job file (-f job.json|job.yaml)", runSubmit},
	{"jobs", "list jobs", runJobs},
	{"job", "show one job", runJob},
	{"stop", "stop a job (its offsets are kept)", runStop},
	{"resume", "run a stopped or failed job again from its committed offsets", runResume},
	{"reset", "move a stopped job's offsets: --to earliest|latest|RFC3339 time, or --offset topic/partition=offset", runReset},
	{"delete", "stop and delete a job with its offsets, batches and results", runDelete},
	{"txn", "list or abort a job's Kafka sink transactions: txn list|abort --job JOB", runTxn},
	{"batches", "list a job's batches with their offset ranges and timings", runBatches},
	{"results", "show a job's collect results", runResults},
	{"offsets", "show a job's committed offsets and lag", runOffsets},
	{"watch", "print a job's batches as they commit", runWatch},
}

func usage() {
	fmt.Fprintf(os.Stderr, "Usage: sluice COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'sluice COMMAND -h' for a command's flags.\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	name := os.Args[1]
	var cmd *command
	for i := range commands {
		if commands[i].name == name {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(os.Stderr, "sluice: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "sluice %s: %v\n", name, err)
		os.Exit(1)
	}
}

// splitList splits a comma-separated flag value.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
