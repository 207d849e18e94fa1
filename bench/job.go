package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// ClickJob is the job with default settings (no batch interval, no
// limits): keep the clicks, count them and sum their ms per page, into the
// collect sink, from the earliest offsets.
func ClickJob(name, brokers, topic string) *sluicev1.JobSpec {
	return &sluicev1.JobSpec{
		Name: name,
		Source: &sluicev1.KafkaSource{
			BootstrapServers: brokers,
			Topics:           []string{topic},
			StartingOffsets:  &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}},
		},
		Steps: []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "json.type == 'click'"}}},
		Aggregate: &sluicev1.Aggregate{
			Key:       "json.page",
			Value:     "json.ms",
			Functions: []sluicev1.AggregateFunction{sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT, sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM},
		},
		Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Collect{Collect: &sluicev1.CollectSink{}}},
	}
}

// JobRun is how a job did on a backlog.
type JobRun struct {
	// Done: every record of the backlog is committed.
	Done bool
	// Elapsed runs from just before the submit to the commit time of the
	// batch that committed the last offset (or to the timeout).
	Elapsed time.Duration
	// Committed is the number of records whose offsets were committed.
	Committed int64
	Batches   int64
	// MaxBatchRecords is the most records one retained batch read.
	MaxBatchRecords int64
	// Over the retained batches: the longest processing time, and how
	// many batches a cap (backpressure, initial rate) cut.
	MaxProcessing time.Duration
	Capped        int
	// Message is the job's message when it failed or did not finish.
	Message string
}

// Rate is the committed records per second.
func (r JobRun) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Committed) / r.Elapsed.Seconds()
}

// RunJob submits spec, whose source is a topic whose partitions end at ends
// and start at 0, and waits until the job has committed every offset, it
// fails, or timeout passes. The job is left in place.
func RunJob(ctx context.Context, c *client.Client, spec *sluicev1.JobSpec, ends []int64, timeout time.Duration) (JobRun, error) {
	topic := spec.GetSource().GetTopics()[0]
	var total int64
	for _, e := range ends {
		total += e
	}
	start := time.Now()
	if _, err := c.Submit(ctx, spec); err != nil {
		return JobRun{}, fmt.Errorf("submit %s: %w", spec.GetName(), err)
	}
	deadline := start.Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// The committed offsets are read only when a batch has committed: the
	// coordinator answers them with a ListOffsets of every partition, which
	// at 1,024 partitions would load the broker the job reads from.
	var committed, lastBatch int64
	for {
		j, err := c.Job(ctx, spec.GetName())
		if err != nil {
			return JobRun{}, fmt.Errorf("job %s: %w", spec.GetName(), err)
		}
		if j.GetLastBatchId() != lastBatch {
			lastBatch = j.GetLastBatchId()
			if committed, err = committedRecords(ctx, c, spec.GetName(), topic, len(ends)); err != nil {
				return JobRun{}, err
			}
		}
		if committed == total {
			list, err := c.Batches(ctx, spec.GetName(), 10000)
			if err != nil || len(list) == 0 {
				return JobRun{}, fmt.Errorf("batches of %s: %v", spec.GetName(), err)
			}
			b := list[0] // the newest
			run := JobRun{Done: true, Elapsed: b.GetCommitTime().AsTime().Sub(start), Committed: committed, Batches: b.GetId()}
			for _, b := range list {
				run.MaxBatchRecords = max(run.MaxBatchRecords, b.GetMetrics().GetRecordsIn())
				run.MaxProcessing = max(run.MaxProcessing, b.GetMetrics().GetProcessingTime().AsDuration())
				if b.GetCap().GetLimited() {
					run.Capped++
				}
			}
			return run, nil
		}
		if failed := j.GetState() == sluicev1.JobState_JOB_STATE_FAILED; failed || time.Now().After(deadline) {
			msg := "failed: " + j.GetMessage()
			if !failed {
				msg = fmt.Sprintf("not done after %s", timeout.Round(time.Second))
				if m := j.GetMessage(); m != "" {
					msg += " (" + m + ")"
				}
			}
			if committed, err = committedRecords(ctx, c, spec.GetName(), topic, len(ends)); err != nil {
				return JobRun{}, err
			}
			return JobRun{Elapsed: time.Since(start), Committed: committed, Batches: j.GetLastBatchId(), Message: msg}, nil
		}
		select {
		case <-ctx.Done():
			return JobRun{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// committedRecords sums the committed offsets of topic's partitions
// 0..partitions-1 (which start at 0).
func committedRecords(ctx context.Context, c *client.Client, job, topic string, partitions int) (int64, error) {
	resp, err := c.Offsets(ctx, job)
	if err != nil {
		return 0, fmt.Errorf("offsets of %s: %w", job, err)
	}
	var n int64
	for _, p := range resp.GetPartitions() {
		if p.GetTopic() == topic && int(p.GetPartition()) < partitions {
			n += max(p.GetCommitted(), 0)
		}
	}
	return n, nil
}

// VerifyTruth compares the job's merged results with truth exactly: every
// page, its count and its sum.
func VerifyTruth(ctx context.Context, c *client.Client, job string, truth Truth) error {
	resp, err := c.AllResults(ctx, &sluicev1.GetResultsRequest{Job: job, Merge: true}, func(*sluicev1.BatchResult) error { return nil })
	if err != nil {
		return fmt.Errorf("results of %s: %w", job, err)
	}
	if resp.GetPruned() {
		return fmt.Errorf("results of %s: batches were pruned (coordinator --keep-batches); cannot check the counts", job)
	}
	got := Truth{}
	for _, a := range resp.GetMerged() {
		got[a.GetKey()] = Agg{Count: a.GetCount(), Sum: int64(a.GetSum())}
		if float64(int64(a.GetSum())) != a.GetSum() {
			return fmt.Errorf("results of %s: page %s sums to %v, not a whole number", job, a.GetKey(), a.GetSum())
		}
	}
	return diffTruth(got, truth)
}

// diffTruth describes the first differences between got and want.
func diffTruth(got, want Truth) error {
	var diffs []string
	for k, w := range want {
		if g := got[k]; g != w {
			diffs = append(diffs, fmt.Sprintf("%s: count %d sum %d, want count %d sum %d", k, g.Count, g.Sum, w.Count, w.Sum))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: count %d sum %d, want none", k, g.Count, g.Sum))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	n, more := len(diffs), ""
	if len(diffs) > 3 {
		more = fmt.Sprintf(" (and %d more)", len(diffs)-3)
		diffs = diffs[:3]
	}
	return fmt.Errorf("%d pages differ from the ground truth: %s%s", n, strings.Join(diffs, "; "), more)
}
