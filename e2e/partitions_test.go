package e2e

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestThousandPartitions: a default job on a 1,024-partition topic, with
// records produced before and while it runs: exact counts, ranges that tile
// every partition, and batches of a few packed tasks, not one per partition.
func TestThousandPartitions(t *testing.T) {
	const topic, parts = "wide", 1024
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	pr := tc.producer(kgo.ProducerLinger(5 * time.Millisecond))
	counts, ends := map[string]int64{}, map[string]int64{}
	produceKeyed(t, pr, topic, parts, 30_000, 3, counts, ends)

	if _, err := tc.Client.Submit(context.Background(), defaultJob("wide", tc.Brokers, topic)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	produceKeyed(t, pr, topic, parts, 30_000, 4, counts, ends)
	tc.waitOffsets("wide", ends, 2*time.Minute)
	if got := tc.mergedCounts("wide"); !maps.Equal(got, counts) {
		t.Fatalf("counts differ from the ground truth (%d keys, want %d)", len(got), len(counts))
	}
	start := map[string]int64{}
	for k := range ends {
		start[k] = 0
	}
	for _, b := range tc.checkRanges("wide", start, ends) {
		// 2 workers of 4 slots: every batch is at most 8 packed tasks.
		if n := b.GetMetrics().GetTasks(); n > 8 || n < 1 {
			t.Fatalf("batch %d has %d tasks for %d ranges; want them packed into at most 8", b.GetId(), n, len(b.GetRanges()))
		}
	}
}

// TestPartitionsGrowWhileRunning: a default job on an 8-partition topic
// that grows to 1,024 partitions while it runs finds the new partitions,
// reads them from their earliest offset, and counts every record exactly.
func TestPartitionsGrowWhileRunning(t *testing.T) {
	const topic = "growing"
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: 8, topics: []string{topic}})
	pr := tc.producer(kgo.ProducerLinger(5 * time.Millisecond))
	counts, ends := map[string]int64{}, map[string]int64{}
	produceKeyed(t, pr, topic, 8, 8_000, 5, counts, ends)
	ctx := context.Background()
	if _, err := tc.Client.Submit(ctx, defaultJob("growing", tc.Brokers, topic)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	tc.waitOffsets("growing", ends, time.Minute)

	resp, err := kadm.NewClient(pr).CreatePartitions(ctx, 1024-8, topic)
	if err != nil || resp[topic].Err != nil {
		t.Fatalf("grow %s to 1,024 partitions: %v %v", topic, err, resp[topic].Err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		parts, err := kadm.NewClient(pr).ListTopics(ctx, topic)
		if err == nil && len(parts[topic].Partitions) == 1024 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the topic did not grow to 1,024 partitions: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A new producer: one that knew the topic at 8 partitions may not yet.
	produceKeyed(t, tc.producer(kgo.ProducerLinger(5*time.Millisecond)), topic, 1024, 40_000, 6, counts, ends)
	tc.waitOffsets("growing", ends, 2*time.Minute)
	if got := tc.mergedCounts("growing"); !maps.Equal(got, counts) {
		t.Fatalf("counts differ from the ground truth (%d keys, want %d)", len(got), len(counts))
	}
	start := map[string]int64{}
	for k := range ends {
		start[k] = 0
	}
	tc.checkRanges("growing", start, ends)
}

// TestTopicDeletedWhileRunning: a job reading two topics, one of which is
// deleted while it runs. By default that is data loss: the job fails with a
// message naming the topic. With fail_on_data_loss false the job goes on
// with the other topic and counts its records exactly.
func TestTopicDeletedWhileRunning(t *testing.T) {
	for _, failOnLoss := range []bool{true, false} {
		t.Run(map[bool]string{true: "fails", false: "goes_on"}[failOnLoss], func(t *testing.T) {
			const stays, goes = "stays", "goes"
			tc := newTestCluster(t, clusterOptions{workers: 2, partitions: 4, topics: []string{stays, goes}})
			pr := tc.producer(kgo.ProducerLinger(5 * time.Millisecond))
			counts, ends := map[string]int64{}, map[string]int64{}
			produceKeyed(t, pr, stays, 4, 2_000, 7, counts, ends)
			produceKeyed(t, pr, goes, 4, 2_000, 8, counts, ends)
			ctx := context.Background()
			spec := defaultJob("two", tc.Brokers, stays)
			spec.Source.Topics = []string{stays, goes}
			spec.Source.FailOnDataLoss = &failOnLoss
			if _, err := tc.Client.Submit(ctx, spec); err != nil {
				t.Fatalf("submit: %v", err)
			}
			tc.waitOffsets("two", ends, time.Minute)

			resp, err := kadm.NewClient(pr).DeleteTopics(ctx, goes)
			if err != nil || resp[goes].Err != nil {
				t.Fatalf("delete %s: %v %v", goes, err, resp[goes].Err)
			}
			if failOnLoss {
				msg := tc.waitFailed("two", time.Minute)
				if want := `topic "goes" was deleted`; !strings.Contains(msg, want) {
					t.Fatalf("job message %q, want it to contain %q", msg, want)
				}
				return
			}
			produceKeyed(t, tc.producer(kgo.ProducerLinger(5*time.Millisecond)), stays, 4, 3_000, 9, counts, ends)
			for k := range ends {
				if strings.HasPrefix(k, goes+"/") {
					delete(ends, k)
				}
			}
			tc.waitOffsets("two", ends, time.Minute)
			if got := tc.mergedCounts("two"); !maps.Equal(got, counts) {
				t.Fatalf("counts differ from the ground truth (%d keys, want %d)", len(got), len(counts))
			}
		})
	}
}
