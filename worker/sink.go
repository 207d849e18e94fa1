package worker

import (
	"context"
	"fmt"
	"strconv"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// A Kafka sink's output leaves the steps in chunks of at most this many
// bytes (as steps counts them) or records, whichever comes first: a task's
// memory is a chunk and the producer's queue, whatever its output.
const (
	chunkBytes   = 1 << 20
	chunkRecords = 4096
)

// kafkaOutput writes a task's output records to the Kafka sink as the task
// produces them: in one transaction with the source range's end offset
// (exactly-once), or with an idempotent producer (at-least-once). Every
// record carries sluice-job, sluice-batch and sluice-src headers so that
// readers can de-duplicate.
//
// The transaction (or the producer) is opened with the first chunk, so that
// a task whose output fits in one chunk holds it open no longer than it
// takes to write it. When an earlier attempt already committed the range,
// nothing is written and the output is dropped.
type kafkaOutput struct {
	w     *Worker
	task  *sluicev1.Task
	sink  *sluicev1.KafkaSink
	job   string
	batch string
	// The header values shared by every record (the producer copies them).
	jobHdr, batchHdr []byte
	txn              *kafkasrc.TxnWrite
	idem             *kafkasrc.IdemWrite
	opened           bool
	// skipped: the range was committed by an earlier attempt.
	skipped bool
	msgs    []kafkasrc.Message // reused for every chunk
	chunks  int                // written
	// dead: dead letters to write with the next chunk (deadletter.go).
	dead []*sluicev1.OutputRecord
	// fans: the job has a flatMap or a processor step, so a source record
	// may have several output records; they get a sluice-src-element header.
	fans bool
}

func (w *Worker) newKafkaOutput(task *sluicev1.Task, k *sluicev1.KafkaSink) *kafkaOutput {
	o := &kafkaOutput{
		w: w, task: task, sink: k,
		job: task.GetKey().GetJob(), batch: strconv.FormatInt(task.GetKey().GetBatchId(), 10),
	}
	o.jobHdr, o.batchHdr = []byte(o.job), []byte(o.batch)
	for _, s := range task.GetSpec().GetSteps() {
		o.fans = o.fans || s.GetFlatMap() != "" || s.GetProcessor() != nil
	}
	return o
}

// full reports whether the runner's pending output makes a chunk.
func full(pending int, bytes int64) bool { return pending >= chunkRecords || bytes >= chunkBytes }

// open begins the transaction, or takes the idempotent producer. The check
// that the range is not committed yet comes before anything is produced.
func (o *kafkaOutput) open(ctx context.Context) error {
	o.opened = true
	spec, inc := o.task.GetSpec(), o.task.GetIncarnation()
	target := jobspec.Sink(spec)
	if !jobspec.Transactional(spec) {
		w, err := o.w.sinks.OpenIdempotent(kafkasrc.IdempotentTask{
			Job: o.job, Incarnation: inc, Cluster: target, Properties: o.sink.GetProperties(),
		})
		o.idem = w
		return err
	}
	r := o.task.GetRange()
	txn, skipped, err := o.w.sinks.BeginTxn(ctx, o.w.taskTxn(o.task, kafkasrc.TxnTask{
		Job:             o.job,
		Incarnation:     inc,
		Cluster:         target,
		Properties:      o.sink.GetProperties(),
		TransactionalID: jobspec.TransactionalID(spec, inc, r.GetTopic(), r.GetPartition()),
		Timeout:         o.sink.GetTransactionTimeout().AsDuration(),
		Group:           jobspec.GroupID(o.job, inc),
	}))
	if err != nil {
		return err
	}
	if skipped {
		o.skipped = true
		o.w.logger.Info("range already committed to Kafka by an earlier attempt; not written again",
			"job", o.job, "batch", o.batch, "topic", r.GetTopic(), "partition", r.GetPartition(), "until", r.GetUntilOffset())
	}
	o.txn = txn
	return nil
}

// write produces one chunk of output records.
func (o *kafkaOutput) write(ctx context.Context, recs []*sluicev1.OutputRecord) error {
	if !o.opened {
		if err := o.open(ctx); err != nil {
			return err
		}
	}
	dead := o.dead
	o.dead = nil
	if o.skipped || len(recs)+len(dead) == 0 {
		return nil
	}
	msgs := deadLetterMessages(o.messages(recs), dead)
	o.msgs = msgs
	var err error
	if o.txn != nil {
		err = o.txn.Write(ctx, msgs)
	} else {
		err = o.idem.Write(ctx, msgs)
	}
	if err == nil {
		o.chunks++
		if f := o.w.afterChunk; f != nil {
			f(o.task, o.chunks)
		}
	}
	return err
}

// finish writes the last chunk and commits the transaction, or waits for
// every record's delivery.
func (o *kafkaOutput) finish(ctx context.Context, recs []*sluicev1.OutputRecord) error {
	// Open even without output: the transaction commits the range's offset.
	if err := o.write(ctx, recs); err != nil {
		return err
	}
	var err error
	switch {
	case o.skipped:
		return nil
	case o.txn != nil:
		err = o.txn.Commit(ctx)
	default:
		err = o.idem.Flush(ctx)
	}
	if err == nil {
		o.w.cfg.Failpoints.Hit("after-sink-write")
	}
	return err
}

// close aborts a transaction that did not commit and releases the
// producer; call it however the task ends.
func (o *kafkaOutput) close() {
	if o.txn != nil {
		o.txn.Close()
	}
	if o.idem != nil {
		o.idem.Close()
	}
}

// messages converts output records to Kafka messages with Sluice's headers,
// in a slice reused from chunk to chunk (the producer copies what it needs).
func (o *kafkaOutput) messages(recs []*sluicev1.OutputRecord) []kafkasrc.Message {
	clear(o.msgs) // drop the previous chunk's references
	msgs := o.msgs[:0]
	var prev *sluicev1.OutputRecord
	elem := 0
	for _, r := range recs {
		hdrs := make([]record.Header, 0, len(r.GetHeaders())+4)
		for _, h := range r.GetHeaders() {
			hdrs = append(hdrs, record.Header{Key: h.GetKey(), Value: h.GetValue()})
		}
		hdrs = append(hdrs,
			record.Header{Key: "sluice-job", Value: o.jobHdr},
			record.Header{Key: "sluice-batch", Value: o.batchHdr},
			record.Header{Key: "sluice-src", Value: fmt.Appendf(nil, "%s/%d/%d", r.GetTopic(), r.GetPartition(), r.GetOffset())})
		if o.fans {
			// A record's outputs are consecutive and in one chunk: the
			// runner is drained between records.
			if prev != nil && prev.GetOffset() == r.GetOffset() && prev.GetPartition() == r.GetPartition() && prev.GetTopic() == r.GetTopic() {
				elem++
			} else {
				elem = 0
			}
			prev = r
			hdrs = append(hdrs, record.Header{Key: "sluice-src-element", Value: strconv.AppendInt(nil, int64(elem), 10)})
		}
		msgs = append(msgs, kafkasrc.Message{Topic: r.GetSinkTopic(), Partition: r.GetSinkPartition(), Key: r.GetKey(), Value: r.GetValue(), Headers: hdrs})
	}
	o.msgs = msgs
	return msgs
}

// taskTxn completes t, a Kafka transaction of task's source range: the
// range, fencing of the attempts before (a retry or a speculative copy),
// and the hooks before the commit.
func (w *Worker) taskTxn(task *sluicev1.Task, t kafkasrc.TxnTask) kafkasrc.TxnTask {
	r := task.GetRange()
	t.Source = kafkasrc.Range{Topic: r.GetTopic(), Partition: r.GetPartition(), From: r.GetFromOffset(), Until: r.GetUntilOffset()}
	t.Fence = task.GetSpeculative() || task.GetKey().GetAttempt() > 1
	t.BeforeCommit = func() {
		w.cfg.Failpoints.Hit("mid-txn")
		if f := w.cfg.BeforeCommit; f != nil {
			f(task)
		}
	}
	return t
}
