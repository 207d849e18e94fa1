package worker

import (
	"context"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
	"github.com/sluice-stream/sluice/steps"
)

// deadLetterOutput writes the dead letters of a task without a Kafka sink
// in a Kafka transaction of its own, which also commits the source range's
// end offset to the job's dead-letter group: a retried or speculative
// attempt of a range whose dead letters are committed finds that offset and
// writes nothing, and a newer attempt fences an older one. So the dead
// letters are exactly-once, as the transactional Kafka sink's output is.
// The transaction begins with the first dead letter: a task without any
// makes no Kafka client.
type deadLetterOutput struct {
	w       *Worker
	task    *sluicev1.Task
	txn     *kafkasrc.TxnWrite
	opened  bool
	skipped bool // committed by an earlier attempt
}

func (w *Worker) newDeadLetterOutput(task *sluicev1.Task) *deadLetterOutput {
	return &deadLetterOutput{w: w, task: task}
}

func (o *deadLetterOutput) open(ctx context.Context) error {
	o.opened = true
	spec, inc, r := o.task.GetSpec(), o.task.GetIncarnation(), o.task.GetRange()
	job := o.task.GetKey().GetJob()
	txn, skipped, err := o.w.sinks.BeginTxn(ctx, o.w.taskTxn(o.task, kafkasrc.TxnTask{
		Job:             job,
		Incarnation:     inc,
		Cluster:         jobspec.DeadLetterCluster(spec),
		Properties:      spec.GetDeadLetter().GetProperties(),
		TransactionalID: jobspec.DeadLetterTransactionalID(spec, inc, r.GetTopic(), r.GetPartition()),
		Group:           jobspec.DeadLetterGroupID(job, inc),
	}))
	if err != nil {
		return err
	}
	if skipped {
		o.skipped = true
		o.w.logger.Info("dead letters of the range already committed by an earlier attempt; not written again",
			"job", job, "batch", o.task.GetKey().GetBatchId(), "topic", r.GetTopic(), "partition", r.GetPartition(), "until", r.GetUntilOffset())
	}
	o.txn = txn
	return nil
}

// write produces dead letters in the transaction, beginning it first.
func (o *deadLetterOutput) write(ctx context.Context, dead []*sluicev1.OutputRecord) error {
	if len(dead) == 0 {
		return nil
	}
	if !o.opened {
		if err := o.open(ctx); err != nil {
			return err
		}
	}
	if o.skipped {
		return nil
	}
	return o.txn.Write(ctx, deadLetterMessages(nil, dead))
}

// finish writes the last dead letters and commits, if there were any.
func (o *deadLetterOutput) finish(ctx context.Context, dead []*sluicev1.OutputRecord) error {
	if err := o.write(ctx, dead); err != nil {
		return err
	}
	if o.txn == nil || o.skipped {
		return nil
	}
	if err := o.txn.Commit(ctx); err != nil {
		return err
	}
	o.w.cfg.Failpoints.Hit("after-sink-write")
	return nil
}

// close aborts a transaction that did not commit and releases the writer.
func (o *deadLetterOutput) close() {
	if o.txn != nil {
		o.txn.Close()
	}
}

// deadLetterMessages appends the Kafka messages of dead letters to msgs:
// the record as read, with its headers and the sluice-dlq-* ones.
func deadLetterMessages(msgs []kafkasrc.Message, dead []*sluicev1.OutputRecord) []kafkasrc.Message {
	for _, d := range dead {
		hdrs := make([]record.Header, len(d.GetHeaders()))
		for i, h := range d.GetHeaders() {
			hdrs[i] = record.Header{Key: h.GetKey(), Value: h.GetValue()}
		}
		msgs = append(msgs, kafkasrc.Message{Topic: d.GetSinkTopic(), Partition: d.GetSinkPartition(), Key: d.GetKey(), Value: d.GetValue(), Headers: hdrs})
	}
	return msgs
}

// flushDeadLetters writes the runner's dead letters when they make a chunk:
// through the Kafka sink's output (with its pending records, in its
// transaction) or the task's own dead-letter transaction.
func flushDeadLetters(ctx context.Context, runner *steps.Runner, out *kafkaOutput, dlq *deadLetterOutput) error {
	if n, b := runner.PendingDeadLetters(); !full(n, b) {
		return nil
	}
	if out != nil {
		out.dead = runner.DrainDeadLetters()
		return out.write(ctx, runner.Drain())
	}
	return dlq.write(ctx, runner.DrainDeadLetters())
}
