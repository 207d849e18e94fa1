package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/bench"
)

// wideRun is the default job on one backlog of part (e).
type wideRun struct {
	job    bench.JobRun
	verify error
	rss    []int64
	// cpu is the CPU time used from just before the submit to the last
	// commit: sluice by the coordinator and the workers, broker by the
	// broker's process with etcd's.
	cpu struct{ sluice, broker time.Duration }
}

// wideMeasure is one measurement of part (e): the job's rounds on each
// layout, and the bare consumers' reads before and after them.
type wideMeasure struct {
	narrows, wides []wideRun
	// bare are the librdkafka consumers' reads of the wide backlog (on
	// shared CPUs only), franz and franzNarrow franz-go consumers' of
	// each backlog.
	bare, franz, franzNarrow []time.Duration
}

// runWide is part (e): the same backlog size on 8 partitions and on
// cfg.widePartitions; bare consumers sharing the wide topic's partitions,
// the job on each topic on new workers, the bare consumers again. It is
// measured on CPUs shared by everything, and with the broker on a CPU of
// its own (cfg.wideCPUs).
func runWide(ctx context.Context, cfg config, cl *cluster, t *table) error {
	n, parts := cfg.wideRecords, cfg.widePartitions
	wideName := fmt.Sprintf("(e) %s backlog, %s partitions", count(n), thousands(int64(parts)))
	fail := func(err error) error {
		t.add(wideName, "ERROR: "+oneLine(err), "", "no")
		logf("(e) %v", err)
		return err
	}
	brokers, brokerProc := cl.kafka, cl.infra
	if cfg.wideBroker == "memory" {
		broker, addr, err := cl.startMemoryBroker(ctx, "broker-e")
		if err != nil {
			return fail(err)
		}
		defer broker.stop()
		defer cl.stopWorkers()
		brokers, brokerProc = addr, broker
		t.note("(e) reads from its own broker process, kfake in memory (-wide-broker memory)")
	}
	if cfg.wideInTurn {
		t.note("(e) each producer writes its partitions in turn (-wide-in-turn): record batches of up to 1 MB on both backlogs")
	}
	var narrow, wide bench.Produced
	for _, b := range []struct {
		p     *bench.Produced
		parts int32
		seed  uint64
	}{{&narrow, backlogPartitions, 8}, {&wide, parts, uint64(parts)}} {
		topic := fmt.Sprintf("wide-%s-%d", strings.ToLower(count(n)), b.parts)
		logf("(e) producing %s records to %s (%d partitions)", count(n), topic, b.parts)
		var err error
		if *b.p, err = bench.ProduceEvents(ctx, brokers, topic, b.parts, n, b.seed, cfg.wideInTurn); err != nil {
			return fail(err)
		}
		logf("(e) produced %s records to %d partitions in %s", count(n), b.parts, b.p.Took.Round(time.Millisecond))
		t.note("(e) %s records produced to %s partitions in %s (4 kgo producers; not in the figures)", count(n), thousands(int64(b.parts)), b.p.Took.Round(100*time.Millisecond))
	}
	for _, split := range cfg.wideSplits() {
		if split && runtime.NumCPU() < 2 {
			t.note("(e) with the broker on a CPU of its own: not measured, this machine has 1 CPU")
			continue
		}
		m, err := measureWide(ctx, cfg, cl, brokerProc, brokers, narrow, wide, split)
		if err != nil {
			return fail(err)
		}
		if split {
			addSplitRows(t, n, parts, m)
		} else {
			addWideRows(t, n, parts, min(cfg.wideConsumers, int(parts)), m)
		}
	}
	return nil
}

// measureWide runs the bare reads and the job's rounds of part (e); split,
// with the broker on CPU 0 and Sluice and the bare consumers on the
// others (splitCPUs), and no bare librdkafka reads (the slowest part of
// (e), measured on shared CPUs).
func measureWide(ctx context.Context, cfg config, cl *cluster, broker *proc, brokers string, narrow, wide bench.Produced, split bool) (wideMeasure, error) {
	var m wideMeasure
	n, parts := cfg.wideRecords, cfg.widePartitions
	consumers := min(cfg.wideConsumers, int(parts))
	mode := ""
	if split {
		cl.stopWorkers() // started later, they take this process's CPUs
		restore, err := splitCPUs(broker, cl.coord)
		if err != nil {
			return m, err
		}
		defer restore()
		mode = "-split"
		logf("(e) the broker on CPU 0; the coordinator, the workers and the bare consumers on the other CPUs")
	}
	readBare := func() error {
		if !split {
			d, err := bench.BareReadShared(ctx, brokers, wide.Topic, wide.Ends, consumers)
			if err != nil {
				return err
			}
			logf("(e) %d bare consumers read %s records on %d partitions in %s (%s records/s)", consumers, count(n), parts, d.Round(time.Millisecond), bench.Human(float64(n)/d.Seconds()))
			m.bare = append(m.bare, d)
		}
		d, err := bench.BareReadFranz(ctx, brokers, wide.Topic, wide.Ends, consumers)
		if err != nil {
			return err
		}
		logf("(e) %d bare franz-go consumers read %s records on %d partitions in %s (%s records/s)", consumers, count(n), parts, d.Round(time.Millisecond), bench.Human(float64(n)/d.Seconds()))
		m.franz = append(m.franz, d)
		// The client's own ratio of the two layouts: smaller record
		// batches on more partitions cost the broker and the client more
		// per record.
		if d, err = bench.BareReadFranz(ctx, brokers, narrow.Topic, narrow.Ends, len(narrow.Ends)); err != nil {
			return err
		}
		logf("(e) %d bare franz-go consumers read %s records on %d partitions in %s (%s records/s)", len(narrow.Ends), count(n), len(narrow.Ends), d.Round(time.Millisecond), bench.Human(float64(n)/d.Seconds()))
		m.franzNarrow = append(m.franzNarrow, d)
		return nil
	}
	if err := readBare(); err != nil {
		return m, err
	}
	runOne := func(p bench.Produced, round int) (wideRun, error) {
		var r wideRun
		tag := fmt.Sprintf("wide-%d%s", len(p.Ends), mode)
		if round > 0 {
			tag += fmt.Sprintf("-r%d", round+1)
		}
		if err := cl.startWorkers(ctx, tag, workers, slots); err != nil {
			return r, err
		}
		timeout := time.Minute + time.Duration(n/100_000)*time.Second
		if split {
			timeout *= 2 // Sluice on one CPU of two
		}
		logf("(e) running the click job on %s records on %d partitions (timeout %s)", count(n), len(p.Ends), timeout)
		spec := bench.ClickJob("clicks-"+tag, brokers, p.Topic)
		sluiceProcs := append([]*proc{cl.coord}, cl.workers...)
		sluice0, err := cpuTime(sluiceProcs...)
		if err != nil {
			return r, err
		}
		broker0, err := cpuTime(broker, cl.infra)
		if err != nil {
			return r, err
		}
		if r.job, err = bench.RunJob(ctx, cl.c, spec, p.Ends, timeout); err != nil {
			return r, err
		}
		sluice1, err := cpuTime(sluiceProcs...)
		if err != nil {
			return r, fmt.Errorf("%w (%v)", err, cl.workerGone())
		}
		broker1, err := cpuTime(broker, cl.infra)
		if err != nil {
			return r, err
		}
		r.cpu.sluice, r.cpu.broker = sluice1-sluice0, broker1-broker0
		for _, w := range cl.workers {
			rss, err := bench.PeakRSS(w.pid())
			if err != nil {
				return r, fmt.Errorf("%w (%v)", err, cl.workerGone())
			}
			r.rss = append(r.rss, rss)
		}
		logf("(e) job on %d partitions: done %v, %s records in %s (%s records/s), %d batches (%d cut by a cap, longest %s), worker RSS %v, CPU Sluice %s broker %s",
			len(p.Ends), r.job.Done, count(r.job.Committed), r.job.Elapsed.Round(time.Millisecond), bench.Human(r.job.Rate()), r.job.Batches,
			r.job.Capped, r.job.MaxProcessing.Round(time.Millisecond), r.rss, r.cpu.sluice, r.cpu.broker)
		if r.job.Done {
			r.verify = bench.VerifyTruth(ctx, cl.c, spec.GetName(), p.Truth)
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := cl.c.Delete(dctx, spec.GetName()); err != nil {
			logf("(e) delete %s: %v", spec.GetName(), err)
		}
		cancel()
		return r, nil
	}
	// Rounds alternate which layout runs first (8, 1,024, 1,024, 8, ...):
	// the machine's speed drifts by tens of percent within a minute.
	for round := range cfg.wideRounds {
		for i := range 2 {
			p, runs := narrow, &m.narrows
			if (i == 1) == (round%2 == 0) {
				p, runs = wide, &m.wides
			}
			r, err := runOne(p, round)
			if err != nil {
				return m, err
			}
			*runs = append(*runs, r)
		}
	}
	// Again with the job gone; the better of the two counts, the stricter
	// comparison on a busy machine.
	if split {
		cl.stopWorkers() // before their CPUs are given back
	}
	if err := readBare(); err != nil {
		return m, err
	}
	return m, nil
}

// bestWide is the fastest of runs, or the first that failed or whose
// results were wrong.
func bestWide(runs []wideRun) wideRun {
	best := runs[0]
	for _, r := range runs {
		if !r.job.Done || r.verify != nil {
			return r
		}
		if r.job.Rate() > best.job.Rate() {
			best = r
		}
	}
	return best
}

func addWideRows(t *table, n int64, parts int32, consumers int, m wideMeasure) {
	name := fmt.Sprintf("(e) %s backlog, %s partitions", count(n), thousands(int64(parts)))
	narrows, wides, bare, franz, franzNarrow := m.narrows, m.wides, m.bare, m.franz, m.franzNarrow
	narrow, wide := bestWide(narrows), bestWide(wides)
	rounds := ""
	if len(wides) > 1 {
		rounds = fmt.Sprintf(", best of %d rounds", len(wides))
	}
	t.add(name+": sluice job, default settings, 2 workers x 4 slots (submit to last commit"+rounds+")", jobCell(wide.job, n, wide.verify), "",
		failedIf(wide.verify != nil || !wide.job.Done))
	bareRate, bares := bestRate(n, bare)
	t.add(fmt.Sprintf("%s: %d bare librdkafka consumers, %s partitions each (assigned from offset 0, (a)'s fetch settings), before and after the job",
		name, consumers, thousands(int64(parts)/int64(consumers))),
		fmt.Sprintf("%s records/s (best of %s)", bench.Human(bareRate), bares), "", "")
	t.add(name+": job / bare consumers", fmt.Sprintf("%.2f", wide.job.Rate()/bareRate), "", "")
	franzRate, franzRuns := bestRate(n, franz)
	t.add(fmt.Sprintf("%s: %d bare franz-go consumers, the same partitions (the client the workers read with)", name, consumers),
		fmt.Sprintf("%s records/s (best of %s; job / these: %.2f)", bench.Human(franzRate), franzRuns, wide.job.Rate()/franzRate), "", "")
	var rss []string
	for i := range wide.rss {
		peak := int64(0)
		for _, r := range wides {
			if i < len(r.rss) {
				peak = max(peak, r.rss[i])
			}
		}
		rss = append(rss, fmt.Sprintf("w%d %s", i+1, mib(peak)))
	}
	t.add(name+": worker peak RSS (VmHWM), new workers each round, highest", strings.Join(rss, ", "), "", "")
	t.add(fmt.Sprintf("(e) %s backlog, 8 partitions: the same job, same run, new workers%s", count(n), rounds), jobCell(narrow.job, n, narrow.verify), "",
		failedIf(narrow.verify != nil || !narrow.job.Done))
	// The target is on the split rows: there the broker has a CPU of its
	// own, as on its own hosts in a deployment. Here it shares two cores
	// with Sluice and pays per record batch what Kafka does not (kfake
	// reads each batch it serves from its file into a new buffer); the CPU
	// rows say how much of the gap is the broker's.
	_, cell, ok := wideRatio(m)
	t.add(fmt.Sprintf("(e) job records/s, %s / 8 partitions, the broker on the same CPUs (median of the rounds' ratios)", thousands(int64(parts))), cell, "", failedIf(!ok))
	addCPURows(t, "(e) CPUs shared", parts, m, true)
	narrowRate, narrowRuns := bestRate(n, franzNarrow)
	t.add(fmt.Sprintf("(e) bare franz-go consumers' records/s, %s / 8 partitions (8 consumers each; on 8: %s records/s, best of %s)", thousands(int64(parts)), bench.Human(narrowRate), narrowRuns),
		fmt.Sprintf("%.2f", franzRate/narrowRate), "", "")
}

// addSplitRows adds the rows of part (e) measured with the broker on a CPU
// of its own.
func addSplitRows(t *table, n int64, parts int32, m wideMeasure) {
	narrow, wide := bestWide(m.narrows), bestWide(m.wides)
	name := "(e) broker on CPU 0, Sluice and the bare consumers on the other CPUs"
	t.add(fmt.Sprintf("%s: the job on %s and on 8 partitions, best of %d rounds each", name, thousands(int64(parts)), len(m.wides)),
		fmt.Sprintf("%s and %s records/s", bench.Human(wide.job.Rate()), bench.Human(narrow.job.Rate())), "",
		failedIf(wide.verify != nil || !wide.job.Done || narrow.verify != nil || !narrow.job.Done))
	ratio, cell, ok := wideRatio(m)
	t.add(fmt.Sprintf("%s: job records/s, %s / 8 partitions (median of the rounds' ratios)", name, thousands(int64(parts))), cell, ">= 0.90", yesNo(ok && ratio >= 0.9))
	addCPURows(t, name, parts, m, false)
	franzRate, _ := bestRate(n, m.franz)
	narrowRate, _ := bestRate(n, m.franzNarrow)
	t.add(fmt.Sprintf("%s: bare franz-go consumers' records/s, %s / 8 partitions (%s and %s records/s)", name, thousands(int64(parts)), bench.Human(franzRate), bench.Human(narrowRate)),
		fmt.Sprintf("%.2f", franzRate/narrowRate), "", "")
}

// wideRatio is part (e)'s figure: the median over the rounds of the job's
// records/s on the wide backlog over the narrow one's in the same round.
// The two jobs of a round run back to back, so a round's ratio is little
// moved by the machine's speed, which drifts by tens of percent within a
// minute and moved best over best by 0.15 between runs. The cell also
// gives each round's ratio and best over best; ok is whether every run
// finished with exact results.
func wideRatio(m wideMeasure) (ratio float64, cell string, ok bool) {
	ok = true
	for _, r := range append(slices.Clone(m.narrows), m.wides...) {
		ok = ok && r.job.Done && r.verify == nil
	}
	var each []float64
	for i := range min(len(m.wides), len(m.narrows)) {
		if m.narrows[i].job.Rate() > 0 {
			each = append(each, m.wides[i].job.Rate()/m.narrows[i].job.Rate())
		}
	}
	if len(each) == 0 {
		return 0, "0.00", ok
	}
	ratio = median(each)
	cell = fmt.Sprintf("%.2f", ratio)
	if len(each) > 1 {
		rounds := make([]string, len(each))
		for i, r := range each {
			rounds[i] = fmt.Sprintf("%.2f", r)
		}
		best := bestWide(m.wides).job.Rate() / max(bestWide(m.narrows).job.Rate(), 1e-9)
		cell += fmt.Sprintf(" (rounds: %s; best / best %.2f)", strings.Join(rounds, ", "), best)
	}
	return ratio, cell, ok
}

// wideCPU is part (e)'s CPU time, per round in which both jobs finished:
// median CPU-seconds per job of each layout's Sluice processes and broker,
// and the medians of the rounds' ratios. own is Sluice's CPU per record on
// the narrow backlog over the wide one: its own cost of the partitions.
// ceiling is the job's ratio on CPUs shared with the broker if Sluice's CPU
// per record were the same on both backlogs and the broker's as measured,
// (S8 + B8) / (S8 + B1,024): what is left of 1 is the broker's.
type wideCPU struct {
	rounds                                             int
	sluiceWide, sluiceNarrow, brokerWide, brokerNarrow float64
	own, ceiling                                       float64
}

func wideCPUOf(m wideMeasure) wideCPU {
	var c wideCPU
	var sw, sn, bw, bn, own, ceiling []float64
	for i := range min(len(m.wides), len(m.narrows)) {
		w, n := m.wides[i], m.narrows[i]
		if !w.job.Done || !n.job.Done || w.cpu.sluice <= 0 || n.cpu.sluice <= 0 {
			continue
		}
		c.rounds++
		sw, sn = append(sw, w.cpu.sluice.Seconds()), append(sn, n.cpu.sluice.Seconds())
		bw, bn = append(bw, w.cpu.broker.Seconds()), append(bn, n.cpu.broker.Seconds())
		own = append(own, n.cpu.sluice.Seconds()/w.cpu.sluice.Seconds())
		ceiling = append(ceiling, (n.cpu.sluice+n.cpu.broker).Seconds()/(n.cpu.sluice+w.cpu.broker).Seconds())
	}
	if c.rounds == 0 {
		return c
	}
	c.sluiceWide, c.sluiceNarrow, c.brokerWide, c.brokerNarrow = median(sw), median(sn), median(bw), median(bn)
	c.own, c.ceiling = median(own), median(ceiling)
	return c
}

// addCPURows adds the rows of wideCPU; the ceiling only where the broker
// shares the CPUs.
func addCPURows(t *table, name string, parts int32, m wideMeasure, shared bool) {
	c := wideCPUOf(m)
	if c.rounds == 0 {
		t.add(name+": CPU time", "not measured: no round with both jobs done", "", "")
		return
	}
	p := thousands(int64(parts))
	t.add(fmt.Sprintf("%s: CPU-seconds a job took on %s / on 8 partitions, median of %d rounds", name, p, c.rounds),
		fmt.Sprintf("coordinator and workers %.1f / %.1f, broker with etcd %.1f / %.1f", c.sluiceWide, c.sluiceNarrow, c.brokerWide, c.brokerNarrow), "", "")
	t.add(fmt.Sprintf("%s: Sluice's CPU per record, on 8 / on %s partitions (median of the rounds' ratios)", name, p), fmt.Sprintf("%.2f", c.own), "", "")
	if shared {
		t.add(fmt.Sprintf("%s: the job's ratio with Sluice's CPU per record the same on both and the broker's as measured, (S8 + B8) / (S8 + B%s) (median of the rounds')", name, p),
			fmt.Sprintf("%.2f", c.ceiling), "", "")
	}
}

// median is the middle of xs, the mean of the middle two for an even count.
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runLarge is part (d): the coordination overhead of (c) for each large
// layout, each on new workers, time-boxed, on an in-memory broker process
// (see memoryBrokerArg) from which each layout's topics are deleted once
// measured.
func runLarge(ctx context.Context, cfg config, cl *cluster, t *table) error {
	t.note("(d) reads from its own broker process, kfake in memory (sluice-bench %s): sluice dev's embedded broker keeps 2 files open per partition, 20,000 at 10,000 partitions (open-file limit here: %d)",
		memoryBrokerArg, openFileLimit())
	broker, brokers, err := cl.startMemoryBroker(ctx, "broker-d")
	if err != nil {
		t.add("(d) coordination overhead per batch", "ERROR: "+oneLine(err), "p99 < 100 ms", "no")
		return err
	}
	defer broker.stop()
	// The workers go first: a broker stopping under them would only add
	// noise to their logs.
	defer cl.stopWorkers()
	var firstErr error
	for _, l := range cfg.largeLayouts {
		if ctx.Err() != nil {
			break
		}
		if err := runLayout(ctx, cfg, cl, t, brokers, l); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func runLayout(ctx context.Context, cfg config, cl *cluster, t *table, brokers string, l bench.Layout) error {
	total := int64(l.Topics) * int64(l.Partitions)
	where := "in 1 topic"
	if l.Topics > 1 {
		where = fmt.Sprintf("in %d topics of %s (one job)", l.Topics, thousands(int64(l.Partitions)))
	}
	measure := fmt.Sprintf("(d) coordination overhead per batch, %s partitions %s, 1 record per partition, 2 workers x 4 slots", thousands(total), where)
	const target = "p99 < 100 ms"
	fail := func(err error) error {
		t.add(measure, "ERROR: "+oneLine(err), target, "no")
		logf("(d) %s: %v", l, err)
		return err
	}
	if err := cl.startWorkers(ctx, "large-"+l.String(), workers, slots); err != nil {
		return fail(err)
	}
	topics := bench.OverheadTopics("large-"+l.String(), l.Topics, l.Partitions)
	logf("(d) %d batches of one record on each of %d partitions (%s), time-boxed to %s", cfg.largeBatches, total, l, cfg.largeBudget)
	// Beyond the time box: the setup, reading the batches, and a margin; a
	// hang ends here as an error, not as a stuck bench.
	octx, cancel := context.WithTimeout(ctx, 2*cfg.largeBudget+3*time.Minute)
	o, err := bench.CoordinationOverhead(octx, cl.c, brokers, topics, cfg.largeBatches, cfg.largeBudget)
	cancel()
	// The workers' consumers may still hold the partitions: they go
	// before the topics.
	cl.stopWorkers()
	dstart := time.Now()
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	if derr := bench.DeleteTopics(dctx, brokers, topics); derr != nil {
		logf("(d) %v", derr)
	}
	dcancel()
	logf("(d) %s: topics deleted in %s", l, time.Since(dstart).Round(time.Millisecond))
	if err != nil {
		return fail(err)
	}
	logf("(d) %s: p50 %s p99 %s over %d batches, %d committed in %s (time-boxed %v); setup %s",
		l, o.P50, o.P99, o.Batches, o.Committed, o.Elapsed.Round(time.Millisecond), o.TimeBoxed, o.Setup.Round(time.Millisecond))
	if o.Batches == 0 {
		t.note("(d) %s: setup %s for %s records, not in the figures", l, o.Setup.Round(100*time.Millisecond), count(o.Records))
	}
	noteSplit(t, "(d) "+l.String(), o)
	t.add(measure, overheadValue(o, cfg.largeBudget), target, yesNo(o.Batches > 0 && o.P99 < 100*time.Millisecond))
	return nil
}

// thousands formats n with commas: 10,000.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
