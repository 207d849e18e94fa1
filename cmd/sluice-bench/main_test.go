package main

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/bench"
)

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 64: "64", 1024: "1,024", 10000: "10,000", 2000000: "2,000,000", -1500: "-1,500"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseFlagsScaleParts(t *testing.T) {
	t.Setenv("SLUICE_BENCH_QUICK", "")
	cfg, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.parts != "abcde" || cfg.wideRecords != 10_000_000 || cfg.widePartitions != 1024 || cfg.wideConsumers != 8 || cfg.wideRounds != 5 || cfg.wideBroker != "dev" || cfg.wideInTurn ||
		!slices.Equal(cfg.wideSplits(), []bool{false, true}) ||
		cfg.largeBatches != 100 || cfg.largeBudget != time.Minute || !slices.Equal(cfg.largeLayouts, []bench.Layout{{Topics: 1, Partitions: 10000}, {Topics: 100, Partitions: 100}}) {
		t.Errorf("defaults: parts %q, (e) %d records on %d partitions, %d consumers; (d) %v, %d batches, %s",
			cfg.parts, cfg.wideRecords, cfg.widePartitions, cfg.wideConsumers, cfg.largeLayouts, cfg.largeBatches, cfg.largeBudget)
	}
	cfg, err = parseFlags([]string{"-quick", "-large-layouts", "2x50", "-wide-records", "300000"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.wideRecords != 300_000 || cfg.wideRounds != 1 || !slices.Equal(cfg.wideSplits(), []bool{false}) || cfg.largeBatches != 50 || cfg.largeBudget != 30*time.Second || !slices.Equal(cfg.largeLayouts, []bench.Layout{{Topics: 2, Partitions: 50}}) {
		t.Errorf("quick: (e) %d records; (d) %v, %d batches, %s", cfg.wideRecords, cfg.largeLayouts, cfg.largeBatches, cfg.largeBudget)
	}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"-large-layouts", "10000"}, `-large-layouts: layout "10000"`},
		{[]string{"-wide-partitions", "0"}, "-wide-partitions 0"},
		{[]string{"-wide-consumers", "0"}, "-wide-consumers 0"},
		{[]string{"-wide-records", "-5"}, "-wide-records -5"},
		{[]string{"-wide-rounds", "-1"}, "-wide-rounds -1"},
		{[]string{"-wide-broker", "disk"}, `-wide-broker "disk"`},
		{[]string{"-wide-cpus", "pinned"}, `-wide-cpus "pinned"`},
	} {
		if _, err := parseFlags(tc.args); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parseFlags(%v) = %v, want %q", tc.args, err, tc.err)
		}
	}
	for flag, want := range map[string][]bool{"shared": {false}, "split": {true}, "both": {false, true}} {
		cfg, err := parseFlags([]string{"-quick", "-wide-cpus", flag})
		if err != nil || !slices.Equal(cfg.wideSplits(), want) {
			t.Errorf("-wide-cpus %s: %v (%v), want %v", flag, cfg.wideSplits(), err, want)
		}
	}
}

func TestWideRatio(t *testing.T) {
	run := func(rate float64) wideRun {
		// 10M records at rate records/s.
		return wideRun{job: bench.JobRun{Done: true, Committed: 10_000_000, Elapsed: time.Duration(10_000_000 / rate * float64(time.Second))}}
	}
	m := wideMeasure{
		narrows: []wideRun{run(1_000_000), run(700_000), run(800_000)},
		wides:   []wideRun{run(950_000), run(560_000), run(800_000)},
	}
	// Rounds 0.95, 0.80 and 1.00: the median 0.95; best / best 0.95.
	ratio, cell, ok := wideRatio(m)
	if !ok || ratio < 0.949 || ratio > 0.951 || cell != "0.95 (rounds: 0.95, 0.80, 1.00; best / best 0.95)" {
		t.Errorf("wideRatio = %.3f, %q, %v", ratio, cell, ok)
	}
	m.wides = append(m.wides, run(450_000))
	m.narrows = append(m.narrows, run(500_000))
	// Rounds 0.95, 0.80, 1.00, 0.90: the mean of the middle two.
	if ratio, _, _ := wideRatio(m); ratio < 0.924 || ratio > 0.926 {
		t.Errorf("even rounds: ratio %.3f, want 0.925", ratio)
	}
	m.wides[1].verify = errors.New("wrong counts")
	if _, _, ok := wideRatio(m); ok {
		t.Error("a run with wrong results is ok")
	}
	if ratio, cell, _ := wideRatio(wideMeasure{narrows: []wideRun{run(1)}, wides: []wideRun{run(1)}}); ratio != 1 || cell != "1.00" {
		t.Errorf("one round: %.2f %q", ratio, cell)
	}
}

func TestWideCPU(t *testing.T) {
	run := func(done bool, sluice, broker float64) wideRun {
		r := wideRun{job: bench.JobRun{Done: done}}
		r.cpu.sluice = time.Duration(sluice * float64(time.Second))
		r.cpu.broker = time.Duration(broker * float64(time.Second))
		return r
	}
	m := wideMeasure{
		// Round 1: own 12/12.5 = 0.96, ceiling (12+2)/(12+4) = 0.875.
		// Round 2: own 10/12.5 = 0.80, ceiling (10+2)/(10+4.4) = 0.833.
		// Round 3: own 13/13 = 1.00, ceiling (13+1.5)/(13+3.6) = 0.873.
		// Round 4: the wide job did not finish: left out.
		narrows: []wideRun{run(true, 12, 2), run(true, 10, 2), run(true, 13, 1.5), run(true, 11, 2)},
		wides:   []wideRun{run(true, 12.5, 4), run(true, 12.5, 4.4), run(true, 13, 3.6), run(false, 20, 5)},
	}
	c := wideCPUOf(m)
	near := func(a, b float64) bool { return a > b-0.0005 && a < b+0.0005 }
	if c.rounds != 3 || !near(c.own, 0.96) || !near(c.ceiling, 0.873494) ||
		c.sluiceWide != 12.5 || c.sluiceNarrow != 12 || c.brokerWide != 4 || c.brokerNarrow != 2 {
		t.Errorf("wideCPUOf = %+v", c)
	}
	if c := wideCPUOf(wideMeasure{narrows: []wideRun{run(true, 1, 1)}, wides: []wideRun{run(false, 1, 1)}}); c.rounds != 0 || c.own != 0 {
		t.Errorf("no finished round: %+v", c)
	}
	var tb table
	addCPURows(&tb, "(e) x", 1024, m, true)
	if len(tb.rows) != 3 || tb.rows[1][1] != "0.96" || tb.rows[2][1] != "0.87" || tb.rows[0][1] != "coordinator and workers 12.5 / 12.0, broker with etcd 4.0 / 2.0" {
		t.Errorf("rows: %q", tb.rows)
	}
	tb = table{}
	addCPURows(&tb, "(e) x", 1024, m, false)
	if len(tb.rows) != 2 {
		t.Errorf("split rows: %q", tb.rows)
	}
}
