package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
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

	st, err := c.State(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
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
