package e2e

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// BenchmarkCoordinationOverhead measures what a batch costs beyond reading
// records: plan (latest offsets of 64 partitions) + log the plan in etcd +
// dispatch 64 tasks to 4 workers + collect + commit. Every batch carries one
// record per partition (maxRecordsPerBatch 64). A batch's total delay, from
// its tick to its commit, covers the whole cycle: plan, log, dispatch, tasks,
// collect, commit. Reported as p50 and p99 over b.N batches; the design target
// is p50 < 5ms, p99 < 20ms (a 100ms interval sustainable).
func BenchmarkCoordinationOverhead(b *testing.B) {
	const topic, parts = "overhead", 64
	tc := newTestCluster(b, clusterOptions{workers: 4, partitions: parts, topics: []string{topic}})
	warmup := 10
	n := max(min(b.N, 1000), 200) // enough batches for a p99, few enough to end
	pr := tc.producer()
	var recs []*kgo.Record
	for i := range (n + warmup + 2) * parts {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % parts), Key: []byte("k"), Value: []byte("v")})
	}
	if err := pr.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	spec := countJob("overhead", tc.Brokers, topic)
	spec.BatchInterval = durationpb.New(50 * time.Millisecond)
	spec.Limits = &sluicev1.Limits{MaxRecordsPerBatch: parts}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	want := int64(warmup + n + 1)
	for {
		j, err := tc.Client.Job(context.Background(), spec.GetName())
		if err == nil && j.GetLastBatchId() >= want {
			break
		}
		if err == nil && j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			b.Fatalf("job failed: %s", j.GetMessage())
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	batches, err := tc.Client.Batches(context.Background(), spec.GetName(), int(want)+10)
	if err != nil {
		b.Fatal(err)
	}
	sort.Slice(batches, func(i, j int) bool { return batches[i].GetId() < batches[j].GetId() })
	var cycles []time.Duration
	for i := warmup; i < len(batches) && i < int(want); i++ {
		if len(batches[i].GetRanges()) != parts {
			b.Fatalf("batch %d has %d ranges, want %d", batches[i].GetId(), len(batches[i].GetRanges()), parts)
		}
		cycles = append(cycles, batches[i].GetMetrics().GetTotalDelay().AsDuration())
	}
	if len(cycles) == 0 {
		b.Fatal("no batches measured")
	}
	sort.Slice(cycles, func(i, j int) bool { return cycles[i] < cycles[j] })
	p := func(q float64) float64 {
		return float64(cycles[min(int(q*float64(len(cycles))), len(cycles)-1)].Microseconds()) / 1000
	}
	b.ReportMetric(p(0.50), "p50-ms/batch")
	b.ReportMetric(p(0.99), "p99-ms/batch")
	if testing.Verbose() {
		fmt.Printf("coordination overhead over %d batches of 64 tasks on 4 workers: p50 %.2fms p99 %.2fms\n", len(cycles), p(0.5), p(0.99))
	}
}
