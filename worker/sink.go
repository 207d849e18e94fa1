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

// writeKafka writes a task's output records to the Kafka sink: in one
// transaction with the source range's end offset (exactly-once), or with an
// idempotent producer (at-least-once). Every record carries sluice-job,
// sluice-batch and sluice-src headers so that readers can de-duplicate.
func (w *Worker) writeKafka(ctx context.Context, task *sluicev1.Task, k *sluicev1.KafkaSink, recs []*sluicev1.OutputRecord) error {
	job, batch := task.GetKey().GetJob(), strconv.FormatInt(task.GetKey().GetBatchId(), 10)
	msgs := make([]kafkasrc.Message, len(recs))
	for i, r := range recs {
		hdrs := make([]record.Header, 0, len(r.GetHeaders())+3)
		for _, h := range r.GetHeaders() {
			hdrs = append(hdrs, record.Header{Key: h.GetKey(), Value: h.GetValue()})
		}
		hdrs = append(hdrs,
			record.Header{Key: "sluice-job", Value: []byte(job)},
			record.Header{Key: "sluice-batch", Value: []byte(batch)},
			record.Header{Key: "sluice-src", Value: fmt.Appendf(nil, "%s/%d/%d", r.GetTopic(), r.GetPartition(), r.GetOffset())})
		msgs[i] = kafkasrc.Message{Topic: r.GetSinkTopic(), Partition: r.GetSinkPartition(), Key: r.GetKey(), Value: r.GetValue(), Headers: hdrs}
	}
	spec, inc := task.GetSpec(), task.GetIncarnation()
	target := jobspec.Sink(spec)
	if !jobspec.Transactional(spec) {
		err := w.sinks.WriteIdempotent(ctx, kafkasrc.IdempotentTask{
			Job: job, Incarnation: inc, Cluster: target, Properties: k.GetProperties(),
		}, msgs)
		if err == nil {
			w.cfg.Failpoints.Hit("after-sink-write")
		}
		return err
	}
	r := task.GetRange()
	skipped, err := w.sinks.Transact(ctx, kafkasrc.TxnTask{
		Job:             job,
		Incarnation:     inc,
		Cluster:         target,
		Properties:      k.GetProperties(),
		TransactionalID: jobspec.TransactionalID(spec, inc, r.GetTopic(), r.GetPartition()),
		Timeout:         k.GetTransactionTimeout().AsDuration(),
		Group:           jobspec.GroupID(job, inc),
		Source:          kafkasrc.Range{Topic: r.GetTopic(), Partition: r.GetPartition(), From: r.GetFromOffset(), Until: r.GetUntilOffset()},
		BeforeCommit:    func() { w.cfg.Failpoints.Hit("mid-txn") },
	}, msgs)
	if err == nil {
		w.cfg.Failpoints.Hit("after-sink-write")
	}
	if skipped {
		w.logger.Info("range already committed to Kafka by an earlier attempt; not written again",
			"job", job, "batch", batch, "topic", r.GetTopic(), "partition", r.GetPartition(), "until", r.GetUntilOffset())
	}
	return err
}
