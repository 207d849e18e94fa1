package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/bench"
)

// The cluster of the issue: two workers with four slots each.
const (
	workers = 2
	slots   = 4
	// backlogPartitions is the partition count of the backlog topics.
	backlogPartitions = 8
	// rssTarget is the workers' peak RSS target.
	rssTarget = 200 << 20
)

func run(ctx context.Context, cfg config, t *table) error {
	bin, err := filepath.Abs(cfg.sluice)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("the sluice binary: %w (build it with make build, or pass -sluice)", err)
	}
	// A new directory every run, even under -dir: the broker's topics must
	// be new.
	if cfg.dir != "" {
		if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp(cfg.dir, "sluice-bench-")
	if err != nil {
		return err
	}
	if cfg.keep {
		logf("work directory (kept): %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	logf("starting sluice dev --infra-only and sluice coordinator")
	cl, err := startCluster(ctx, dir, bin, cfg.coordArgs)
	if err != nil {
		return err
	}
	defer cl.close()
	if len(cfg.coordArgs) > 0 {
		t.note("the coordinator ran with %s", strings.Join(cfg.coordArgs, " "))
	}
	if len(cfg.workerArgs) > 0 {
		cl.workerArgs = cfg.workerArgs
		t.note("every worker ran with %s", strings.Join(cfg.workerArgs, " "))
	}

	// (e) runs before (d): the 10,000 partitions of (d) would otherwise
	// stay on the broker while the throughput is measured.
	var errs []error
	var took []string
	for _, part := range []struct {
		letter string
		run    func(context.Context, config, *cluster, *table) error
	}{{"a", runBacklogs}, {"b", runSustain}, {"c", runOverhead}, {"e", runWide}, {"d", runLarge}} {
		if !strings.Contains(cfg.parts, part.letter) || ctx.Err() != nil {
			continue
		}
		start := time.Now()
		if err := part.run(ctx, cfg, cl, t); err != nil {
			errs = append(errs, err)
		}
		took = append(took, fmt.Sprintf("(%s) %s", part.letter, time.Since(start).Round(time.Second)))
		logf("part (%s) took %s", part.letter, time.Since(start).Round(time.Second))
	}
	if len(took) > 0 {
		t.note("time per part, setup included: %s", strings.Join(took, ", "))
	}
	if rss, err := bench.PeakRSS(cl.coord.pid()); err == nil {
		t.add("coordinator peak RSS (VmHWM), whole run", mib(rss), "", "")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d part(s) failed; the first: %w", len(errs), errs[0])
	}
	return ctx.Err()
}

// backlogResult is part (a) for one backlog size.
type backlogResult struct {
	n        int64
	produced bench.Produced
	job      bench.JobRun
	bare     []time.Duration
	franz    []time.Duration // bare franz-go consumers
	rss      []int64
	left     int
	verify   error
}

// runBacklogs is part (a): for each backlog size, new workers, a new topic,
// the bare consumers, the job, the bare consumers again.
func runBacklogs(ctx context.Context, cfg config, cl *cluster, t *table) error {
	var results []backlogResult
	var firstErr error
	for _, n := range cfg.records {
		r, err := runBacklog(ctx, cl, n)
		if err != nil {
			t.add(fmt.Sprintf("(a) %s backlog", count(n)), "ERROR: "+oneLine(err), "", "no")
			logf("(a) %s: %v", count(n), err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		results = append(results, r)
		addBacklogRows(t, r)
	}
	if len(results) >= 2 && len(cfg.records) >= 2 {
		lo, hi := results[0], results[len(results)-1]
		if len(lo.rss) > 0 && len(hi.rss) > 0 {
			ratio := float64(maxOf(hi.rss)) / float64(maxOf(lo.rss))
			t.add(fmt.Sprintf("(a) worker peak RSS, %s / %s backlog (largest worker)", count(hi.n), count(lo.n)),
				fmt.Sprintf("%.2f", ratio), "within 10% (0.90-1.10)", yesNo(ratio >= 0.9 && ratio <= 1.1))
		}
	}
	return firstErr
}

func runBacklog(ctx context.Context, cl *cluster, n int64) (backlogResult, error) {
	r := backlogResult{n: n}
	name := "backlog-" + strings.ToLower(count(n))
	if err := cl.startWorkers(ctx, strings.ToLower(count(n)), workers, slots); err != nil {
		return r, err
	}
	logf("(a) producing %s records to %s", count(n), name)
	var err error
	r.produced, err = bench.ProduceEvents(ctx, cl.kafka, name, backlogPartitions, n, uint64(n), false)
	if err != nil {
		return r, err
	}
	logf("(a) produced %s records (%.1f MB) in %s", count(n), float64(r.produced.Bytes)/1e6, r.produced.Took.Round(time.Millisecond))
	bare := func() error {
		d, err := bench.BareRead(ctx, cl.kafka, name, r.produced.Ends)
		if err != nil {
			return err
		}
		logf("(a) 8 bare consumers read %s records in %s (%s records/s)", count(n), d.Round(time.Millisecond), bench.Human(float64(n)/d.Seconds()))
		r.bare = append(r.bare, d)
		if d, err = bench.BareReadFranz(ctx, cl.kafka, name, r.produced.Ends, len(r.produced.Ends)); err != nil {
			return err
		}
		logf("(a) 8 bare franz-go consumers read %s records in %s (%s records/s)", count(n), d.Round(time.Millisecond), bench.Human(float64(n)/d.Seconds()))
		r.franz = append(r.franz, d)
		return nil
	}
	if err := bare(); err != nil {
		return r, err
	}
	timeout := time.Minute + time.Duration(n/100_000)*time.Second
	leftBefore := cl.workersLeft()
	logf("(a) running the click job on %s records (timeout %s)", count(n), timeout)
	spec := bench.ClickJob("clicks-"+strings.ToLower(count(n)), cl.kafka, name)
	r.job, err = bench.RunJob(ctx, cl.c, spec, r.produced.Ends, timeout)
	if err != nil {
		return r, err
	}
	r.left = cl.workersLeft() - leftBefore
	for _, w := range cl.workers {
		rss, err := bench.PeakRSS(w.pid())
		if err != nil {
			return r, fmt.Errorf("%w (%v)", err, cl.workerGone())
		}
		r.rss = append(r.rss, rss)
	}
	logf("(a) job: done %v, %s of %s records in %s (%s records/s), %d batches, worker RSS %v, %d workers left",
		r.job.Done, count(r.job.Committed), count(n), r.job.Elapsed.Round(time.Millisecond), bench.Human(r.job.Rate()), r.job.Batches, r.rss, r.left)
	if r.job.Done {
		r.verify = bench.VerifyTruth(ctx, cl.c, spec.GetName(), r.produced.Truth)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := cl.c.Delete(dctx, spec.GetName()); err != nil {
		logf("(a) delete %s: %v", spec.GetName(), err)
	}
	cancel()
	// The bare consumers again, now that the job is gone: the better of the
	// two runs counts, which is the stricter comparison on a busy machine.
	if err := bare(); err != nil {
		return r, err
	}
	return r, nil
}

func addBacklogRows(t *table, r backlogResult) {
	n := count(r.n)
	p := r.produced
	t.add(fmt.Sprintf("(a) %s backlog: produce (8 partitions, %d B JSON events, 4 kgo producers)", n, p.Bytes/max(r.n, 1)),
		fmt.Sprintf("%s (%s records/s)", p.Took.Round(100*time.Millisecond), bench.Human(float64(r.n)/p.Took.Seconds())), "", "")
	bareRate, bares := bestRate(r.n, r.bare)
	job := r.job
	jobValue := jobCell(job, r.n, r.verify)
	if r.left > 0 {
		jobValue += fmt.Sprintf("; %d worker sessions lost", r.left)
	}
	t.add(fmt.Sprintf("(a) %s backlog: sluice job, default settings, 2 workers x 4 slots (submit to last commit)", n), jobValue, "", failedIf(r.verify != nil || !job.Done))
	t.add(fmt.Sprintf("(a) %s backlog: 8 bare librdkafka consumers, one per partition", n),
		fmt.Sprintf("%s records/s (best of %s)", bench.Human(bareRate), bares), "", "")
	ratio := job.Rate() / bareRate
	t.add(fmt.Sprintf("(a) %s backlog: job / bare consumers", n), fmt.Sprintf("%.2f", ratio), ">= 0.90", yesNo(job.Done && r.verify == nil && ratio >= 0.9))
	franzRate, franz := bestRate(r.n, r.franz)
	t.add(fmt.Sprintf("(a) %s backlog: 8 bare franz-go consumers, one per partition (the client the workers read with)", n),
		fmt.Sprintf("%s records/s (best of %s; job / these: %.2f)", bench.Human(franzRate), franz, job.Rate()/franzRate), "", "")
	var rss []string
	for i, b := range r.rss {
		rss = append(rss, fmt.Sprintf("w%d %s", i+1, mib(b)))
	}
	t.add(fmt.Sprintf("(a) %s backlog: worker peak RSS (VmHWM)", n), strings.Join(rss, ", "), "< 200 MiB", yesNo(len(r.rss) > 0 && maxOf(r.rss) < rssTarget))
}

// bestRate is the rate of n records in the shortest of runs, and the runs'
// times for a table cell.
func bestRate(n int64, runs []time.Duration) (float64, string) {
	best := runs[0]
	var all []string
	for _, d := range runs {
		best = min(best, d)
		all = append(all, d.Round(10*time.Millisecond).String())
	}
	return float64(n) / best.Seconds(), strings.Join(all, ", ")
}

// jobCell is the table cell of a job's run on a backlog of total records, whose results
// verify checked (nil: exact).
func jobCell(job bench.JobRun, total int64, verify error) string {
	exact := "counts and sums exact"
	if verify != nil {
		exact = "WRONG RESULTS: " + oneLine(verify)
	}
	if job.Done {
		return fmt.Sprintf("%s records/s (%s, %s, largest %s records; %s)", bench.Human(job.Rate()), job.Elapsed.Round(10*time.Millisecond),
			plural(job.Batches, "batch", "batches"), count(job.MaxBatchRecords), exact)
	}
	return fmt.Sprintf("NOT DONE: %s; %s of %s records committed in %s (%s records/s), %s",
		job.Message, count(job.Committed), count(total), job.Elapsed.Round(time.Second), bench.Human(job.Rate()), plural(job.Batches, "batch", "batches"))
}

// failedIf is "no" when bad, else "" (a row without a target of its own).
func failedIf(bad bool) string {
	if bad {
		return "no"
	}
	return ""
}

// runSustain is part (b): new workers, then a search over input rates.
func runSustain(ctx context.Context, cfg config, cl *cluster, t *table) error {
	if err := cl.startWorkers(ctx, "sustain", workers, slots); err != nil {
		t.add("(b) highest sustained input rate", "ERROR: "+oneLine(err), "", "no")
		return err
	}
	best, runs, err := bench.SearchRate(ctx, cfg.rateStart, cfg.rateLimit, cfg.bisect, func(ctx context.Context, rate int) (bench.SustainRun, error) {
		logf("(b) producing %d records/s for %s against a default click job", rate, cfg.window)
		r, err := bench.Sustain(ctx, cl.c, cl.kafka, fmt.Sprintf("sustain-%d", rate), rate, cfg.window)
		if err != nil {
			return r, err
		}
		logf("(b) %d records/s: held %v %s (max scheduling delay %s, queued %s, max processing %s, %d batches, caught up in %s)",
			rate, r.Held, r.Why, r.MaxSchedDelay.Round(time.Millisecond), r.MaxQueuedDelay.Round(time.Millisecond),
			r.MaxProcessing.Round(time.Millisecond), r.Batches, r.CatchUp.Round(time.Millisecond))
		// Let the workers finish what the deleted job left running.
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		return r, nil
	})
	var tried []string
	for _, r := range runs {
		mark := "held"
		if !r.Held {
			mark = "no"
		}
		tried = append(tried, fmt.Sprintf("%s %s", bench.Human(float64(r.Rate)), mark))
		status := "held"
		if !r.Held {
			status = "did not hold: " + r.Why
		}
		t.note("(b) %s records/s for %s: %s; last half of the window: %d batches, max scheduling delay %s (queued as in Spark %s), max processing time %s; all committed %s after the producer stopped",
			bench.Human(float64(r.Rate)), cfg.window, status, r.Batches, r.MaxSchedDelay.Round(time.Millisecond), r.MaxQueuedDelay.Round(time.Millisecond),
			r.MaxProcessing.Round(time.Millisecond), catchUp(r))
	}
	measure := fmt.Sprintf("(b) highest sustained input rate, default job, 8 partitions (%s at each rate; over its last half, scheduling delay < the 1s batch interval, also as queued in Spark, and the job keeps pace)", cfg.window)
	if err != nil {
		t.add(measure, "ERROR: "+oneLine(err), "", "no")
		return err
	}
	value := fmt.Sprintf("%s records/s (tried %s)", bench.Human(float64(best)), strings.Join(tried, ", "))
	if best == 0 {
		value = fmt.Sprintf("none held (tried %s)", strings.Join(tried, ", "))
	}
	t.add(measure, value, "", "")
	return nil
}

func catchUp(r bench.SustainRun) string {
	if r.Behind > 0 {
		return fmt.Sprintf("NOT within %s (%d records behind)", r.CatchUp.Round(time.Millisecond), r.Behind)
	}
	return r.CatchUp.Round(time.Millisecond).String()
}

// runOverhead is part (c): new workers, then the overhead job at each
// partition count.
func runOverhead(ctx context.Context, cfg config, cl *cluster, t *table) error {
	var firstErr error
	if err := cl.startWorkers(ctx, "overhead", workers, slots); err != nil {
		t.add("(c) coordination overhead per batch", "ERROR: "+oneLine(err), "", "no")
		return err
	}
	for _, parts := range cfg.overheadParts {
		measure := fmt.Sprintf("(c) coordination overhead per batch, %s partitions, 1 record per partition, 2 workers x 4 slots", thousands(int64(parts)))
		logf("(c) %d batches of one record on each of %d partitions", cfg.overheadBatches, parts)
		octx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		topics := bench.OverheadTopics(fmt.Sprintf("overhead-%d", parts), 1, parts)
		o, err := bench.CoordinationOverhead(octx, cl.c, cl.kafka, topics, cfg.overheadBatches, cfg.overheadBudget)
		cancel()
		if err != nil {
			t.add(measure, "ERROR: "+oneLine(err), overheadTarget, "no")
			logf("(c) %d partitions: %v", parts, err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		logf("(c) %d partitions: p50 %s p99 %s over %d batches (setup %s)", parts, o.P50, o.P99, o.Batches, o.Setup.Round(time.Millisecond))
		noteSplit(t, fmt.Sprintf("(c) %s partitions", thousands(int64(parts))), o)
		t.add(measure, overheadValue(o, cfg.overheadBudget), overheadTarget, yesNo(o.Batches > 0 && o.P50 < 10*time.Millisecond && o.P99 < 20*time.Millisecond))
	}
	return firstErr
}

// overheadTarget is issue 9's target for (c), up to 1,024 partitions.
const overheadTarget = "p50 < 10 ms, p99 < 20 ms"

// noteSplit notes where the median batch's time went.
func noteSplit(t *table, what string, o bench.Overhead) {
	if o.Batches == 0 {
		return
	}
	sp, sl := o.Split, o.Slow
	t.note("%s: medians of a batch's parts: up to the dispatch (the previous batch's etcd commit, then planning) %s, %s (dispatch to last result) %s, last result to commit %s; in the slowest 5%%: %s, %s, %s; setup %s for %s records, not in the figures",
		what, ms(sp.Plan), plural(int64(sp.TaskCount), "task", "tasks"), ms(sp.Tasks), ms(sp.After), ms(sl.Plan), ms(sl.Tasks), ms(sl.After),
		o.Setup.Round(100*time.Millisecond), count(o.Records))
}

// overheadValue is the table cell of an overhead measurement.
func overheadValue(o bench.Overhead, budget time.Duration) string {
	if o.Batches == 0 {
		return fmt.Sprintf("NO FIGURE: %s committed in %s (time-boxed)", plural(o.Committed, "batch", "batches"), o.Elapsed.Round(time.Second))
	}
	boxed := ""
	if o.TimeBoxed {
		boxed = fmt.Sprintf(", time-boxed to %s: %d committed in %s", budget, o.Committed, o.Elapsed.Round(time.Second))
	}
	return fmt.Sprintf("p50 %s, p99 %s (%s%s)", ms(o.P50), ms(o.P99), plural(int64(o.Batches), "batch", "batches"), boxed)
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func ms(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

func maxOf(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// oneLine keeps the first line of an error, for a table cell.
func oneLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
