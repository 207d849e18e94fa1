package coordinator

import (
	"context"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// abortTransactions aborts the open Kafka transactions of the job's
// incarnation (one transactional id per source partition) and returns their
// ids.
func (c *Coordinator) abortTransactions(ctx context.Context, job *sluicev1.Job) ([]string, error) {
	open, err := c.transactions(ctx, job)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, t := range open {
		if t.State == "Ongoing" || t.State == "PrepareCommit" || t.State == "PrepareAbort" {
			ids = append(ids, t.ID)
		}
	}
	spec := job.GetSpec()
	sink := jobspec.Sink(spec)
	if err := kafkasrc.AbortTransactions(ctx, sink, spec.GetSink().GetKafka().GetProperties(), ids, c.logger.Named("kafka")); err != nil {
		return nil, err
	}
	return ids, nil
}

// transactions lists the state of the transactional ids of the job's
// incarnation known to Kafka.
func (c *Coordinator) transactions(ctx context.Context, job *sluicev1.Job) ([]kafkasrc.TxnInfo, error) {
	spec, inc := job.GetSpec(), job.GetIncarnation()
	if err := CheckPolicy(spec, c.cfg.KafkaPolicy); err != nil {
		return nil, err // no Kafka client sees a refused property
	}
	r := &jobRunner{spec: spec, name: spec.GetName(), logger: c.logger}
	admin, err := c.admins.Get(r.cluster())
	if err != nil {
		return nil, err
	}
	tps, err := r.partitions(ctx, admin, nil)
	if err != nil {
		return nil, err
	}
	// Another job's ids may start with this one's prefix (its own prefix
	// may spell it): keep exactly this incarnation's ids.
	want := map[string]bool{}
	for _, tp := range tps {
		want[jobspec.TransactionalID(spec, inc, tp.Topic, tp.Partition)] = true
	}
	if jobspec.UpdateStream(spec) {
		want[jobspec.UpdatesTransactionalID(spec, inc)] = true // the coordinator's own
	}
	all, err := kafkasrc.ListTransactions(ctx, jobspec.Sink(spec), jobspec.TransactionalIDPrefix(spec, inc))
	if err != nil {
		return nil, err
	}
	var out []kafkasrc.TxnInfo
	for _, t := range all {
		if want[t.ID] {
			out = append(out, t)
		}
	}
	return out, nil
}
