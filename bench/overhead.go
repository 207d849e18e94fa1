package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// OverheadTopic is one topic of the overhead job.
type OverheadTopic struct {
	Name       string
	Partitions int32
}

// OverheadTopics names n topics of partitions each: prefix itself when n is
// 1, else prefix-000, prefix-001, ...
func OverheadTopics(prefix string, n int, partitions int32) []OverheadTopic {
	if n == 1 {
		return []OverheadTopic{{Name: prefix, Partitions: partitions}}
	}
	width := len(strconv.Itoa(n - 1))
	out := make([]OverheadTopic, n)
	for i := range out {
		out[i] = OverheadTopic{Name: fmt.Sprintf("%s-%0*d", prefix, width, i), Partitions: partitions}
	}
	return out
}

// OverheadLayout describes topics for a name or a table: "1024" for one
// topic of 1,024 partitions, "100x100" for 100 topics of 100 partitions,
// "8+16" for topics of different sizes.
func OverheadLayout(topics []OverheadTopic) string {
	if len(topics) == 1 {
		return strconv.Itoa(int(topics[0].Partitions))
	}
	same := true
	var sizes []string
	for _, t := range topics {
		same = same && t.Partitions == topics[0].Partitions
		sizes = append(sizes, strconv.Itoa(int(t.Partitions)))
	}
	if same && len(topics) > 0 {
		return fmt.Sprintf("%dx%d", len(topics), topics[0].Partitions)
	}
	return strings.Join(sizes, "+")
}

// totalPartitions is the partition count of all of topics.
func totalPartitions(topics []OverheadTopic) int32 {
	var n int32
	for _, t := range topics {
		n += t.Partitions
	}
	return n
}

// Overhead is the coordination cost per batch.
type Overhead struct {
	// Topics and Partitions (all topics') the job read.
	Topics     int
	Partitions int32
	// Batches measured, after the warmup ones; 0 when too few committed
	// within the time box to measure any.
	Batches  int
	P50, P99 time.Duration
	// Split is where the time of a median batch went; Slow, the same over
	// the slowest 5% of the batches (at least one), where the tail's went.
	Split, Slow CycleSplit
	// TimeBoxed: the budget ran out before the batches asked for.
	TimeBoxed bool
	// Committed batches when the wait ended, Elapsed from just before the
	// submit to then.
	Committed int64
	Elapsed   time.Duration
	// Setup is the time to create the topics and produce Records records,
	// which the figures leave out.
	Setup   time.Duration
	Records int64
}

// overheadWarmup batches are not measured: they create the workers'
// consumers. When the budget runs out first, the first half of the
// committed batches is the warmup.
const overheadWarmup = 10

// OverheadInterval is the batch interval of the overhead job: short, so that
// batches follow each other.
const OverheadInterval = 50 * time.Millisecond

// overheadProducers write the overhead records at once.
const overheadProducers = 4

// CoordinationOverhead measures what a batch costs beyond reading records:
// plan (latest offsets of every partition) + log the plan in etcd + dispatch
// the tasks (one range per partition, packed as the coordinator chooses) +
// collect + commit. Every batch carries one record per partition of every
// topic (max_records_per_batch = all partitions, backpressure off, so the
// batches stay that size). It writes the records to topics (each created
// with its partitions unless it exists), runs a counting job reading all of
// them until the warmup and batches have committed or the time box ends,
// deletes the job, and reports the percentiles of the cycles.
//
// A batch's cycle runs from when its planning could start, the later of its
// batch time and the previous batch's commit, to its commit. (Its total
// delay would also count the time a late batch waited for the one before.)
//
// The time box (budget 0: none): once budget has passed, the batches
// committed so far are measured, the first half being the warmup, provided
// at least 4 have; at twice budget whatever committed is measured, and if
// none has, Overhead.Batches is 0. Setting up the topics is not counted.
func CoordinationOverhead(ctx context.Context, c *client.Client, brokers string, topics []OverheadTopic, batches int, budget time.Duration) (Overhead, error) {
	if len(topics) == 0 {
		return Overhead{}, fmt.Errorf("coordination overhead: no topics")
	}
	partitions := totalPartitions(topics)
	setupStart := time.Now()
	if err := createTopics(ctx, brokers, topics); err != nil {
		return Overhead{}, err
	}
	perPartition := batches + overheadWarmup + 2
	if err := produceOverhead(ctx, brokers, topics, perPartition); err != nil {
		return Overhead{}, err
	}
	setup := time.Since(setupStart)
	name := "overhead-" + OverheadLayout(topics)
	var names []string
	for _, t := range topics {
		names = append(names, t.Name)
	}
	spec := &sluicev1.JobSpec{
		Name: name,
		Source: &sluicev1.KafkaSource{
			BootstrapServers: brokers,
			Topics:           names,
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
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = c.Delete(dctx, name)
	}()
	want := int64(overheadWarmup + batches + 1)
	var seen int64
	timeBoxed := false
	for {
		j, err := c.Job(ctx, name)
		if err != nil {
			return Overhead{}, fmt.Errorf("job %s: %d of %d batches committed: %w", name, seen, want, err)
		}
		seen = j.GetLastBatchId()
		if j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			return Overhead{}, fmt.Errorf("job %s failed: %s", name, j.GetMessage())
		}
		var stop bool
		if stop, timeBoxed = overheadStop(time.Since(start), budget, seen, want); stop {
			break
		}
		select {
		case <-ctx.Done():
			return Overhead{}, fmt.Errorf("job %s: %d of %d batches committed: %w", name, seen, want, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	o := Overhead{Topics: len(topics), Partitions: partitions, TimeBoxed: timeBoxed, Committed: seen, Elapsed: time.Since(start), Setup: setup, Records: int64(perPartition) * int64(partitions)}
	warmup := overheadWarmup
	if timeBoxed {
		warmup = min(overheadWarmup, int(seen)/2)
	}
	if seen <= int64(warmup) {
		return o, nil
	}
	list, err := committedBatches(ctx, c, name, seen)
	if err != nil {
		return Overhead{}, err
	}
	cycles, err := batchCycles(list, int(partitions), warmup, seen)
	if err != nil {
		return Overhead{}, fmt.Errorf("job %s: %w", name, err)
	}
	totals := make([]time.Duration, len(cycles))
	for i, c := range cycles {
		totals[i] = c.total
	}
	o.Batches, o.P50, o.P99, o.Split = len(cycles), Percentile(totals, 0.50), Percentile(totals, 0.99), split(cycles)
	o.Slow = split(slowest(cycles, 0.05))
	return o, nil
}

// overheadStop decides, elapsed after the submit with seen of want batches
// committed, whether to stop waiting and whether the time box stopped it
// (see CoordinationOverhead).
func overheadStop(elapsed, budget time.Duration, seen, want int64) (stop, timeBoxed bool) {
	switch {
	case seen >= want:
		return true, false
	case budget > 0 && elapsed > budget && seen >= 4:
		return true, true
	case budget > 0 && elapsed > 2*budget:
		return true, true
	}
	return false, false
}

// committedBatches reads batches 1..last one at a time: a list of them all
// at 10,000 partitions would be too large a message.
func committedBatches(ctx context.Context, c *client.Client, job string, last int64) ([]*sluicev1.Batch, error) {
	out := make([]*sluicev1.Batch, last)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for id := int64(1); id <= last; id++ {
		g.Go(func() error {
			resp, err := c.JobService().GetBatch(gctx, &sluicev1.GetBatchRequest{Job: job, Id: id})
			if status.Code(err) == codes.NotFound {
				return nil // pruned by the coordinator's retention
			}
			if err != nil {
				return fmt.Errorf("batch %d of %s: %w", id, job, err)
			}
			out[id-1] = resp.GetBatch()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(out, func(b *sluicev1.Batch) bool { return b == nil }), nil
}

// createTopics creates topics in one request; those that exist are kept.
func createTopics(ctx context.Context, brokers string, topics []OverheadTopic) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 60_000
	for _, t := range topics {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = t.Name, t.Partitions, 1
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("create %d topics: %w", len(topics), err)
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t.Topic, err)
		}
	}
	return nil
}

// DeleteTopics deletes topics, so that a layout measured on a broker does
// not weigh on the next.
func DeleteTopics(ctx context.Context, brokers string, topics []OverheadTopic) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	var names []string
	for _, t := range topics {
		names = append(names, t.Name)
	}
	resp, err := kadm.NewClient(cl).DeleteTopics(ctx, names...)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("delete %d topics (%s...): %w", len(names), names[0], err)
	}
	return nil
}

// produceOverhead writes perPartition records to every partition of
// topics from several producers, each partition's records together so that
// they travel in one record batch (interleaving partitions makes small
// batches, slow at 10,000 partitions).
func produceOverhead(ctx context.Context, brokers string, topics []OverheadTopic, perPartition int) error {
	g, gctx := errgroup.WithContext(ctx)
	for w := range overheadProducers {
		g.Go(func() error {
			cl, err := kgo.NewClient(ProducerOpts(brokers)...)
			if err != nil {
				return fmt.Errorf("kafka producer: %w", err)
			}
			defer cl.Close()
			var recs []*kgo.Record
			i := 0
			for _, t := range topics {
				for p := range t.Partitions {
					if i++; i%overheadProducers != w {
						continue
					}
					for range perPartition {
						recs = append(recs, &kgo.Record{Topic: t.Name, Partition: p, Key: []byte("k"), Value: []byte("v")})
					}
				}
			}
			if err := cl.ProduceSync(gctx, recs...).FirstErr(); err != nil {
				return fmt.Errorf("produce the overhead records: %w", err)
			}
			return nil
		})
	}
	return g.Wait()
}

// cycle is one batch's cycle and two of its parts: plan, from its start
// to the dispatch of its tasks, and tasks, from the dispatch to the last
// result. The coordinator stamps a batch's commit time before it writes the
// commit to etcd, so plan holds the previous batch's etcd commit, then the
// planning (offsets from Kafka, and the plan logged in etcd unless it is
// logged while the tasks run).
type cycle struct {
	total, plan, tasks time.Duration
	taskCount          int
}

// batchCycles returns the cycle of each committed batch after the first
// warmup ones, up to batch id last: commit time minus the later of its batch
// time and the previous batch's commit time. Every batch must have one
// range per partition.
func batchCycles(batches []*sluicev1.Batch, partitions, warmup int, last int64) ([]cycle, error) {
	bs := make([]*sluicev1.Batch, 0, len(batches))
	for _, b := range batches {
		if b.GetState() == sluicev1.BatchState_BATCH_STATE_COMMITTED && b.GetId() <= last {
			bs = append(bs, b)
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].GetId() < bs[j].GetId() })
	var cycles []cycle
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
		m := b.GetMetrics()
		dispatch := b.GetBatchTime().AsTime().Add(m.GetSchedulingDelay().AsDuration())
		cycles = append(cycles, cycle{
			total: b.GetCommitTime().AsTime().Sub(start), plan: max(dispatch.Sub(start), 0),
			tasks: m.GetProcessingTime().AsDuration(), taskCount: int(m.GetTasks()),
		})
	}
	if len(cycles) == 0 {
		return nil, fmt.Errorf("no batches after the %d warmup ones", warmup)
	}
	return cycles, nil
}

// CycleSplit is the median of each part of the cycles (see cycle): Plan
// (the previous batch's etcd commit, then the planning), Tasks (dispatch to
// the last result) and the tasks per batch. The medians need not add up to
// the median cycle.
type CycleSplit struct {
	Plan, Tasks time.Duration
	// After is the time from the last task result to the commit.
	After     time.Duration
	TaskCount int
}

// slowest returns the share q of cycles (at least one) with the longest
// totals.
func slowest(cycles []cycle, q float64) []cycle {
	s := slices.Clone(cycles)
	slices.SortFunc(s, func(a, b cycle) int { return cmp.Compare(b.total, a.total) })
	return s[:max(1, int(float64(len(s))*q))]
}

// split returns the medians of the cycles' parts.
func split(cycles []cycle) CycleSplit {
	part := func(f func(cycle) time.Duration) time.Duration {
		ds := make([]time.Duration, len(cycles))
		for i, c := range cycles {
			ds[i] = f(c)
		}
		return Percentile(ds, 0.5)
	}
	counts := make([]int, len(cycles))
	for i, c := range cycles {
		counts[i] = c.taskCount
	}
	slices.Sort(counts)
	return CycleSplit{
		Plan:      part(func(c cycle) time.Duration { return c.plan }),
		Tasks:     part(func(c cycle) time.Duration { return c.tasks }),
		After:     part(func(c cycle) time.Duration { return max(c.total-c.plan-c.tasks, 0) }),
		TaskCount: counts[len(counts)/2],
	}
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

// Layout is a shape of the overhead job's source: Topics topics of
// Partitions partitions each.
type Layout struct {
	Topics     int
	Partitions int32
}

// String is the layout as ParseLayouts reads it: "100x100".
func (l Layout) String() string { return fmt.Sprintf("%dx%d", l.Topics, l.Partitions) }

// ParseLayouts reads layouts "TOPICSxPARTITIONS" separated by commas:
// "1x10000,100x100" is one topic of 10,000 partitions, then 100 topics of
// 100 partitions.
func ParseLayouts(s string) ([]Layout, error) {
	var out []Layout
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		ts, ps, ok := strings.Cut(f, "x")
		t, terr := strconv.Atoi(ts)
		p, perr := strconv.ParseInt(ps, 10, 32)
		if !ok || terr != nil || perr != nil || t < 1 || p < 1 {
			return nil, fmt.Errorf("layout %q: want TOPICSxPARTITIONS, both positive (e.g. 100x100)", f)
		}
		out = append(out, Layout{Topics: t, Partitions: int32(p)})
	}
	return out, nil
}
