// Command sluice-bench is `make bench`: it runs Sluice as separate processes
// (`sluice dev --infra-only`, `sluice coordinator`, two `sluice worker
// --slots 4`) and prints one table of figures measured side by side in one
// run:
//
//	(a) the click job with default settings on backlogs of two sizes against
//	    8 bare librdkafka consumers on the same broker, and the workers' peak
//	    RSS;
//	(b) the highest sustained input rate the default job keeps up with;
//	(c) the coordination overhead per batch at 64 and 1,024 partitions;
//	(d) the same at 10,000 partitions, in one topic and in 100 topics of
//	    100 partitions (one job), time-boxed;
//	(e) the default job on a 1,024-partition backlog against bare
//	    librdkafka consumers sharing its partitions, and against the same
//	    job on 8 partitions, with each job's CPU time; on CPUs shared with
//	    the broker, and with the broker on a CPU of its own (the target).
//
// SLUICE_BENCH_QUICK=1 (or -quick) runs a short version for development;
// SLUICE_BENCH_RECORDS=200000,1000000 (or -records) sets the backlogs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/bench"
)

type config struct {
	sluice  string
	records []int64
	quick   bool
	dir     string
	keep    bool
	parts   string
	// workerArgs are added to every `sluice worker` command line.
	workerArgs []string
	// coordArgs are added to the `sluice coordinator` command line.
	coordArgs []string
	// (b)
	window    time.Duration
	rateStart int
	rateLimit int
	bisect    int
	// (c)
	overheadBatches int
	overheadBudget  time.Duration
	overheadParts   []int32
	// (d)
	largeLayouts []bench.Layout
	largeBatches int
	largeBudget  time.Duration
	// (e)
	wideRecords    int64
	widePartitions int32
	wideConsumers  int
	wideRounds     int
	wideBroker     string
	wideInTurn     bool
	wideCPUs       string
}

// wideSplits are the CPU layouts part (e) is measured on, in order: false
// for CPUs shared by everything, true for the broker on a CPU of its own.
func (c config) wideSplits() []bool {
	switch c.wideCPUs {
	case "shared":
		return []bool{false}
	case "split":
		return []bool{true}
	}
	return []bool{false, true}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("sluice-bench", flag.ContinueOnError)
	cfg := config{}
	quickDefault, _ := strconv.ParseBool(os.Getenv("SLUICE_BENCH_QUICK"))
	fs.StringVar(&cfg.sluice, "sluice", "bin/sluice", "the sluice binary")
	fs.BoolVar(&cfg.quick, "quick", quickDefault, "short run for development: backlogs of 200k and 1M, short windows (env SLUICE_BENCH_QUICK)")
	records := fs.String("records", os.Getenv("SLUICE_BENCH_RECORDS"), "comma-separated backlog sizes, smallest first (env SLUICE_BENCH_RECORDS; default 1000000,10000000, quick 200000,1000000)")
	fs.StringVar(&cfg.dir, "dir", "", "work directory for the processes' data and logs (default a new temporary one)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the work directory (logs) at the end")
	fs.StringVar(&cfg.parts, "parts", "abcde", "which parts to run: a (backlog), b (sustained rate), c (overhead), d (overhead at 10,000 partitions), e (backlog on 1,024 partitions)")
	coordArgs := fs.String("coordinator-args", "", "extra flags of the sluice coordinator, space-separated (e.g. \"--log-level debug\": per-batch plan, task and commit times in its log; -keep keeps it)")
	workerArgs := fs.String("worker-args", "", "extra flags of every sluice worker, space-separated (e.g. \"--consumer-cache 600\"); the default is none: the defaults")
	fs.DurationVar(&cfg.window, "window", 0, "(b) how long the producer runs at each rate (default 20s, quick 10s)")
	fs.IntVar(&cfg.rateStart, "rate-start", 50_000, "(b) first input rate tried, records/s")
	fs.IntVar(&cfg.rateLimit, "rate-limit", 3_200_000, "(b) highest input rate tried, records/s")
	fs.IntVar(&cfg.bisect, "bisect", 2, "(b) bisection steps after the doubling")
	fs.IntVar(&cfg.overheadBatches, "overhead-batches", 0, "(c) batches measured per partition count (default 200, quick 100)")
	fs.DurationVar(&cfg.overheadBudget, "overhead-budget", 0, "(c) time after which a partition count is measured over the batches committed so far (default 90s, quick 45s)")
	overheadParts := fs.String("overhead-partitions", "64,1024", "(c) partition counts")
	largeLayouts := fs.String("large-layouts", "1x10000,100x100", "(d) source layouts, TOPICSxPARTITIONS (partitions of each topic), comma-separated")
	fs.IntVar(&cfg.largeBatches, "large-batches", 0, "(d) batches measured per layout (default 100, quick 50)")
	fs.DurationVar(&cfg.largeBudget, "large-budget", 0, "(d) time after which a layout is measured over the batches committed so far; at twice this, over whatever committed (default 60s, quick 30s)")
	fs.Int64Var(&cfg.wideRecords, "wide-records", 0, "(e) backlog size (default 10000000, as (a): a few batches of a smaller one measure backpressure's ramp, not throughput; quick 500000)")
	wideParts := fs.Int("wide-partitions", 1024, "(e) partitions of the wide backlog")
	fs.IntVar(&cfg.wideConsumers, "wide-consumers", 8, "(e) bare consumers sharing the wide backlog's partitions")
	fs.BoolVar(&cfg.wideInTurn, "wide-in-turn", false, "(e) write each backlog one partition after another, in record batches of up to 1 MB on both backlogs (default: round-robin, 4-92 KB batches on 1,024 partitions)")
	fs.StringVar(&cfg.wideBroker, "wide-broker", "dev", "(e) the broker: dev (sluice dev's embedded broker, which reads each record batch from its file) or memory (a kfake process keeping its topics in memory)")
	fs.StringVar(&cfg.wideCPUs, "wide-cpus", "", "(e) shared (the broker, etcd, the coordinator, the workers and the bare consumers on every CPU), split (the broker and etcd on CPU 0, the rest on the others, as on separate hosts; the target of (e) is measured there) or both, in that order (default both, quick shared)")
	fs.IntVar(&cfg.wideRounds, "wide-rounds", 0, "(e) rounds, each running the job on both layouts back to back, alternating which runs first; the median of the rounds' ratios is the figure (default 5, quick 1)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	var err error
	cfg.workerArgs = strings.Fields(*workerArgs)
	cfg.coordArgs = strings.Fields(*coordArgs)
	if *records == "" {
		*records = "1000000,10000000"
		if cfg.quick {
			*records = "200000,1000000"
		}
	}
	for _, f := range strings.Split(*records, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("-records %q: want positive record counts separated by commas", *records)
		}
		cfg.records = append(cfg.records, n)
	}
	for _, f := range strings.Split(*overheadParts, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("-overhead-partitions %q: want positive partition counts separated by commas", *overheadParts)
		}
		cfg.overheadParts = append(cfg.overheadParts, int32(n))
	}
	if cfg.largeLayouts, err = bench.ParseLayouts(*largeLayouts); err != nil {
		return cfg, fmt.Errorf("-large-layouts: %w", err)
	}
	if cfg.wideBroker != "dev" && cfg.wideBroker != "memory" {
		return cfg, fmt.Errorf("-wide-broker %q: want dev or memory", cfg.wideBroker)
	}
	switch cfg.wideCPUs {
	case "":
		cfg.wideCPUs = "both"
		if cfg.quick {
			cfg.wideCPUs = "shared"
		}
	case "shared", "split", "both":
	default:
		return cfg, fmt.Errorf("-wide-cpus %q: want shared, split or both", cfg.wideCPUs)
	}
	if cfg.wideRounds < 0 || cfg.wideRounds > 20 {
		return cfg, fmt.Errorf("-wide-rounds %d: want 1 to 20 rounds", cfg.wideRounds)
	}
	if cfg.wideRounds == 0 {
		cfg.wideRounds = 5
		if cfg.quick {
			cfg.wideRounds = 1
		}
	}
	if *wideParts < 1 || *wideParts > 100_000 || cfg.wideConsumers < 1 {
		return cfg, fmt.Errorf("-wide-partitions %d, -wide-consumers %d: want 1 to 100000 partitions and at least 1 consumer", *wideParts, cfg.wideConsumers)
	}
	cfg.widePartitions = int32(*wideParts)
	if cfg.wideRecords < 0 {
		return cfg, fmt.Errorf("-wide-records %d: want a positive record count", cfg.wideRecords)
	}
	if cfg.wideRecords == 0 {
		cfg.wideRecords = 10_000_000
		if cfg.quick {
			cfg.wideRecords = 500_000
		}
	}
	if cfg.largeBatches == 0 {
		cfg.largeBatches = 100
		if cfg.quick {
			cfg.largeBatches = 50
		}
	}
	if cfg.largeBudget == 0 {
		cfg.largeBudget = time.Minute
		if cfg.quick {
			cfg.largeBudget = 30 * time.Second
		}
	}
	if cfg.window == 0 {
		cfg.window = 20 * time.Second
		if cfg.quick {
			cfg.window = 10 * time.Second
		}
	}
	if cfg.overheadBatches == 0 {
		cfg.overheadBatches = 200
		if cfg.quick {
			cfg.overheadBatches = 100
		}
	}
	if cfg.overheadBudget == 0 {
		cfg.overheadBudget = 90 * time.Second
		if cfg.quick {
			cfg.overheadBudget = 45 * time.Second
		}
	}
	if cfg.rateStart < 1 || cfg.rateLimit < cfg.rateStart {
		return cfg, fmt.Errorf("-rate-start %d, -rate-limit %d: want 1 <= start <= limit", cfg.rateStart, cfg.rateLimit)
	}
	return cfg, nil
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == memoryBrokerArg {
		if err := runMemoryBroker(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "sluice-bench:", err)
			os.Exit(1)
		}
		return
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	t := &table{}
	err = run(ctx, cfg, t)
	mode := "full"
	if cfg.quick {
		mode = "quick"
	}
	fmt.Printf("\n## sluice-bench (%s mode), %s\n\n", mode, start.Format(time.DateTime))
	t.print(os.Stdout)
	split := ""
	if strings.Contains(cfg.parts, "e") && slices.Contains(cfg.wideSplits(), true) {
		split = " (but the rows of (e) that say so)"
	}
	fmt.Printf("\nOne run, %d cores, took %s. Everything shares the machine%s: broker, etcd, coordinator, workers, producers and bare consumers.\n",
		numCPU(), time.Since(start).Round(time.Second), split)
	if len(t.notes) > 0 {
		fmt.Println()
		for _, n := range t.notes {
			fmt.Println("- " + n)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice-bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
