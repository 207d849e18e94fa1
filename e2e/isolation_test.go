package e2e

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// TestNonUTF8KeysDoNotWedgeTheCluster: keys that are not valid UTF-8 used to
// end the worker's stream (protobuf refuses such strings), and the task was
// re-run on every worker in turn, forever, starving every other job. They
// are counted exactly, each with its exact bytes, and another job runs on.
func TestNonUTF8KeysDoNotWedgeTheCluster(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: 2, topics: []string{"bytes", "plain"}})
	pr := tc.producer()
	keys := []string{"\xff\xfe", "\xff", `\xff`, "ok", "caf\xc3\xa9"}
	want := map[string]int64{}
	var recs []*kgo.Record
	for i := range 50 {
		k := keys[i%len(keys)]
		want[k]++
		recs = append(recs, &kgo.Record{Topic: "bytes", Partition: int32(i % 2), Key: []byte(k), Value: []byte("v")})
	}
	if err := pr.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	plain := newLedger("plain", 2)
	plain.produce(t, pr, 40, nil)

	for _, s := range []*sluicev1.JobSpec{countJob("bytes", tc.Brokers, "bytes"), countJob("plain", tc.Brokers, "plain")} {
		if _, err := tc.Client.Submit(context.Background(), s); err != nil {
			t.Fatalf("submit %s: %v", s.GetName(), err)
		}
	}
	tc.waitOffsets("bytes", map[string]int64{"bytes/0": 25, "bytes/1": 25}, 30*time.Second)
	tc.waitOffsets("plain", plain.ends(), 30*time.Second)

	resp, err := tc.Client.Results(context.Background(), "bytes", 0, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, a := range resp.GetMerged() {
		k := a.GetKey()
		if b := a.GetKeyBytes(); b != nil {
			k = string(b)
		}
		if _, dup := got[k]; dup {
			t.Errorf("key %q appears twice in the merged results", k)
		}
		got[k] = a.GetCount()
	}
	if !maps.Equal(got, want) {
		t.Errorf("counts by exact key:\n got %v\nwant %v", got, want)
	}
	for _, a := range resp.GetMerged() {
		if string(a.GetKeyBytes()) == "\xff\xfe" && a.GetKey() != `\xff\xfe` {
			t.Errorf("key \\xff\\xfe shown as %q, want the escaped form", a.GetKey())
		}
	}
	if got := tc.mergedCounts("plain"); !maps.Equal(got, plain.counts(nil)) {
		t.Errorf("the other job's counts %v, want %v", got, plain.counts(nil))
	}
}

// TestStopResetResumeWithBatchInFlight: a job is stopped while a task of
// batch 1 is still running on a worker that is slow to report, its offsets
// are reset, and it resumes. The new batch 1 has other ranges; the old
// task's result must not be taken for it. The counts are exactly those of
// the offsets after the reset.
func TestStopResetResumeWithBatchInFlight(t *testing.T) {
	const topic, parts = "inflight", 2
	held := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic},
		worker: func(c *worker.Config) {
			c.BeforeResult = func(task *sluicev1.Task) {
				if task.GetKey().GetJob() != "inflight" {
					return
				}
				first := false
				once.Do(func() { first = true })
				if first {
					close(held)
					<-release // deaf to cancels: a worker slow to report
				}
			}
		}})
	l := newLedger(topic, parts)
	l.produce(t, tc.producer(), 100, nil)
	spec := countJob("inflight", tc.Brokers, topic)
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("batch 1 never reached a worker")
	}
	if _, err := tc.Client.Stop(context.Background(), spec.GetName()); err != nil {
		t.Fatal(err)
	}
	reset := map[string]int64{topic + "/0": 10, topic + "/1": 30}
	var explicit []*sluicev1.PartitionOffset
	for p := range int32(parts) {
		explicit = append(explicit, &sluicev1.PartitionOffset{Topic: topic, Partition: p, Offset: reset[fmt.Sprintf("%s/%d", topic, p)]})
	}
	if _, err := tc.Client.ResetOffsets(context.Background(), spec.GetName(), &sluicev1.StartingOffsets{
		Kind: &sluicev1.StartingOffsets_Explicit{Explicit: &sluicev1.ExplicitOffsets{Offsets: explicit}},
	}); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if _, err := tc.Client.Resume(context.Background(), spec.GetName()); err != nil {
		t.Fatal(err)
	}
	// Let the new batch 1 be dispatched, then let the old task report.
	time.Sleep(300 * time.Millisecond)
	close(release)
	tc.waitOffsets(spec.GetName(), l.ends(), 30*time.Second)

	want := l.counts(func(p int32, off int64) bool { return off >= reset[fmt.Sprintf("%s/%d", topic, p)] })
	if got := tc.mergedCounts(spec.GetName()); !maps.Equal(got, want) {
		t.Fatalf("counts after the reset:\n got %v\nwant %v", got, want)
	}
	for _, b := range batchesAsc(t, tc.Client, spec.GetName()) {
		var in int64
		for _, r := range b.GetRanges() {
			in += r.GetUntilOffset() - r.GetFromOffset()
		}
		if b.GetMetrics().GetRecordsIn() != in {
			t.Errorf("batch %d: records in %d, but its ranges hold %d", b.GetId(), b.GetMetrics().GetRecordsIn(), in)
		}
	}
}
