package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// defaultJob is a count-by-key job with every setting at its default: no
// limits, the default batch interval.
func defaultJob(name, brokers, topic string) *sluicev1.JobSpec {
	spec := countJob(name, brokers, topic)
	spec.BatchInterval = nil
	return spec
}

// TestDefaultJobOnBacklogUsesBackpressure: a job with default settings on a
// backlog of 600,000 records reads its first batch at the initial rate
// (100,000 records per second over the job, one default interval), then at
// the backpressure estimate; every batch records the cap that applied; the
// counts are exact and the ranges tile every partition. The CLI shows the
// cap.
func TestDefaultJobOnBacklogUsesBackpressure(t *testing.T) {
	const topic, parts, n = "backlog", 8, 600_000
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	counts, ends := map[string]int64{}, map[string]int64{}
	produceKeyed(t, tc.producer(kgo.ProducerLinger(5*time.Millisecond)), topic, parts, n, 7, counts, ends)

	ctx := context.Background()
	if _, err := tc.Client.Submit(ctx, defaultJob("backlog", tc.Brokers, topic)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	tc.waitOffsets("backlog", ends, 3*time.Minute)
	if got := tc.mergedCounts("backlog"); !maps.Equal(got, counts) {
		t.Fatalf("counts differ from the ground truth (%d keys, want %d)", len(got), len(counts))
	}
	start := map[string]int64{}
	for k := range ends {
		start[k] = 0
	}
	batches := tc.checkRanges("backlog", start, ends)
	if len(batches) < 2 {
		t.Fatalf("%d batches; the initial rate should have cut the backlog", len(batches))
	}
	first := batches[0]
	if c := first.GetCap(); c.GetSource() != sluicev1.CapSource_CAP_SOURCE_INITIAL || c.GetRate() != 100_000 || !c.GetLimited() || c.GetMaxRecords() != 100_000 {
		t.Fatalf("batch 1 cap %v; want the initial rate 100000/s, limited, 100000 records", c)
	}
	if in := first.GetMetrics().GetRecordsIn(); in != 100_000 {
		t.Fatalf("batch 1 read %d records; want 100000 (initial rate x 1s)", in)
	}
	for _, b := range batches[1:] {
		c := b.GetCap()
		if c.GetSource() != sluicev1.CapSource_CAP_SOURCE_ESTIMATE || c.GetRate() <= 0 {
			t.Fatalf("batch %d cap %v; want the backpressure estimate", b.GetId(), c)
		}
		if c.GetLimited() && b.GetMetrics().GetRecordsIn() > c.GetMaxRecords() {
			t.Fatalf("batch %d read %d records above its cap %v", b.GetId(), b.GetMetrics().GetRecordsIn(), c)
		}
	}

	// The offsets are mirrored to the job's Kafka group beside the batches.
	j, err := tc.Client.Job(ctx, "backlog")
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(tc.producer())
	deadline := time.Now().Add(30 * time.Second)
	for {
		offs, err := adm.FetchOffsets(ctx, j.GetKafkaGroup())
		mirrored := err == nil
		for k, want := range ends {
			var p int32
			fmt.Sscanf(strings.TrimPrefix(k, topic+"/"), "%d", &p)
			o, ok := offs.Lookup(topic, p)
			mirrored = mirrored && ok && o.At == want
		}
		if mirrored {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s offsets %v (%v), want %v", j.GetKafkaGroup(), offs, err, ends)
		}
		time.Sleep(50 * time.Millisecond)
	}

	out := run(t, sluiceBin, "batches", "--coordinator", tc.Addr, "-n", "100", "backlog")
	if !strings.Contains(out, "initial 100000/s, 100000 records (limited)") || !strings.Contains(out, "estimate ") {
		t.Fatalf("sluice batches does not show the caps:\n%s", out)
	}
}

// TestSplitHotPartition: a hot partition's range above
// max_records_per_task runs as several tasks on several workers. Counts
// are exact for an aggregate, and a collect job without aggregate gets
// every record exactly once in offset order.
func TestSplitHotPartition(t *testing.T) {
	const topic = "hot"
	tc := newTestCluster(t, clusterOptions{workers: 3, partitions: 2, topics: []string{topic}})
	pr := tc.producer(kgo.ProducerLinger(5 * time.Millisecond))
	counts := map[string]int64{}
	const hot, cold = 50_000, 100
	for i := range hot + cold {
		p, key := int32(0), fmt.Sprintf("k%d", i%37)
		if i >= hot {
			p = 1
		}
		counts[key]++
		pr.Produce(context.Background(), &kgo.Record{Topic: topic, Partition: p, Key: []byte(key), Value: fmt.Appendf(nil, "%d", i)}, nil)
	}
	if err := pr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ends := map[string]int64{topic + "/0": hot, topic + "/1": cold}

	ctx := context.Background()
	agg := defaultJob("split-agg", tc.Brokers, topic)
	agg.Limits = &sluicev1.Limits{MaxRecordsPerTask: 4_000}
	coll := defaultJob("split-collect", tc.Brokers, topic)
	coll.Aggregate = nil
	coll.Limits = &sluicev1.Limits{MaxRecordsPerTask: 4_000}
	for _, spec := range []*sluicev1.JobSpec{agg, coll} {
		if _, err := tc.Client.Submit(ctx, spec); err != nil {
			t.Fatalf("submit %s: %v", spec.GetName(), err)
		}
	}
	tc.waitOffsets("split-agg", ends, time.Minute)
	tc.waitOffsets("split-collect", ends, time.Minute)
	if got := tc.mergedCounts("split-agg"); !maps.Equal(got, counts) {
		t.Fatalf("counts %v, want %v", got, counts)
	}
	start := map[string]int64{topic + "/0": 0, topic + "/1": 0}
	for _, job := range []string{"split-agg", "split-collect"} {
		batches := tc.checkRanges(job, start, ends)
		// One batch holds everything (the initial rate allows 100,000):
		// 50,000 records at most 4,000 per task is 13 tasks, plus one.
		if len(batches) != 1 || batches[0].GetMetrics().GetTasks() != 14 {
			t.Fatalf("%s: %d batches, first with %d tasks; want 1 batch of 14 tasks", job, len(batches), batches[0].GetMetrics().GetTasks())
		}
	}

	next := map[int32]int64{}
	if _, err := tc.Client.AllResults(ctx, &sluicev1.GetResultsRequest{Job: "split-collect"}, func(r *sluicev1.BatchResult) error {
		for _, rec := range r.GetRecords() {
			if rec.GetOffset() != next[rec.GetPartition()] {
				return fmt.Errorf("partition %d: record at offset %d, want %d", rec.GetPartition(), rec.GetOffset(), next[rec.GetPartition()])
			}
			next[rec.GetPartition()]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if next[0] != hot || next[1] != cold {
		t.Fatalf("collected %v records per partition, want %d and %d", next, hot, cold)
	}
}

// TestBehindJobRunsBatchesBackToBack: a job behind (its batches cut by a
// cap that is not a rate the user set) starts each batch as soon as the
// last one is done, not at its next tick: five batches of a 5 s interval
// take seconds, not 25. A job capped by max_rate_per_partition keeps its
// ticks. Counts are exact and the ranges tile every partition for both.
func TestBehindJobRunsBatchesBackToBack(t *testing.T) {
	const topic, parts, n = "behind", 4, 40_000
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	counts, ends := map[string]int64{}, map[string]int64{}
	produceKeyed(t, tc.producer(kgo.ProducerLinger(5*time.Millisecond)), topic, parts, n, 11, counts, ends)

	const behindInterval, pacedInterval = 5 * time.Second, time.Second
	behind := countJob("behind", tc.Brokers, topic)
	behind.BatchInterval = durationpb.New(behindInterval)
	behind.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 8_000}
	paced := countJob("paced", tc.Brokers, topic)
	paced.BatchInterval = durationpb.New(pacedInterval)
	paced.Limits = &sluicev1.Limits{MaxRatePerPartition: 2_500}
	ctx := context.Background()
	for _, s := range []*sluicev1.JobSpec{behind, paced} {
		if _, err := tc.Client.Submit(ctx, s); err != nil {
			t.Fatalf("submit %s: %v", s.GetName(), err)
		}
	}
	start := map[string]int64{}
	for k := range ends {
		start[k] = 0
	}
	// Five batches at their ticks would take 20 s past the first.
	tc.waitOffsets("behind", ends, 15*time.Second)
	tc.waitOffsets("paced", ends, time.Minute)
	for _, name := range []string{"behind", "paced"} {
		if got := tc.mergedCounts(name); !maps.Equal(got, counts) {
			t.Fatalf("%s: counts differ from the ground truth (%d keys, want %d)", name, len(got), len(counts))
		}
	}

	early := 0
	batches := tc.checkRanges("behind", start, ends)
	for i, b := range batches[:len(batches)-1] {
		next := batches[i+1]
		gap := next.GetBatchTime().AsTime().Sub(b.GetBatchTime().AsTime())
		t.Logf("behind batch %d: %d records, cap %v, total delay %s, next batch %s later",
			b.GetId(), b.GetMetrics().GetRecordsIn(), b.GetCap(), b.GetMetrics().GetTotalDelay().AsDuration(), gap)
		// A batch done a second before its tick leaves time for its commit.
		if !b.GetCap().GetLimited() || b.GetMetrics().GetTotalDelay().AsDuration() > behindInterval-time.Second {
			continue
		}
		if gap >= behindInterval {
			t.Errorf("batch %d waited for its tick: the next batch started %s after it (interval %s), though records were left", b.GetId(), gap, behindInterval)
		}
		early++
	}
	if early < 3 {
		t.Errorf("%d batches were followed early, want at least 3 of %d (max_records_per_batch 8000 of %d records)", early, len(batches), n)
	}

	pacedBatches := tc.checkRanges("paced", start, ends)
	if len(pacedBatches) < 4 {
		t.Errorf("paced job: %d batches, want 4 or more (2500 records/s per partition of 10000)", len(pacedBatches))
	}
	for i, b := range pacedBatches {
		bt := b.GetBatchTime().AsTime()
		if !bt.Equal(bt.Truncate(pacedInterval)) {
			t.Errorf("paced batch %d at %s: not on a tick of %s; a rate cap must keep the ticks", b.GetId(), bt, pacedInterval)
		}
		if i > 0 {
			if gap := bt.Sub(pacedBatches[i-1].GetBatchTime().AsTime()); gap < pacedInterval {
				t.Errorf("paced batch %d started %s after the one before, under the interval %s", b.GetId(), gap, pacedInterval)
			}
		}
	}
}
