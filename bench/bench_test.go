package bench

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestPartitionCounts(t *testing.T) {
	for _, tc := range []struct {
		n     int64
		parts int32
		want  []int64
	}{
		{16, 8, []int64{2, 2, 2, 2, 2, 2, 2, 2}},
		{10, 4, []int64{3, 3, 2, 2}},
		{3, 8, []int64{1, 1, 1, 0, 0, 0, 0, 0}},
		{1_000_000, 8, []int64{125000, 125000, 125000, 125000, 125000, 125000, 125000, 125000}},
	} {
		if got := PartitionCounts(tc.n, tc.parts); !slices.Equal(got, tc.want) {
			t.Errorf("PartitionCounts(%d, %d) = %v, want %v", tc.n, tc.parts, got, tc.want)
		}
	}
}

// TestEventsAndTruth decodes generated events the way the job reads them
// and recomputes the truth: the generator's own count must agree, the
// events must be valid JSON of about 100 bytes, and a seed must always give
// the same events.
func TestEventsAndTruth(t *testing.T) {
	const n = 20000
	g := newEventGen(7, 3)
	want := Truth{}
	size, clicks := 0, 0
	var first []byte
	for i := range n {
		v := g.next(nil)
		if i == 0 {
			first = v
		}
		size += len(v)
		var e struct {
			Type string `json:"type"`
			Page string `json:"page"`
			MS   int64  `json:"ms"`
			User string `json:"user"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			t.Fatalf("event %d %s: %v", i, v, err)
		}
		if len(e.User) != len("u-01234") {
			t.Fatalf("event %d: user %q is not zero-padded", i, e.User)
		}
		if e.Type == "click" {
			clicks++
			a := want[e.Page]
			want[e.Page] = Agg{Count: a.Count + 1, Sum: a.Sum + e.MS}
		}
	}
	got := Truth{}
	g.addTo(got)
	if err := diffTruth(got, want); err != nil {
		t.Fatal(err)
	}
	if avg := size / n; avg < 95 || avg > 115 {
		t.Errorf("events average %d bytes, want about 100", avg)
	}
	if frac := float64(clicks) / n; frac < 0.23 || frac > 0.27 {
		t.Errorf("%.3f of the events are clicks, want 1/4", frac)
	}
	if again := newEventGen(7, 3).next(nil); string(again) != string(first) {
		t.Errorf("same seed gave %s then %s", first, again)
	}
	if other := newEventGen(7, 4).next(nil); string(other) == string(first) {
		t.Errorf("partitions 3 and 4 both start with %s", first)
	}
}

func TestDiffTruth(t *testing.T) {
	want := Truth{"/p/1": {2, 30}, "/p/2": {1, 5}}
	for _, tc := range []struct {
		name string
		got  Truth
		err  string
	}{
		{"equal", Truth{"/p/1": {2, 30}, "/p/2": {1, 5}}, ""},
		{"count", Truth{"/p/1": {3, 30}, "/p/2": {1, 5}}, "1 pages differ from the ground truth: /p/1: count 3 sum 30, want count 2 sum 30"},
		{"missing", Truth{"/p/1": {2, 30}}, "/p/2: count 0 sum 0, want count 1 sum 5"},
		{"extra", Truth{"/p/1": {2, 30}, "/p/2": {1, 5}, "/p/9": {1, 1}}, "/p/9: count 1 sum 1, want none"},
	} {
		err := diffTruth(tc.got, want)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: diffTruth = %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 51 * time.Millisecond}, {0.99, 100 * time.Millisecond}, {0, time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := Percentile(ds, tc.q); got != tc.want {
			t.Errorf("Percentile(1..100ms, %v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := Percentile(nil, 0.5); got != 0 {
		t.Errorf("Percentile(nil) = %v", got)
	}
}

func TestBatchCycles(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	d := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	// batch: tick at, dispatched sched after it, tasks done proc later,
	// committed at commit.
	batch := func(id int64, at, sched, proc, commit int, ranges int) *sluicev1.Batch {
		return &sluicev1.Batch{
			Id: id, State: sluicev1.BatchState_BATCH_STATE_COMMITTED, BatchTime: timestamppb.New(ms(at)),
			CommitTime: timestamppb.New(ms(commit)), Ranges: make([]*sluicev1.OffsetRange, ranges),
			Metrics: &sluicev1.BatchMetrics{SchedulingDelay: durationpb.New(d(sched)), ProcessingTime: durationpb.New(d(proc)), Tasks: int32(ranges)},
		}
	}
	// Newest first, as ListBatches returns them. Batch 3 waited for batch 2
	// (committed at 170, after 3's batch time 150): its cycle starts at 170,
	// and its planning ran from then to its dispatch at 180.
	list := []*sluicev1.Batch{
		{Id: 5, State: sluicev1.BatchState_BATCH_STATE_PLANNED},
		batch(4, 250, 2, 8, 262, 2),
		batch(3, 150, 30, 15, 200, 2),
		batch(2, 100, 10, 50, 170, 2),
		batch(1, 50, 2, 5, 60, 2),
	}
	got, err := batchCycles(list, 2, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []cycle{
		{total: d(70), plan: d(10), tasks: d(50), taskCount: 2},
		{total: d(30), plan: d(10), tasks: d(15), taskCount: 2},
		{total: d(12), plan: d(2), tasks: d(8), taskCount: 2},
	}
	if !slices.Equal(got, want) {
		t.Errorf("cycles %+v, want %+v", got, want)
	}
	if s := split(got); s != (CycleSplit{Plan: d(10), Tasks: d(15), After: d(5), TaskCount: 2}) {
		t.Errorf("split %+v", s)
	}
	if s := split(slowest(got, 0.05)); s != (CycleSplit{Plan: d(10), Tasks: d(50), After: d(10), TaskCount: 2}) {
		t.Errorf("split of the slowest %+v", s)
	}
	if s := slowest(got, 0.67); len(s) != 2 || s[1].total != d(30) {
		t.Errorf("slowest 2 of 3: %+v", s)
	}
	if _, err := batchCycles(list, 3, 1, 4); err == nil || !strings.Contains(err.Error(), "batch 2 has 2 ranges, want one per partition (3)") {
		t.Errorf("short batch: %v", err)
	}
	if _, err := batchCycles(list, 2, 4, 4); err == nil {
		t.Errorf("all warmup: no error")
	}
}

func TestQueuedDelays(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	// sample: batch time, recorded scheduling delay and commit, in ms.
	sample := func(at, sched, commit int) batchSample {
		return batchSample{time: t0.Add(ms(at)), schedDelay: ms(sched), commit: t0.Add(ms(commit))}
	}
	for _, tc := range []struct {
		name    string
		samples []batchSample
		want    []time.Duration
	}{
		{"keeps pace", []batchSample{sample(0, 10, 500), sample(1000, 20, 1600), sample(2000, 10, 2900)}, []time.Duration{ms(10), ms(20), ms(10)}},
		{"one long batch", []batchSample{sample(0, 10, 1400), sample(1000, 410, 1900), sample(2000, 10, 2500)},
			// The first delays the next tick by 400ms; the second, recorded
			// as 410ms (400 waiting plus 10 planning), ends in time.
			[]time.Duration{ms(400), ms(410), ms(10)}},
		{"falls behind", []batchSample{
			sample(0, 10, 1200), sample(1000, 210, 2400), sample(2000, 410, 3600),
			sample(3000, 610, 4800), sample(4000, 810, 6000),
			// Tick 5000 was skipped: batch 6000 reads two intervals and
			// takes twice as long.
			sample(6000, 10, 8400),
		}, []time.Duration{ms(200), ms(400), ms(600), ms(800), ms(1000), ms(1400)}},
	} {
		if got := queuedDelays(tc.samples, time.Second); !slices.Equal(got, tc.want) {
			t.Errorf("%s: queued delays %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestJudgeSustain(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	from, to := t0.Add(10*time.Second), t0.Add(20*time.Second)
	sample := func(at int, sched, proc time.Duration) batchSample {
		bt := t0.Add(time.Duration(at) * time.Second)
		return batchSample{time: bt, schedDelay: sched, processing: proc, commit: bt.Add(sched + proc)}
	}
	steady := []batchSample{
		sample(5, 2*time.Second, time.Second), // before the judged half
		sample(11, 10*time.Millisecond, 400*time.Millisecond),
		sample(12, 20*time.Millisecond, 500*time.Millisecond),
	}
	for _, tc := range []struct {
		name    string
		run     SustainRun
		samples []batchSample
		held    bool
		why     string
	}{
		{"held", SustainRun{Rate: 1000, Achieved: 1000}, steady, true, ""},
		{"slow producer", SustainRun{Rate: 1000, Achieved: 900}, steady, false, "the producer reached only 900 records/s"},
		{"no batches", SustainRun{Rate: 1000, Achieved: 1000}, steady[:1], false, "no batch committed in the last half of the window"},
		{"late batch", SustainRun{Rate: 1000, Achieved: 1000}, append(slices.Clone(steady), sample(13, time.Second, 100*time.Millisecond)), false, "scheduling delay reached 1s (interval 1s)"},
		{"one long batch", SustainRun{Rate: 1000, Achieved: 1000}, append(slices.Clone(steady), sample(13, 0, 1800*time.Millisecond)), true, ""},
		{"too long a batch", SustainRun{Rate: 1000, Achieved: 1000}, append(slices.Clone(steady), sample(13, 0, 2100*time.Millisecond)), false,
			"queued as in Spark, scheduling delay would reach 1.1s (interval 1s; longest batch 2.1s)"},
		{"behind", SustainRun{Rate: 1000, Achieved: 1000, Behind: 12}, steady, false, "fell behind: 12 records uncommitted 3s after the producer stopped"},
	} {
		got := judgeSustain(tc.run, tc.samples, from, to, time.Second)
		if got.Held != tc.held || got.Why != tc.why {
			t.Errorf("%s: held %v %q, want %v %q", tc.name, got.Held, got.Why, tc.held, tc.why)
		}
	}
	got := judgeSustain(SustainRun{Rate: 1000, Achieved: 1000}, steady, from, to, time.Second)
	if got.Batches != 2 || got.MaxSchedDelay != 20*time.Millisecond || got.MaxQueuedDelay != 20*time.Millisecond || got.MaxProcessing != 500*time.Millisecond {
		t.Errorf("judged %d batches, max delay %v (queued %v), max processing %v; want 2, 20ms, 20ms, 500ms",
			got.Batches, got.MaxSchedDelay, got.MaxQueuedDelay, got.MaxProcessing)
	}
}

func TestSearchRate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int // rates up to it hold
		start    int
		limit    int
		best     int
		tried    []int
	}{
		{"double then bisect", 300_000, 50_000, 3_200_000, 300_000, []int{50_000, 100_000, 200_000, 400_000, 300_000, 350_000}},
		{"bisect lands below", 230_000, 50_000, 3_200_000, 230_000, []int{50_000, 100_000, 200_000, 400_000, 300_000, 250_000, 230_000}},
		{"up to the limit", 10_000_000, 50_000, 400_000, 400_000, []int{50_000, 100_000, 200_000, 400_000}},
		{"start too high", 20_000, 50_000, 3_200_000, 19_000, []int{50_000, 25_000, 12_500, 19_000, 22_000, 21_000}},
		{"nothing holds", 0, 50_000, 3_200_000, 0, []int{50_000, 25_000, 12_500, 6_250, 3_125}},
	} {
		var tried []int
		bisect := 2
		if tc.name == "bisect lands below" || tc.name == "start too high" {
			bisect = 3
		}
		best, runs, err := SearchRate(context.Background(), tc.start, tc.limit, bisect, func(_ context.Context, rate int) (SustainRun, error) {
			tried = append(tried, rate)
			return SustainRun{Rate: rate, Held: rate <= tc.capacity}, nil
		})
		if err != nil || best != tc.best || !slices.Equal(tried, tc.tried) || len(runs) != len(tried) {
			t.Errorf("%s: best %d, tried %v, %d runs, %v; want %d, %v", tc.name, best, tried, len(runs), err, tc.best, tc.tried)
		}
	}
	boom := errors.New("boom")
	_, _, err := SearchRate(context.Background(), 1000, 8000, 2, func(_ context.Context, rate int) (SustainRun, error) {
		if rate == 4000 {
			return SustainRun{}, boom
		}
		return SustainRun{Rate: rate, Held: true}, nil
	})
	if !errors.Is(err, boom) {
		t.Errorf("error of a run: %v", err)
	}
}

func TestRoundRate(t *testing.T) {
	for in, want := range map[int]int{50: 50, 125: 130, 12_500: 13_000, 18_750: 19_000, 250_000: 250_000, 325_000: 330_000, 1_234_567: 1_200_000} {
		if got := roundRate(in); got != want {
			t.Errorf("roundRate(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tsluice\nVmPeak:\t 2206876 kB\nVmHWM:\t   80188 kB\nVmRSS:\t   70000 kB\n"
	if got, err := parseVmHWM(strings.NewReader(status), 42); err != nil || got != 80188<<10 {
		t.Errorf("parseVmHWM = %d, %v; want %d", got, err, 80188<<10)
	}
	if _, err := parseVmHWM(strings.NewReader("Name:\tx\n"), 42); err == nil || err.Error() != "peak RSS of process 42: no VmHWM in its status" {
		t.Errorf("no VmHWM: %v", err)
	}
}

func TestHuman(t *testing.T) {
	for v, want := range map[float64]string{950: "950", 12_345: "12k", 787_000: "787k", 1_050_000: "1.05M"} {
		if got := Human(v); got != want {
			t.Errorf("Human(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestOverheadTopicsAndLayout(t *testing.T) {
	one := OverheadTopics("big", 1, 10000)
	if !slices.Equal(one, []OverheadTopic{{"big", 10000}}) {
		t.Errorf("one topic: %v", one)
	}
	many := OverheadTopics("t", 100, 100)
	if len(many) != 100 || many[0] != (OverheadTopic{"t-00", 100}) || many[99] != (OverheadTopic{"t-99", 100}) {
		t.Errorf("100 topics: %d, first %v, last %v", len(many), many[0], many[len(many)-1])
	}
	if got := totalPartitions(many); got != 10000 {
		t.Errorf("total partitions of 100x100: %d", got)
	}
	if got := OverheadTopics("t", 11, 1); got[0].Name != "t-00" || got[10].Name != "t-10" {
		t.Errorf("11 topics: %v ... %v", got[0], got[10])
	}
	for _, tc := range []struct {
		topics []OverheadTopic
		want   string
	}{
		{one, "10000"},
		{many, "100x100"},
		{[]OverheadTopic{{"a", 8}, {"b", 16}}, "8+16"},
	} {
		if got := OverheadLayout(tc.topics); got != tc.want {
			t.Errorf("OverheadLayout(%d topics) = %q, want %q", len(tc.topics), got, tc.want)
		}
	}
}

func TestParseLayouts(t *testing.T) {
	got, err := ParseLayouts("1x10000, 100x100")
	if err != nil || !slices.Equal(got, []Layout{{1, 10000}, {100, 100}}) {
		t.Errorf("ParseLayouts = %v, %v", got, err)
	}
	if got[1].String() != "100x100" {
		t.Errorf("String() = %q", got[1].String())
	}
	for _, bad := range []string{"", "10000", "0x10", "2x0", "x5", "2x", "ax3", "2x3x4", "1x99999999999"} {
		if _, err := ParseLayouts(bad); err == nil || !strings.Contains(err.Error(), "want TOPICSxPARTITIONS") {
			t.Errorf("ParseLayouts(%q) = %v, want an error naming the format", bad, err)
		}
	}
	if _, err := ParseLayouts("1x8,3y4"); err == nil || !strings.Contains(err.Error(), `layout "3y4"`) {
		t.Errorf("bad second layout: %v", err)
	}
}

func TestOverheadStop(t *testing.T) {
	const budget = time.Minute
	for _, tc := range []struct {
		name        string
		elapsed     time.Duration
		budget      time.Duration
		seen, want  int64
		stop, boxed bool
	}{
		{"running", 10 * time.Second, budget, 50, 111, false, false},
		{"all committed", 10 * time.Second, budget, 111, 111, true, false},
		{"all committed late", 3 * time.Minute, budget, 111, 111, true, false},
		{"budget spent", 61 * time.Second, budget, 40, 111, true, true},
		{"budget spent, too few yet", 61 * time.Second, budget, 3, 111, false, false},
		{"twice the budget, too few", 121 * time.Second, budget, 1, 111, true, true},
		{"twice the budget, none", 121 * time.Second, budget, 0, 111, true, true},
		{"no budget", time.Hour, 0, 3, 111, false, false},
	} {
		stop, boxed := overheadStop(tc.elapsed, tc.budget, tc.seen, tc.want)
		if stop != tc.stop || boxed != tc.boxed {
			t.Errorf("%s: stop %v time-boxed %v, want %v %v", tc.name, stop, boxed, tc.stop, tc.boxed)
		}
	}
}

func TestSharePartitions(t *testing.T) {
	blocks := SharePartitions(1024, 8)
	if len(blocks) != 8 {
		t.Fatalf("1,024 partitions over 8 consumers: %d blocks", len(blocks))
	}
	var all []int32
	for i, b := range blocks {
		if len(b) != 128 || b[0] != int32(128*i) {
			t.Errorf("block %d: %d partitions from %d, want 128 from %d", i, len(b), b[0], 128*i)
		}
		all = append(all, b...)
	}
	for i, p := range all {
		if p != int32(i) {
			t.Fatalf("partition %d is at %d of the blocks", p, i)
		}
	}
	for _, tc := range []struct {
		parts     int32
		consumers int
		sizes     []int
	}{
		{10, 4, []int{3, 3, 2, 2}},
		{8, 8, []int{1, 1, 1, 1, 1, 1, 1, 1}},
		{3, 8, []int{1, 1, 1}},
		{5, 0, []int{5}},
		{0, 4, nil},
	} {
		var sizes []int
		for _, b := range SharePartitions(tc.parts, tc.consumers) {
			sizes = append(sizes, len(b))
		}
		if !slices.Equal(sizes, tc.sizes) {
			t.Errorf("SharePartitions(%d, %d) sizes %v, want %v", tc.parts, tc.consumers, sizes, tc.sizes)
		}
	}
	for _, tc := range []struct {
		ps   []int32
		want string
	}{{[]int32{3}, "partition 3"}, {[]int32{0, 1, 2}, "partitions 0-2"}, {[]int32{1, 5}, "partitions [1 5]"}} {
		if got := partitionList(tc.ps); got != tc.want {
			t.Errorf("partitionList(%v) = %q, want %q", tc.ps, got, tc.want)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command with a space and a bracket; utime 1234, stime 56.
	stat := "4242 (sluice (x) w) S 1 4242 4242 0 -1 4194560 31337 0 3 0 1234 56 0 0 20 0 14 0 8765 1830000000 30000 18446744073709551615\n"
	if got, err := parseStatCPU(stat, 4242); err != nil || got != 12900*time.Millisecond {
		t.Errorf("parseStatCPU = %v, %v; want 12.9s", got, err)
	}
	if _, err := parseStatCPU("4242 (x) S 1 2", 4242); err == nil || err.Error() != "CPU time of process 4242: 3 fields after the command, want at least 13" {
		t.Errorf("short stat: err = %v", err)
	}
	// This process's own CPU time grows while it spins.
	var self time.Duration
	for deadline := time.Now().Add(10 * time.Second); self == 0 && time.Now().Before(deadline); {
		var err error
		if self, err = CPUTime(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if self <= 0 {
		t.Errorf("CPUTime(self) = %v after 10s of spinning; want > 0", self)
	}
}
