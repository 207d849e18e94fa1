package bench

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// DefaultInterval is a job's batch interval when its spec sets none.
const DefaultInterval = time.Second

// SustainPartitions is the partition count of the sustained-rate topics, as
// the backlog's.
const SustainPartitions = 8

// SustainRun is one run of the click job against a producer at a fixed rate.
type SustainRun struct {
	Rate int
	// Achieved is the rate the producer managed (records/s).
	Achieved float64
	Held     bool
	// Why the rate did not hold; empty when it did.
	Why string
	// Over the batches of the last half of the window: how many, their
	// largest scheduling delay as recorded and as Spark would have had it
	// (QueuedDelay, see queuedDelays), and their longest processing time.
	Batches        int
	MaxSchedDelay  time.Duration
	MaxQueuedDelay time.Duration
	MaxProcessing  time.Duration
	// CatchUp runs from the producer's stop to the commit of its last
	// record; Behind is what was left when the wait ended without it.
	CatchUp time.Duration
	Behind  int64
}

// batchSample is what the verdict needs of a committed batch.
type batchSample struct {
	time       time.Time
	schedDelay time.Duration
	processing time.Duration
	commit     time.Time
}

// queuedDelays returns, for batches sorted by time, the scheduling delay
// each would have had, or caused at the next tick, if late batches queued as
// in Spark. Sluice's planner instead skips the ticks a late batch missed
// (the next batch reads their records), so its recorded scheduling delay
// never builds up: a job that falls behind shows longer batches and a
// growing lag instead. The queue replays each batch's cycle (from when its
// planning could start, the later of its batch time and the previous
// commit, to its commit) after the previous batch's replayed end. A batch's
// delay is its replayed start minus its batch time, plus its own planning
// time; the next tick's is the replayed end minus that tick. Without a
// backlog it is the recorded scheduling delay.
func queuedDelays(samples []batchSample, interval time.Duration) []time.Duration {
	out := make([]time.Duration, len(samples))
	var prevCommit, prevEnd time.Time
	for i, s := range samples {
		ready := s.time
		if prevCommit.After(ready) {
			ready = prevCommit
		}
		start := s.time.Add(s.schedDelay)
		plan := max(start.Sub(ready), 0)
		cycle := max(s.commit.Sub(ready), 0)
		vstart := s.time
		if prevEnd.After(vstart) {
			vstart = prevEnd
		}
		vend := vstart.Add(cycle)
		out[i] = max(vstart.Sub(s.time)+plan, vend.Sub(s.time.Add(interval)))
		prevCommit, prevEnd = s.commit, vend
	}
	return out
}

// judgeSustain decides whether a run held its rate. It held when the
// producer reached the rate, at least one batch was planned in the last half
// of the window, every such batch started within one interval of its batch
// time, both as recorded and as it would have queued in Spark
// (queuedDelays), and the job kept pace: it had committed every record
// within catchUpIntervals intervals of the producer's stop. samples are the
// committed batches in time order.
func judgeSustain(r SustainRun, samples []batchSample, from, to time.Time, interval time.Duration) SustainRun {
	r.Held = false
	r.Batches, r.MaxSchedDelay, r.MaxQueuedDelay, r.MaxProcessing = 0, 0, 0, 0
	queued := queuedDelays(samples, interval)
	for i, s := range samples {
		if s.time.Before(from) || s.time.After(to) {
			continue
		}
		r.Batches++
		r.MaxSchedDelay = max(r.MaxSchedDelay, s.schedDelay)
		r.MaxQueuedDelay = max(r.MaxQueuedDelay, queued[i])
		r.MaxProcessing = max(r.MaxProcessing, s.processing)
	}
	switch {
	case r.Achieved < 0.95*float64(r.Rate):
		r.Why = fmt.Sprintf("the producer reached only %s records/s", Human(r.Achieved))
	case r.Batches == 0:
		r.Why = "no batch committed in the last half of the window"
	case r.MaxSchedDelay >= interval:
		r.Why = fmt.Sprintf("scheduling delay reached %s (interval %s)", r.MaxSchedDelay.Round(time.Millisecond), interval)
	case r.MaxQueuedDelay >= interval:
		r.Why = fmt.Sprintf("queued as in Spark, scheduling delay would reach %s (interval %s; longest batch %s)",
			r.MaxQueuedDelay.Round(time.Millisecond), interval, r.MaxProcessing.Round(time.Millisecond))
	case r.Behind > 0:
		r.Why = fmt.Sprintf("fell behind: %d records uncommitted %s after the producer stopped", r.Behind, (catchUpIntervals * interval).Round(time.Millisecond))
	default:
		r.Held, r.Why = true, ""
	}
	return r
}

// catchUpIntervals is how long, in batch intervals, a job that keeps pace
// takes at most to commit the last record after the producer stops: the next
// tick, then that batch's processing (below one interval when it keeps pace),
// with one interval of slack.
const catchUpIntervals = 3

// Sustain runs the click job (default settings, from the earliest offset of
// a new topic) against a producer writing rate records/s for window, and
// judges whether the job held that rate over the last half of the window.
// The job is deleted at the end.
func Sustain(ctx context.Context, c *client.Client, brokers, topic string, rate int, window time.Duration) (SustainRun, error) {
	run := SustainRun{Rate: rate}
	if err := CreateTopic(ctx, brokers, topic, SustainPartitions); err != nil {
		return run, err
	}
	spec := ClickJob(topic, brokers, topic)
	if _, err := c.Submit(ctx, spec); err != nil {
		return run, fmt.Errorf("submit %s: %w", spec.GetName(), err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = c.Delete(dctx, spec.GetName())
	}()
	interval := DefaultInterval
	if j, err := c.Job(ctx, spec.GetName()); err == nil && j.GetSpec().GetBatchInterval().AsDuration() > 0 {
		interval = j.GetSpec().GetBatchInterval().AsDuration()
	}
	start := time.Now()
	produced, err := produceAtRate(ctx, brokers, topic, rate, window)
	if err != nil {
		return run, err
	}
	stop := time.Now()
	run.Achieved = float64(produced) / stop.Sub(start).Seconds()
	// Wait for the job to commit what was produced, a few intervals at most.
	deadline := stop.Add(catchUpIntervals * interval)
	for {
		committed, err := committedRecords(ctx, c, spec.GetName(), topic, SustainPartitions)
		if err != nil {
			return run, err
		}
		if committed >= produced {
			run.CatchUp = time.Since(stop)
			break
		}
		if time.Now().After(deadline) {
			run.Behind = produced - committed
			run.CatchUp = time.Since(stop)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	list, err := c.Batches(ctx, spec.GetName(), 10000)
	if err != nil {
		return run, fmt.Errorf("batches of %s: %w", spec.GetName(), err)
	}
	samples := make([]batchSample, 0, len(list))
	for _, b := range list {
		if b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED {
			continue
		}
		m := b.GetMetrics()
		samples = append(samples, batchSample{
			time: b.GetBatchTime().AsTime(), schedDelay: m.GetSchedulingDelay().AsDuration(),
			processing: m.GetProcessingTime().AsDuration(), commit: b.GetCommitTime().AsTime(),
		})
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i].time.Before(samples[j].time) })
	return judgeSustain(run, samples, start.Add(window/2), stop, interval), nil
}

// produceAtRate writes click events to topic's partitions round-robin at
// rate records/s for window and returns how many it wrote (all acknowledged).
func produceAtRate(ctx context.Context, brokers, topic string, rate int, window time.Duration) (int64, error) {
	cl, err := kgo.NewClient(append(ProducerOpts(brokers), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		return 0, fmt.Errorf("kafka producer: %w", err)
	}
	defer cl.Close()
	// A pool of events, reused: generating them would cost the job CPU.
	pool := make([][]byte, 4096)
	g := newEventGen(1, 0)
	for i := range pool {
		pool[i] = g.next(nil)
	}
	var failed atomic.Pointer[error]
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.CompareAndSwap(nil, &err)
		}
	}
	start := time.Now()
	var sent int64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now()
		elapsed := min(now.Sub(start), window)
		target := int64(math.Round(float64(rate) * elapsed.Seconds()))
		for ; sent < target; sent++ {
			cl.Produce(ctx, &kgo.Record{Partition: int32(sent % SustainPartitions), Value: pool[sent%int64(len(pool))]}, done)
		}
		if e := failed.Load(); e != nil {
			return sent, fmt.Errorf("produce to %s: %w", topic, *e)
		}
		if elapsed >= window {
			break
		}
		select {
		case <-ctx.Done():
			return sent, ctx.Err()
		case <-tick.C:
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return sent, fmt.Errorf("produce to %s: flush: %w", topic, err)
	}
	if e := failed.Load(); e != nil {
		return sent, fmt.Errorf("produce to %s: %w", topic, *e)
	}
	return sent, nil
}

// SearchRate finds the highest rate that holds: from start it doubles while
// runs hold (up to limit), or halves while they do not (down to start/16),
// then bisects between the highest rate that held and the lowest that did
// not, bisect times. Rates are rounded to two significant digits.
func SearchRate(ctx context.Context, start, limit, bisect int, run func(ctx context.Context, rate int) (SustainRun, error)) (best int, runs []SustainRun, err error) {
	held, failed := 0, 0
	try := func(rate int) (bool, error) {
		r, err := run(ctx, rate)
		if err != nil {
			return false, err
		}
		runs = append(runs, r)
		if r.Held {
			held = max(held, rate)
		} else if failed == 0 || rate < failed {
			failed = rate
		}
		return r.Held, nil
	}
	ok, err := try(start)
	if err != nil {
		return 0, runs, err
	}
	for rate := start; ; {
		if ok {
			rate *= 2
		} else {
			rate /= 2
		}
		if rate > limit || rate < start/16 {
			break
		}
		next, err := try(rate)
		if err != nil {
			return held, runs, err
		}
		if next != ok {
			break
		}
	}
	for range bisect {
		if held == 0 || failed == 0 {
			break
		}
		mid := roundRate((held + failed) / 2)
		if mid <= held || mid >= failed {
			break
		}
		if _, err := try(mid); err != nil {
			return held, runs, err
		}
	}
	return held, runs, nil
}

// roundRate rounds r to two significant digits.
func roundRate(r int) int {
	if r < 100 {
		return r
	}
	p := int(math.Pow10(int(math.Floor(math.Log10(float64(r)))) - 1))
	return (r + p/2) / p * p
}

// Human formats a rate like 12.3k or 1.05M.
func Human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}
