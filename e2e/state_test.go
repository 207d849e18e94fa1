package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// statefulJob counts records per key into running totals and into sliding
// windows of 4 batches every 2 batches.
func statefulJob(brokers, topic string) *sluicev1.JobSpec {
	spec := chaosJob(brokers, topic)
	spec.Name = "stateful-count"
	spec.Aggregate = &sluicev1.Aggregate{
		Running: true,
		Window:  &sluicev1.AggregateWindow{Length: durationpb.New(800 * time.Millisecond), Slide: durationpb.New(400 * time.Millisecond)},
	}
	return spec
}

// verifyState waits until the job committed the stream's end offsets, then
// checks the running totals against the ground truth, and every window,
// emitted or open, against the batches whose batch time falls in it: each
// exactly once, with exactly those batches' counts.
func verifyState(t *testing.T, c *client.Client, job string, s *stream, timeout time.Duration) {
	t.Helper()
	tc := &testCluster{t: t, Client: c}
	s.mu.Lock()
	ends, want := maps.Clone(s.ends), maps.Clone(s.counts)
	s.mu.Unlock()
	tc.waitOffsets(job, ends, timeout)
	ctx := context.Background()
	// Idle batches emit the last windows: once none is open, the job is
	// quiet and what follows reads one consistent picture.
	st := waitWindowsClosed(t, c, job, timeout)
	if got := countsOf(st.GetTotals()); !maps.Equal(got, want) {
		t.Fatalf("running totals (as of batch %d) differ from the ground truth:\n got %v\nwant %v", st.GetBatchId(), got, want)
	}
	if merged := tc.mergedCounts(job); !maps.Equal(merged, want) {
		t.Fatalf("merged batch results %v differ from the ground truth %v", merged, want)
	}

	// Every batch's counts, by batch time.
	batches, err := c.Batches(ctx, job, 100000)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Results(ctx, job, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetPruned() {
		t.Fatal("results were pruned: the check needs every batch")
	}
	byID := map[int64]*sluicev1.BatchResult{}
	emitted := map[int64]*sluicev1.WindowResult{}
	for _, r := range res.GetResults() {
		byID[r.GetBatchId()] = r
		for _, w := range r.GetWindows() {
			start := w.GetStart().AsTime().UnixMilli()
			if emitted[start] != nil {
				t.Fatalf("window starting %d emitted twice (again by batch %d)", start, r.GetBatchId())
			}
			emitted[start] = w
		}
	}
	windows := maps.Clone(emitted)
	for _, w := range st.GetOpenWindows() {
		start := w.GetStart().AsTime().UnixMilli()
		if windows[start] != nil {
			t.Fatalf("window starting %d is both emitted and open", start)
		}
		windows[start] = w
	}
	expect := map[int64][][]*sluicev1.KeyAggregate{}
	for _, b := range batches {
		r := byID[b.GetId()]
		if b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED || len(r.GetAggregates()) == 0 {
			continue
		}
		bt := b.GetBatchTime().AsTime().UnixMilli()
		for start := bt - bt%400 - 400; start <= bt; start += 400 {
			if bt < start+800 {
				expect[start] = append(expect[start], r.GetAggregates())
			}
		}
	}
	if len(windows) != len(expect) {
		t.Fatalf("%d windows (%d emitted), want %d: one per window holding a batch", len(windows), len(emitted), len(expect))
	}
	for start, parts := range expect {
		w := windows[start]
		if w == nil {
			t.Fatalf("no window starting %d", start)
		}
		if got, want := countsOf(w.GetAggregates()), countsOf(steps.Merge(parts...)); !maps.Equal(got, want) {
			t.Fatalf("window %d counts %v, want %v (its batches')", start, got, want)
		}
	}
	t.Logf("%d batches, %d windows (%d emitted), %d keys; totals exact", len(batches), len(windows), len(emitted), len(want))
}

func countsOf(aggs []*sluicev1.KeyAggregate) map[string]int64 {
	m := make(map[string]int64, len(aggs))
	for _, a := range aggs {
		m[a.GetKey()] = a.GetCount()
	}
	return m
}

// TestStateExactThroughKills runs a job with running totals and sliding
// windows while a worker is killed (kill -9) mid-task and the coordinator
// is killed between a batch's dispatch and its commit, and again just
// after a commit: the totals equal the ground truth and every window holds
// exactly its batches, none lost, doubled or emitted twice.
func TestStateExactThroughKills(t *testing.T) {
	for _, point := range []string{"before-commit", "after-commit"} {
		t.Run(point, func(t *testing.T) {
			const topic = "stateful"
			pc := newProcCluster(t, 1)
			createTopic(t, pc.brokers, topic, 4)
			coord := pc.startCoordinator(0, point+":3")
			killed := pc.startWorker("w-killed", "mid-task:2:kill")
			pc.startWorker("w1", "")
			c := pc.client()
			waitServing(t, c)
			s := newStream()
			s.produce(t, pc.brokers, topic, 4, 6000, 0)
			spec := statefulJob(pc.brokers, topic)
			if _, err := c.Submit(context.Background(), spec); err != nil {
				t.Fatal(err)
			}
			killed.waitExit(t, 60*time.Second)
			coord.waitExit(t, 60*time.Second)
			if !strings.Contains(coord.out.String(), "failpoint "+point+":3 reached") {
				t.Fatalf("coordinator exited but not at the failpoint:\n%s", lastLines(coord.out.String(), 20))
			}
			pc.startCoordinator(0, "")
			s.produce(t, pc.brokers, topic, 4, 3000, 3000)
			verifyState(t, c, spec.GetName(), s, 60*time.Second)
		})
	}
}

// TestStateKeyCap: a job whose state outgrows limits.max_state_keys fails
// with a message naming the cap and what to do.
func TestStateKeyCap(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{topics: []string{"keys"}, partitions: 2})
	cl := tc.producer()
	for i := range 50 {
		cl.Produce(context.Background(), &kgo.Record{Topic: "keys", Partition: int32(i % 2), Key: []byte(fmt.Sprintf("k%d", i))}, nil)
	}
	if err := cl.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	spec := countJob("capped", tc.Brokers, "keys")
	spec.Aggregate.Running = true
	spec.Limits = &sluicev1.Limits{MaxStateKeys: 20}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := tc.Client.Job(context.Background(), "capped")
		if err != nil {
			t.Fatal(err)
		}
		if j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			for _, want := range []string{"above limits.max_state_keys 20", "raise limits.max_state_keys (at most 20000)"} {
				if !strings.Contains(j.GetMessage(), want) {
					t.Fatalf("job message %q, want it to contain %q", j.GetMessage(), want)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %v not failed within 30s", j)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eventStream produces records with chosen event times and keeps the ground
// truth: the counts per (window start, key) of records that are not late,
// and the number of late ones.
type eventStream struct {
	brokers, topic string
	parts          int32
	n              int
	windows        map[int64]map[string]int64
	late           int64
	ends           map[string]int64
}

// produce writes n records with event times in [from, from+span) ms, the
// last one at from+span-1; late says they are all late.
func (s *eventStream) produce(t *testing.T, from, span int64, n int, late bool) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range n {
		ts := from + int64(i*7919)%span
		if i == n-1 {
			ts = from + span - 1
		}
		key := fmt.Sprintf("k%d", (s.n*3+s.n/7)%13)
		p := int32(s.n) % s.parts
		s.n++
		recs = append(recs, &kgo.Record{Topic: s.topic, Partition: p, Key: []byte(key), Value: []byte("v"), Timestamp: time.UnixMilli(ts)})
		s.ends[fmt.Sprintf("%s/%d", s.topic, p)]++
		if late {
			s.late++
			continue
		}
		start := ts - ts%10000
		if s.windows[start] == nil {
			s.windows[start] = map[string]int64{}
		}
		s.windows[start][key]++
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestEventTimeWindowsExactThroughKills runs tumbling 10s event-time windows
// with a 10s watermark delay over records with chosen timestamps, produced
// a window at a time, while a worker is killed mid-task and the
// coordinator is killed at the third commit (before it, so the batch is
// replayed, or just after it). Every window is emitted once with exactly
// its records; records for emitted windows are counted late and dropped.
func TestEventTimeWindowsExactThroughKills(t *testing.T) {
	for _, point := range []string{"before-commit", "after-commit"} {
		t.Run(point, func(t *testing.T) {
			const topic = "events"
			pc := newProcCluster(t, 1)
			createTopic(t, pc.brokers, topic, 4)
			coord := pc.startCoordinator(0, point+":3")
			pc.startWorker("w-killed", "mid-task:2:kill")
			pc.startWorker("w1", "")
			c := pc.client()
			waitServing(t, c)
			spec := chaosJob(pc.brokers, topic)
			spec.Name = "event-windows"
			spec.Aggregate = &sluicev1.Aggregate{Window: &sluicev1.AggregateWindow{
				Length:    durationpb.New(10 * time.Second),
				EventTime: &sluicev1.EventTime{WatermarkDelay: durationpb.New(10 * time.Second)},
			}}
			tc := &testCluster{t: t, Client: c}
			s := &eventStream{brokers: pc.brokers, topic: topic, parts: 4, windows: map[int64]map[string]int64{}, ends: map[string]int64{}}
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

			s.produce(t, t0, 10000, 2000, false) // window 0: batches 1 and 2
			if _, err := c.Submit(context.Background(), spec); err != nil {
				t.Fatal(err)
			}
			tc.waitOffsets(spec.GetName(), maps.Clone(s.ends), 60*time.Second)
			s.produce(t, t0+10000, 10000, 1000, false) // window 1: batch 3, at the crash
			coord.waitExit(t, 60*time.Second)
			if !strings.Contains(coord.out.String(), "failpoint "+point+":3 reached") {
				t.Fatalf("coordinator exited but not at the failpoint:\n%s", lastLines(coord.out.String(), 20))
			}
			pc.startCoordinator(0, "")
			tc.waitOffsets(spec.GetName(), maps.Clone(s.ends), 60*time.Second)
			// The watermark is now t0+9999: nothing is emitted yet.
			s.produce(t, t0+20000, 10000, 1000, false) // window 2; watermark t0+19999: window 0 (ends t0+10000) emitted
			tc.waitOffsets(spec.GetName(), maps.Clone(s.ends), 60*time.Second)
			s.produce(t, t0+30000, 10000, 1000, false) // window 3; watermark t0+29999: window 1 emitted
			tc.waitOffsets(spec.GetName(), maps.Clone(s.ends), 60*time.Second)
			s.produce(t, t0, 10000, 300, true)       // window 0 again: late
			s.produce(t, t0+20000, 5000, 200, false) // window 2 is still open: counted
			tc.waitOffsets(spec.GetName(), maps.Clone(s.ends), 60*time.Second)
			s.produce(t, t0+40000, 10000, 100, false) // watermark t0+39999: window 2 emitted
			tc.waitOffsets(spec.GetName(), maps.Clone(s.ends), 60*time.Second)

			ctx := context.Background()
			res, err := c.Results(ctx, spec.GetName(), 0, 0, false)
			if err != nil {
				t.Fatal(err)
			}
			got := map[int64]map[string]int64{}
			for _, r := range res.GetResults() {
				for _, w := range r.GetWindows() {
					start := w.GetStart().AsTime().UnixMilli() - t0
					if got[start] != nil {
						t.Fatalf("window %d emitted twice (again by batch %d)", start, r.GetBatchId())
					}
					if w.GetEnd().AsTime().UnixMilli()-t0 != start+10000 {
						t.Fatalf("window %d ends at %v", start, w.GetEnd().AsTime())
					}
					got[start] = countsOf(w.GetAggregates())
				}
			}
			st, err := c.State(ctx, spec.GetName())
			if err != nil {
				t.Fatal(err)
			}
			// Windows end at or before the watermark t0+39999 are emitted:
			// those at 30s and 40s are open.
			var open []int64
			for _, w := range st.GetOpenWindows() {
				start := w.GetStart().AsTime().UnixMilli() - t0
				open = append(open, start)
				if got[start] != nil {
					t.Fatalf("window %d is both emitted and open", start)
				}
				got[start] = countsOf(w.GetAggregates())
			}
			if fmt.Sprint(open) != "[30000 40000]" {
				t.Fatalf("open windows start at %v, want [30000 40000]", open)
			}
			want := map[int64]map[string]int64{}
			for start, counts := range s.windows {
				want[start-t0] = counts
			}
			if len(got) != len(want) {
				t.Fatalf("windows at %v, want %v", slicesSorted(got), slicesSorted(want))
			}
			for start, counts := range want {
				if !maps.Equal(got[start], counts) {
					t.Fatalf("window %d: counts %v, want %v", start, got[start], counts)
				}
			}
			batches, err := c.Batches(ctx, spec.GetName(), 100000)
			if err != nil {
				t.Fatal(err)
			}
			var late int64
			for _, b := range batches {
				late += b.GetMetrics().GetRecordsLate()
			}
			if late != s.late {
				t.Fatalf("records_late over the batches = %d, want %d", late, s.late)
			}
			t.Logf("%d batches, %d windows exact, %d late records dropped", len(batches), len(want), late)
		})
	}
}

func slicesSorted[V any](m map[int64]V) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// update is one record of an update stream.
type update struct {
	key, batch string
	value      struct {
		Window *struct{ Start, End time.Time } `json:"window"`
		Count  int64                           `json:"count"`
	}
}

// readUpdates reads every committed record of the topic (read_committed)
// until it stops growing for a while after at least min records.
func readUpdates(t *testing.T, brokers, topic string, min int) []update {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []update
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			u := update{key: string(r.Key)}
			for _, h := range r.Headers {
				if h.Key == "sluice-batch" {
					u.batch = string(h.Value)
				}
			}
			if err := json.Unmarshal(r.Value, &u.value); err != nil {
				t.Fatalf("update %q: %v", r.Value, err)
			}
			out = append(out, u)
		})
		if n == 0 && len(out) >= min {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("read %d updates of %s within 60s, want at least %d", len(out), topic, min)
		}
	}
}

// TestUpdateStreamExactThroughKills writes running totals and tumbling
// windows to a Kafka sink while a worker is killed mid-task and the
// coordinator is killed inside the update transaction of a batch already
// committed in etcd: every changed total and every window is in the topic
// exactly once, and the last total of each key is the ground truth.
func TestUpdateStreamExactThroughKills(t *testing.T) {
	const topic, sinkTopic = "upd-src", "upd-sink"
	pc := newProcCluster(t, 1)
	createTopic(t, pc.brokers, topic, 4)
	createTopic(t, pc.brokers, sinkTopic, 3)
	coord := pc.startCoordinator(0, "before-update-commit:3")
	pc.startWorker("w-killed", "mid-task:2:kill")
	pc.startWorker("w1", "")
	c := pc.client()
	waitServing(t, c)
	s := newStream()
	s.produce(t, pc.brokers, topic, 4, 6000, 0)
	spec := statefulJob(pc.brokers, topic)
	spec.Name = "update-stream"
	spec.Aggregate.Window.Slide = nil // tumbling: a window per 800ms
	spec.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: sinkTopic}}}
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	coord.waitExit(t, 60*time.Second)
	if !strings.Contains(coord.out.String(), "failpoint before-update-commit:3 reached") {
		t.Fatalf("coordinator exited but not at the failpoint:\n%s", lastLines(coord.out.String(), 20))
	}
	pc.startCoordinator(0, "")
	s.produce(t, pc.brokers, topic, 4, 3000, 3000)
	tc := &testCluster{t: t, Client: c}
	s.mu.Lock()
	ends, want := maps.Clone(s.ends), maps.Clone(s.counts)
	s.mu.Unlock()
	tc.waitOffsets(spec.GetName(), ends, 60*time.Second)
	waitWindowsClosed(t, c, spec.GetName(), 60*time.Second)

	// What the stored results say was emitted.
	ctx := context.Background()
	res, err := c.Results(ctx, spec.GetName(), 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	wantTotals := map[string]int64{} // "batch/key" -> total
	wantWindows := map[string]int64{}
	for _, r := range res.GetResults() {
		for _, a := range r.GetTotals() {
			wantTotals[fmt.Sprintf("%d/%s", r.GetBatchId(), a.GetKey())] = a.GetCount()
		}
		for _, w := range r.GetWindows() {
			for _, a := range w.GetAggregates() {
				wantWindows[fmt.Sprintf("%d/%s", w.GetStart().AsTime().UnixMilli(), a.GetKey())] = a.GetCount()
			}
		}
	}
	ups := readUpdates(t, pc.brokers, sinkTopic, len(wantTotals)+len(wantWindows))
	gotTotals, gotWindows := map[string]int64{}, map[string]int64{}
	last := map[string]int64{}
	for _, u := range ups {
		var k string
		var m map[string]int64
		if u.value.Window != nil {
			k, m = fmt.Sprintf("%d/%s", u.value.Window.Start.UnixMilli(), u.key), gotWindows
		} else {
			k, m = u.batch+"/"+u.key, gotTotals
			last[u.key] = u.value.Count // a key's updates are in one partition, in order
		}
		if _, dup := m[k]; dup {
			t.Fatalf("update %s written twice", k)
		}
		m[k] = u.value.Count
	}
	if !maps.Equal(gotTotals, wantTotals) {
		t.Fatalf("total updates differ from the committed batches': got %d, want %d", len(gotTotals), len(wantTotals))
	}
	if !maps.Equal(gotWindows, wantWindows) {
		t.Fatalf("window updates differ from the emitted windows: got %d, want %d", len(gotWindows), len(wantWindows))
	}
	if !maps.Equal(last, want) {
		t.Fatalf("last total per key %v, want the ground truth %v", last, want)
	}
	t.Logf("%d total updates and %d window updates, each once; last totals exact", len(gotTotals), len(gotWindows))
}

// TestStateUpdateResetDelete: an update that changes a stateful job's
// aggregate is refused naming the field (one that changes only its steps is
// not); a reset drops the state, so totals recount from the reset offsets
// instead of doubling; a delete deletes it.
func TestStateUpdateResetDelete(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{topics: []string{"resets"}, partitions: 2})
	ctx := context.Background()
	cl := tc.producer()
	want := map[string]int64{}
	for i := range 300 {
		k := fmt.Sprintf("k%d", i%7)
		cl.Produce(ctx, &kgo.Record{Topic: "resets", Partition: int32(i % 2), Key: []byte(k)}, nil)
		want[k]++
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ends := map[string]int64{"resets/0": 150, "resets/1": 150}
	spec := countJob("totals", tc.Brokers, "resets")
	spec.Aggregate.Running = true
	if _, err := tc.Client.Submit(ctx, spec); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets("totals", ends, 30*time.Second)
	checkTotals := func(when string) {
		t.Helper()
		st, err := tc.Client.State(ctx, "totals")
		if err != nil {
			t.Fatal(err)
		}
		if got := countsOf(st.GetTotals()); !maps.Equal(got, want) {
			t.Fatalf("%s: totals %v, want %v", when, got, want)
		}
	}
	checkTotals("first run")

	changed := proto.Clone(spec).(*sluicev1.JobSpec)
	changed.Aggregate.Key = `"all"`
	_, err := tc.Client.Update(ctx, changed)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "aggregate:") || !strings.Contains(st.Message(), "reset its offsets") {
		t.Fatalf("update changing the aggregate = %v, want InvalidArgument naming aggregate", err)
	}
	stepsOnly := proto.Clone(spec).(*sluicev1.JobSpec)
	stepsOnly.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "true"}}}
	if _, err := tc.Client.Update(ctx, stepsOnly); err != nil {
		t.Fatalf("update changing only the steps: %v", err)
	}

	if _, err := tc.Client.Stop(ctx, "totals"); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Client.ResetOffsets(ctx, "totals", &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}}); err != nil {
		t.Fatal(err)
	}
	if st, err := tc.Client.State(ctx, "totals"); err != nil || st.GetBatchId() != 0 || len(st.GetTotals()) != 0 {
		t.Fatalf("state after the reset = %v, %v; want it empty", st, err)
	}
	// With the state dropped, the aggregate may change.
	if _, err := tc.Client.Update(ctx, changed); err != nil {
		t.Fatalf("update changing the aggregate after a reset: %v", err)
	}
	if _, err := tc.Client.Resume(ctx, "totals"); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets("totals", ends, 30*time.Second)
	want = map[string]int64{"all": 300} // recounted once from the reset offsets, not doubled
	checkTotals("after the reset")

	if err := tc.Client.Delete(ctx, "totals"); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Client.State(ctx, "totals"); status.Code(err) != codes.NotFound {
		t.Fatalf("state of a deleted job: %v, want NotFound", err)
	}
}

// TestProcessingWindowEmittedWhenIdle: a processing-time window is emitted
// once its last interval passed even when no record arrives after it (an
// empty batch carries it), and exactly once.
func TestProcessingWindowEmittedWhenIdle(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{topics: []string{"idle"}, partitions: 2})
	ctx := context.Background()
	spec := countJob("idle-windows", tc.Brokers, "idle")
	spec.Aggregate.Window = &sluicev1.AggregateWindow{Length: durationpb.New(300 * time.Millisecond)}
	if _, err := tc.Client.Submit(ctx, spec); err != nil {
		t.Fatal(err)
	}
	cl := tc.producer()
	want := map[string]int64{}
	for i := range 40 {
		k := fmt.Sprintf("k%d", i%3)
		cl.Produce(ctx, &kgo.Record{Topic: "idle", Partition: int32(i % 2), Key: []byte(k)}, nil)
		want[k]++
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets("idle-windows", map[string]int64{"idle/0": 20, "idle/1": 20}, 30*time.Second)
	// No record follows: the windows holding the batches must still close.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := tc.Client.State(ctx, "idle-windows")
		if err != nil {
			t.Fatal(err)
		}
		if len(st.GetOpenWindows()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("windows still open 30s after the last record: %v", st.GetOpenWindows())
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, err := tc.Client.Results(ctx, "idle-windows", 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	seen := map[int64]bool{}
	for _, r := range res.GetResults() {
		for _, w := range r.GetWindows() {
			start := w.GetStart().AsTime().UnixMilli()
			if seen[start] {
				t.Fatalf("window %d emitted twice", start)
			}
			seen[start] = true
			for k, n := range countsOf(w.GetAggregates()) {
				got[k] += n
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("tumbling windows sum to %v, want every record once: %v", got, want)
	}
	// Idle batches stop once nothing is open: the batch count settles.
	b1, _ := tc.Client.Batches(ctx, "idle-windows", 1000)
	time.Sleep(500 * time.Millisecond)
	b2, _ := tc.Client.Batches(ctx, "idle-windows", 1000)
	if len(b2) != len(b1) {
		t.Fatalf("batches went on from %d to %d with nothing to read or emit", len(b1), len(b2))
	}
}

// waitWindowsClosed waits until the job's processing-time windows are all
// emitted (idle batches emit the last ones) and returns its state then.
func waitWindowsClosed(t *testing.T, c *client.Client, job string, timeout time.Duration) *sluicev1.GetStateResponse {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := c.State(context.Background(), job)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.GetOpenWindows()) == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("windows of %s still open after %s: %v", job, timeout, st.GetOpenWindows())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
