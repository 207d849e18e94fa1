package bench

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Overhead is the coordination cost per batch.
type Overhead struct {
	Partitions int32
	// Batches measured, after the warmup ones.
	Batches  int
	P50, P99 time.Duration
	// TimeBoxed: the budget ran out before the batches asked for.
	TimeBoxed bool
}

// overheadWarmup batches are not measured: they create the workers'
// consumers. When the budget runs out first, the first half of the
// committed batches is the warmup.
const overheadWarmup = 10

// OverheadInterval is the batch interval of the overhead job: short, so that
// batches follow each other.
const OverheadInterval = 50 * time.Millisecond

// CoordinationOverhead measures what a batch costs beyond reading records:
// plan (latest offsets of every partition) + log the plan in etcd + dispatch
// the tasks (one range per partition, packed as the coordinator chooses) +
// collect + commit. Every batch carries one record
// per partition (max_records_per_batch = partitions, backpressure off, so
// the batches stay that size). It writes the records to topic (created with
// partitions unless it exists), runs a counting job until the warmup and
// batches have committed or budget has passed (0: no budget), deletes the
// job, and reports the percentiles of the cycles.
//
// A batch's cycle runs from when its planning could start, the later of its
// batch time and the previous batch's commit, to its commit. (Its total
// delay would also count the time a late batch waited for the one before.)
func CoordinationOverhead(ctx context.Context, c *client.Client, brokers, topic string, partitions int32, batches int, budget time.Duration) (Overhead, error) {
	if err := CreateTopic(ctx, brokers, topic, partitions); err != nil && !isTopicExists(err) {
		return Overhead{}, err
	}
	cl, err := kgo.NewClient(append(ProducerOpts(brokers), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		return Overhead{}, fmt.Errorf("kafka producer: %w", err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range (batches + overheadWarmup + 2) * int(partitions) {
		recs = append(recs, &kgo.Record{Partition: int32(i) % partitions, Key: []byte("k"), Value: []byte("v")})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return Overhead{}, fmt.Errorf("produce to %s: %w", topic, err)
	}
	name := fmt.Sprintf("overhead-%d", partitions)
	spec := &sluicev1.JobSpec{
		Name: name,
		Source: &sluicev1.KafkaSource{
			BootstrapServers: brokers,
			Topics:           []string{topic},
			StartingOffsets:  &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}},
		},
		BatchInterval: durationpb.New(OverheadInterval),
		Aggregate:     &sluicev1.Aggregate{},
		Limits: &sluicev1.Limits{
			MaxRecordsPerBatch: int64(partitions),
			Backpressure:       &sluicev1.Backpressure{Enabled: proto.Bool(false)},
		},
	}
	start := time.Now()
	if _, err := c.Submit(ctx, spec); err != nil {
		return Overhead{}, fmt.Errorf("submit %s: %w", name, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = c.Delete(dctx, name)
	}()
	want := int64(overheadWarmup + batches + 1)
	var seen int64
	timeBoxed := false
	for seen < want {
		j, err := c.Job(ctx, name)
		if err != nil {
			return Overhead{}, fmt.Errorf("job %s: %d of %d batches committed: %w", name, seen, want, err)
		}
		seen = j.GetLastBatchId()
		if j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			return Overhead{}, fmt.Errorf("job %s failed: %s", name, j.GetMessage())
		}
		if budget > 0 && time.Since(start) > budget && seen >= 4 {
			timeBoxed = true
			break
		}
		select {
		case <-ctx.Done():
			return Overhead{}, fmt.Errorf("job %s: %d of %d batches committed: %w", name, seen, want, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	warmup := overheadWarmup
	if timeBoxed {
		warmup = min(overheadWarmup, int(seen)/2)
	}
	list, err := c.Batches(ctx, name, int(seen)+10)
	if err != nil {
		return Overhead{}, fmt.Errorf("batches of %s: %w", name, err)
	}
	cycles, err := batchCycles(list, int(partitions), warmup, seen)
	if err != nil {
		return Overhead{}, fmt.Errorf("job %s: %w", name, err)
	}
	return Overhead{Partitions: partitions, Batches: len(cycles), P50: Percentile(cycles, 0.50), P99: Percentile(cycles, 0.99), TimeBoxed: timeBoxed}, nil
}

// batchCycles returns the cycle of each committed batch after the first
// warmup ones, up to batch id last: commit time minus the later of its batch
// time and the previous batch's commit time. Every batch must have one
// range per partition.
func batchCycles(batches []*sluicev1.Batch, partitions, warmup int, last int64) ([]time.Duration, error) {
	bs := make([]*sluicev1.Batch, 0, len(batches))
	for _, b := range batches {
		if b.GetState() == sluicev1.BatchState_BATCH_STATE_COMMITTED && b.GetId() <= last {
			bs = append(bs, b)
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].GetId() < bs[j].GetId() })
	var cycles []time.Duration
	for i := warmup; i < len(bs); i++ {
		b := bs[i]
		if n := len(b.GetRanges()); n != partitions {
			return nil, fmt.Errorf("batch %d has %d ranges, want one per partition (%d)", b.GetId(), n, partitions)
		}
		start := b.GetBatchTime().AsTime()
		if i > 0 {
			if prev := bs[i-1]; prev.GetId() == b.GetId()-1 && prev.GetCommitTime().AsTime().After(start) {
				start = prev.GetCommitTime().AsTime()
			}
		}
		cycles = append(cycles, b.GetCommitTime().AsTime().Sub(start))
	}
	if len(cycles) == 0 {
		return nil, fmt.Errorf("no batches after the %d warmup ones", warmup)
	}
	return cycles, nil
}

// Percentile returns the q quantile (0..1) of ds (nearest rank); ds is
// sorted in place.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[min(int(q*float64(len(ds))), len(ds)-1)]
}
