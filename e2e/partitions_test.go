package e2e

import (
	"context"
	"maps"
	"testing"
	"time"

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
