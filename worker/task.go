package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
	"github.com/sluice-stream/sluice/steps"
)

// program returns the job's compiled steps and its decoders, compiling once
// per spec version.
func (w *Worker) program(task *sluicev1.Task) (compiled, error) {
	job := task.GetKey().GetJob()
	if c, ok := w.programs.Get(job); ok && c.version == task.GetSpecVersion() {
		return c, nil
	}
	// Two tasks of a new version may both compile; the results are equal.
	prog, err := steps.Compile(task.GetSpec(), steps.WithProcessors(w.processors))
	if err != nil {
		return compiled{}, err
	}
	c := compiled{version: task.GetSpecVersion(), prog: prog}
	if c.keyDec, c.valueDec, err = decoders(prog, task.GetSpec().GetSource()); err != nil {
		return compiled{}, err
	}
	w.programs.Add(job, c)
	return c, nil
}

// runTask reads the task's range and applies the steps; any failure is
// reported in the result for the coordinator to retry.
func (w *Worker) runTask(ctx context.Context, task *sluicev1.Task) *sluicev1.TaskResult {
	start := time.Now()
	res := &sluicev1.TaskResult{Key: task.GetKey(), Range: task.GetRange(), Ranges: task.GetRanges(), SpecVersion: task.GetSpecVersion()}
	fail := func(err error) *sluicev1.TaskResult {
		res.Error = err.Error()
		switch classify(ctx, err) {
		case errTransient:
			res.Retryable = true
		case errFatal:
			res.Fatal = true
		}
		res.Duration = durationpb.New(time.Since(start))
		w.logger.Warn("task failed", "job", task.GetKey().GetJob(), "batch", task.GetKey().GetBatchId(),
			"task", task.GetKey().GetIndex(), "attempt", task.GetKey().GetAttempt(), "error", err)
		return res
	}
	c, err := w.program(task)
	if err != nil {
		return fail(fmt.Errorf("compile steps: %w", err))
	}
	prog := c.prog
	if d := min(task.GetTimeout().AsDuration(), maxTaskTimeout); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	spec := task.GetSpec()
	if len(task.GetRanges()) > 0 && jobspec.PerPartitionTasks(spec) {
		// Its transactions are per source partition: the coordinator never
		// packs such ranges, and a task that does is refused, not half run.
		return fail(fmt.Errorf("a task with %d ranges for a transactional Kafka sink or dead letters: %w", len(task.GetRanges()), errBadTask))
	}
	runner := prog.NewRunnerContext(ctx)
	if task.WatermarkUnixMs != nil {
		runner.SetWatermark(task.GetWatermarkUnixMs())
	}
	if c.keyDec != nil || c.valueDec != nil {
		runner.SetDecoders(c.keyDec, c.valueDec)
	}
	var out *kafkaOutput
	switch k := spec.GetSink().GetKafka(); {
	case k != nil && spec.GetAggregate() == nil: // after an aggregate, the coordinator writes the sink
		// Written as it comes, a chunk at a time: the limit is a safety
		// net that a drained runner never reaches.
		out = w.newKafkaOutput(task, k)
		defer out.close()
		runner.SetOutputLimit(steps.OutputLimit{Bytes: jobspec.MaxTaskOutputBytes})
	case spec.GetAggregate() != nil:
		runner.SetOutputLimit(steps.OutputLimit{Bytes: jobspec.MaxTaskOutputBytes})
	default:
		runner.SetOutputLimit(steps.OutputLimit{
			Bytes: jobspec.TaskOutputBytes(spec), Field: "limits.max_task_output_bytes", Max: jobspec.MaxTaskOutputBytes,
		})
	}
	var dlq *deadLetterOutput
	if prog.DeadLetters() && out == nil {
		dlq = w.newDeadLetterOutput(task)
		defer dlq.close()
	}
	first := true
	err = w.read(ctx, task, func(rec *record.Record) error {
		if first {
			first = false
			w.cfg.Failpoints.Hit("mid-task")
		}
		if err := runner.Process(rec); err != nil {
			return err
		}
		if out != nil && full(runner.Pending(), runner.OutputBytes()) {
			out.dead = runner.DrainDeadLetters()
			return out.write(ctx, runner.Drain())
		}
		if prog.DeadLetters() {
			return flushDeadLetters(ctx, runner, out, dlq)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if out != nil {
		out.dead = runner.DrainDeadLetters()
		if err := out.finish(ctx, runner.Drain()); err != nil {
			return fail(err)
		}
	}
	if dlq != nil {
		if err := dlq.finish(ctx, runner.DrainDeadLetters()); err != nil {
			return fail(err)
		}
	}
	result := runner.Result()
	res.RecordsIn, res.RecordsOut, res.RecordsFailed = result.In, result.Out, result.Failed
	res.RecordsDeadLettered = result.DeadLettered
	res.Aggregates, res.Records = result.Aggregates, result.Records
	if ev := runner.EventResult(); ev.Seen {
		res.Windows, res.RecordsLate = ev.Windows, ev.Late
		res.MaxEventTimeUnixMs = &ev.MaxEventTime
	}
	res.Duration = durationpb.New(time.Since(start))
	return res
}

// errBadTask is a task the worker cannot run as sent.
var errBadTask = errors.New("worker: malformed task")

// smallRange: a task's single range below this many records is read
// through the pool, as packed ranges are. A job on hundreds of partitions
// whose ranges cannot be packed (the transactional Kafka sink) would
// otherwise cycle the consumer cache with a consumer per partition, each
// with its threads and connections.
const smallRange = 10_000

// read delivers the records of the task's ranges through the pool's
// sticky consumers, one for all the ranges of a task; on a cluster the
// pool reads through librdkafka (kafkasrc.Pool.OnFranz), one big range
// goes through the consumer cache instead, whose per-partition consumers
// keep their prefetch between batches.
func (w *Worker) read(ctx context.Context, task *sluicev1.Task, fn func(*record.Record) error) error {
	spec := task.GetSpec()
	cl, group := jobspec.Source(spec), jobspec.GroupID(spec.GetName(), task.GetIncarnation())
	rs := task.GetRanges()
	if r := task.GetRange(); len(rs) == 0 && (r.GetUntilOffset()-r.GetFromOffset() < smallRange || w.pool.OnFranz(cl)) {
		rs = []*sluicev1.OffsetRange{r}
	}
	if len(rs) > 0 {
		ranges := make([]kafkasrc.Range, len(rs))
		for i, r := range rs {
			ranges[i] = kafkasrc.Range{Topic: r.GetTopic(), Partition: r.GetPartition(), From: r.GetFromOffset(), Until: r.GetUntilOffset()}
		}
		start := time.Now()
		st, err := w.pool.ReadRanges(ctx, cl, group, ranges, fn)
		w.logger.Debug("read ranges", "job", task.GetKey().GetJob(), "batch", task.GetKey().GetBatchId(), "index", task.GetKey().GetIndex(), "ranges", len(ranges), "records", st.Records,
			"stashed", st.Stashed, "dropped", st.Dropped, "polls", st.Polls, "took_ms", time.Since(start).Milliseconds())
		return err
	}
	r := task.GetRange()
	_, err := w.cache.Read(ctx, cl, group, kafkasrc.Range{
		Topic: r.GetTopic(), Partition: r.GetPartition(), From: r.GetFromOffset(), Until: r.GetUntilOffset(),
	}, fn)
	return err
}

// maxTaskTimeout bounds a task's timeout, so that no value overflows into
// a deadline in the past.
const maxTaskTimeout = 24 * time.Hour

// errClass is what a task failure means for the coordinator.
type errClass int

const (
	// errTransient: Kafka unreachable or slow, the task's deadline; retried
	// with backoff, within the job's retry budget.
	errTransient errClass = iota
	// errFailed: may go away on another worker or attempt (offsets Kafka no
	// longer has are re-planned); counts against the job's attempts.
	errFailed
	// errFatal: any worker and any attempt would fail the same way (a
	// record the steps reject under the FAIL policy, a spec that does not
	// compile, output above its limit, a record Kafka refuses as too large,
	// a sink topic that does not exist, conflicting producer settings): the
	// job fails at once with the message.
	errFatal
)

func classify(ctx context.Context, err error) errClass {
	var re *steps.RecordError
	var fe *steps.FieldError
	var le *steps.OutputLimitError
	switch {
	case ctx.Err() != nil:
		// Whatever the error says, the task was cut short: its deadline.
		return errTransient
	case errors.As(err, &re), errors.As(err, &fe), errors.As(err, &le), errors.Is(err, kafkasrc.ErrPermanent), errors.Is(err, errBadTask):
		return errFatal
	case errors.Is(err, kafkasrc.ErrOffsetOutOfRange), errors.Is(err, kafkasrc.ErrInvalidRange):
		return errFailed
	}
	return errTransient
}
