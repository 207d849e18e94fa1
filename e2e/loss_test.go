package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/coordinator"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestDataLossUnderRunningBatch: retention deletes records after a batch
// is planned and before its tasks read them (here: partition 2 below 700,
// between the plan and the dispatch of each job's first batch). With
// fail_on_data_loss false the batch is cut at the log start and run again:
// it records the loss [0, 700), and the counts are the ground truth minus
// exactly the deleted records. With the default, the job fails naming the
// loss, not the task's attempts, and commits nothing.
func TestDataLossUnderRunningBatch(t *testing.T) {
	const parts = 4
	topics := []string{"under-skip", "under-fail"}
	var admin atomic.Pointer[kgo.Client]
	deleted := make(chan error, len(topics))
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: topics, coord: func(c *coordinator.Config) {
		c.Hooks.BeforePlanLog = func(b *sluicev1.Batch) error {
			if b.GetId() != 1 || !strings.HasPrefix(b.GetJob(), "under-") {
				return nil
			}
			var os kadm.Offsets
			os.Add(kadm.Offset{Topic: b.GetJob(), Partition: 2, At: 700, LeaderEpoch: -1})
			resp, err := kadm.NewClient(admin.Load()).DeleteRecords(context.Background(), os)
			if err == nil {
				if r, ok := resp.Lookup(b.GetJob(), 2); !ok || r.Err != nil || r.LowWatermark != 700 {
					err = fmt.Errorf("DeleteRecords %s/2: %v (answered %v, low watermark %d)", b.GetJob(), r.Err, ok, r.LowWatermark)
				}
			}
			deleted <- err
			return nil
		}
	}})
	pr := tc.producer()
	admin.Store(pr)
	ledgers := map[string]*ledger{}
	for _, topic := range topics {
		ledgers[topic] = newLedger(topic, parts)
		ledgers[topic].produce(t, pr, 4000, nil)
	}
	for _, topic := range topics {
		s := countJob(topic, tc.Brokers, topic)
		s.Limits = &sluicev1.Limits{MaxTaskAttempts: 2, TaskTimeout: durationpb.New(20 * time.Second)}
		if topic == "under-skip" {
			s.Source.FailOnDataLoss = proto.Bool(false)
		}
		if _, err := tc.Client.Submit(context.Background(), s); err != nil {
			t.Fatalf("submit %s: %v", topic, err)
		}
	}
	for range topics {
		select {
		case err := <-deleted:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no first batch planned")
		}
	}

	t.Run("skips", func(t *testing.T) {
		l := ledgers["under-skip"]
		tc.waitOffsets("under-skip", l.ends(), 60*time.Second)
		batches := batchesAsc(t, tc.Client, "under-skip")
		var losses []*sluicev1.DataLoss
		for _, b := range batches {
			losses = append(losses, b.GetDataLoss()...)
		}
		if len(losses) != 1 || losses[0].GetPartition() != 2 || losses[0].GetFromOffset() != 0 || losses[0].GetUntilOffset() != 700 || batches[0].GetDataLoss() == nil {
			t.Errorf("data loss = %v, want under-skip/2 [0, 700) recorded in batch 1", losses)
		}
		checkTiles(t, batches, l.uniform(0), l.ends())
		want := l.counts(func(p int32, off int64) bool { return p != 2 || off >= 700 })
		if got := tc.mergedCounts("under-skip"); !maps.Equal(got, want) {
			t.Errorf("counts differ from the ground truth minus the deleted records:\n got %v\nwant %v", got, want)
		}
		if j, _ := tc.Client.Job(context.Background(), "under-skip"); j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
			t.Errorf("job is %v (%q), want RUNNING", j.GetState(), j.GetMessage())
		}
	})
	t.Run("fails", func(t *testing.T) {
		j := waitJob(t, tc.Client, "under-fail", 60*time.Second, "FAILED state", func(j *sluicev1.Job) bool {
			return j.GetState() == sluicev1.JobState_JOB_STATE_FAILED
		})
		t.Logf("failed: %s", j.GetMessage())
		for _, want := range []string{"data loss", "under-fail/2", "offsets 0 to 699", "log start is now 700"} {
			if !strings.Contains(j.GetMessage(), want) {
				t.Errorf("failure message %q does not contain %q", j.GetMessage(), want)
			}
		}
		if j.GetLastBatchId() != 0 {
			t.Errorf("last committed batch %d, want none", j.GetLastBatchId())
		}
	})
}
