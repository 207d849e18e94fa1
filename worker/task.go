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

// program returns the job's compiled steps, compiling once per spec version.
func (w *Worker) program(task *sluicev1.Task) (*steps.Program, error) {
	job := task.GetKey().GetJob()
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.programs[job]; ok && c.version == task.GetSpecVersion() {
		return c.prog, nil
	}
	prog, err := steps.Compile(task.GetSpec())
	if err != nil {
		return nil, err
	}
	w.programs[job] = compiled{version: task.GetSpecVersion(), prog: prog}
	return prog, nil
}

// runTask reads the task's range and applies the steps; any failure is
// reported in the result for the coordinator to retry.
func (w *Worker) runTask(ctx context.Context, task *sluicev1.Task) *sluicev1.TaskResult {
	start := time.Now()
	res := &sluicev1.TaskResult{Key: task.GetKey()}
	fail := func(err error) *sluicev1.TaskResult {
		res.Error = err.Error()
		res.Retryable = retryable(err)
		res.Duration = durationpb.New(time.Since(start))
		w.logger.Warn("task failed", "job", task.GetKey().GetJob(), "batch", task.GetKey().GetBatchId(),
			"task", task.GetKey().GetIndex(), "attempt", task.GetKey().GetAttempt(), "error", err)
		return res
	}
	prog, err := w.program(task)
	if err != nil {
		return fail(fmt.Errorf("compile steps: %w", err))
	}
	if d := task.GetTimeout().AsDuration(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	spec := task.GetSpec()
	cl := jobspec.Source(spec)
	r := task.GetRange()
	runner := prog.NewRunner()
	first := true
	_, err = w.cache.Read(ctx, cl, kafkasrc.GroupID(spec.GetName()), kafkasrc.Range{
		Topic: r.GetTopic(), Partition: r.GetPartition(), From: r.GetFromOffset(), Until: r.GetUntilOffset(),
	}, func(rec *record.Record) error {
		if first {
			first = false
			w.cfg.Failpoints.Hit("mid-task")
		}
		return runner.Process(rec)
	})
	if err != nil {
		return fail(err)
	}
	out := runner.Result()
	res.RecordsIn, res.RecordsOut, res.RecordsFailed = out.In, out.Out, out.Failed
	res.Aggregates, res.Records = out.Aggregates, out.Records
	if k := spec.GetSink().GetKafka(); k != nil {
		if err := w.writeKafka(ctx, task, k, out.Records); err != nil {
			return fail(err)
		}
		res.Records = nil // written to Kafka, not collected
	}
	res.Duration = durationpb.New(time.Since(start))
	return res
}

// retryable tells transient failures (Kafka unreachable or slow, a task
// deadline) from those that a retry would repeat: a record the steps reject
// under the FAIL policy, offsets Kafka no longer has, a spec that does not compile.
func retryable(err error) bool {
	var re *steps.RecordError
	var fe *steps.FieldError
	switch {
	case errors.As(err, &re), errors.As(err, &fe),
		errors.Is(err, kafkasrc.ErrOffsetOutOfRange), errors.Is(err, kafkasrc.ErrInvalidRange):
		return false
	}
	return true
}
