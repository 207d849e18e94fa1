package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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

// TestChangeWithBatchInFlight: a job is changed while a task of batch 1
// is still running on a worker that is slow to report (and deaf to the
// cancel): stopped, reset and resumed; updated with another filter; or
// deleted and submitted again from other offsets. The old task's result must
// not be taken for the new batch: the counts are exactly those the job asks
// for after the change.
func TestChangeWithBatchInFlight(t *testing.T) {
	const topic, parts = "inflight", 2
	from := map[string]int64{topic + "/0": 10, topic + "/1": 30}
	explicit := &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{Explicit: &sluicev1.ExplicitOffsets{Offsets: []*sluicev1.PartitionOffset{
		{Topic: topic, Partition: 0, Offset: from[topic+"/0"]}, {Topic: topic, Partition: 1, Offset: from[topic+"/1"]},
	}}}}
	afterReset := func(p int32, off int64) bool { return off >= from[fmt.Sprintf("%s/%d", topic, p)] }
	for _, tt := range []struct {
		name   string
		change func(t *testing.T, tc *testCluster, spec *sluicev1.JobSpec)
		keep   func(l *ledger) func(p int32, off int64) bool
	}{{
		name: "stop-reset-resume",
		change: func(t *testing.T, tc *testCluster, spec *sluicev1.JobSpec) {
			if _, err := tc.Client.Stop(context.Background(), spec.GetName()); err != nil {
				t.Fatal(err)
			}
			if _, err := tc.Client.ResetOffsets(context.Background(), spec.GetName(), explicit); err != nil {
				t.Fatalf("reset: %v", err)
			}
			if _, err := tc.Client.Resume(context.Background(), spec.GetName()); err != nil {
				t.Fatal(err)
			}
		},
		keep: func(*ledger) func(int32, int64) bool { return afterReset },
	}, {
		name: "update",
		change: func(t *testing.T, tc *testCluster, spec *sluicev1.JobSpec) {
			updated := proto.CloneOf(spec)
			updated.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: `string(key) != "k01"`}}}
			if _, err := tc.Client.Update(context.Background(), updated); err != nil {
				t.Fatalf("update: %v", err)
			}
		},
		keep: func(l *ledger) func(int32, int64) bool {
			return func(p int32, off int64) bool { return l.keys[p][off] != "k01" }
		},
	}, {
		name: "delete-resubmit",
		change: func(t *testing.T, tc *testCluster, spec *sluicev1.JobSpec) {
			if err := tc.Client.Delete(context.Background(), spec.GetName()); err != nil {
				t.Fatal(err)
			}
			again := proto.CloneOf(spec)
			again.Source.StartingOffsets = explicit
			if _, err := tc.Client.Submit(context.Background(), again); err != nil {
				t.Fatalf("submit again: %v", err)
			}
		},
		keep: func(*ledger) func(int32, int64) bool { return afterReset },
	}} {
		t.Run(tt.name, func(t *testing.T) {
			held := make(chan struct{})
			release := make(chan struct{})
			var once sync.Once
			tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic},
				worker: func(c *worker.Config) {
					c.BeforeResult = func(task *sluicev1.Task) {
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
			tt.change(t, tc, spec)
			// Let the new batch 1 be dispatched, then let the old task report.
			time.Sleep(300 * time.Millisecond)
			close(release)
			tc.waitOffsets(spec.GetName(), l.ends(), 30*time.Second)

			if got, want := tc.mergedCounts(spec.GetName()), l.counts(tt.keep(l)); !maps.Equal(got, want) {
				t.Fatalf("counts after the change:\n got %v\nwant %v", got, want)
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
		})
	}
}

// TestRunawayExpressionFailsItsJobAlone: an expression that cannot finish
// on any record is refused at submit; one that runs away on one record's
// data stops at the cost limit and fails its job with a message naming the
// record and the step, while another job on the same workers runs on.
func TestRunawayExpressionFailsItsJobAlone(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: 1, topics: []string{"loops", "plain"}})
	pr := tc.producer()
	var recs []*kgo.Record
	for i := range 20 {
		n := 3
		if i == 7 {
			n = 100000 // 1e10 iterations: hours of CPU without the limit
		}
		recs = append(recs, &kgo.Record{Topic: "loops", Key: []byte("k"), Value: fmt.Appendf(nil, `{"n": %d}`, n)})
	}
	if err := pr.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	static := countJob("static", tc.Brokers, "loops")
	static.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "lists.range(100000).all(i, lists.range(100000).all(j, j >= 0))"}}}
	_, err := tc.Client.Submit(context.Background(), static)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "steps[0].filter") {
		t.Fatalf("submit of a runaway filter: %v, want InvalidArgument naming steps[0].filter", err)
	}

	runaway := countJob("runaway", tc.Brokers, "loops")
	runaway.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "lists.range(int(json.n)).all(i, lists.range(int(json.n)).all(j, j >= 0))"}}}
	if _, err := tc.Client.Submit(context.Background(), runaway); err != nil {
		t.Fatalf("submit: %v", err)
	}
	j := waitJob(t, tc.Client, "runaway", 60*time.Second, "FAILED state", func(j *sluicev1.Job) bool {
		return j.GetState() == sluicev1.JobState_JOB_STATE_FAILED
	})
	if msg := j.GetMessage(); !strings.Contains(msg, "loops/0 offset 7") || !strings.Contains(msg, "steps[0].filter") || !strings.Contains(msg, "cost limit") {
		t.Errorf("message %q does not name the record (loops/0 offset 7), the step and the cost limit", msg)
	}

	plain := newLedger("plain", 1)
	plain.produce(t, pr, 30, nil)
	if _, err := tc.Client.Submit(context.Background(), countJob("plain", tc.Brokers, "plain")); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets("plain", plain.ends(), 30*time.Second)
	if got := tc.mergedCounts("plain"); !maps.Equal(got, plain.counts(nil)) {
		t.Errorf("the other job's counts %v, want %v", got, plain.counts(nil))
	}
}
