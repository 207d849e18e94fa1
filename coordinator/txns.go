package coordinator

import (
	"context"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// abortTransactions aborts the open Kafka transactions of a job's
// transactional ids (one per source partition) and returns their ids.
func (c *Coordinator) abortTransactions(ctx context.Context, spec *sluicev1.JobSpec) ([]string, error) {
	open, err := c.transactions(ctx, spec)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, t := range open {
		if t.State == "Ongoing" || t.State == "PrepareCommit" || t.State == "PrepareAbort" {
			ids = append(ids, t.ID)
		}
	}
	sink := jobspec.Sink(spec)
	if err := kafkasrc.AbortTransactions(ctx, sink, spec.GetSink().GetKafka().GetProperties(), ids, c.logger.Named("kafka")); err != nil {
		return nil, err
	}
	return ids, nil
}

// transactions lists the state of a job's transactional ids known to Kafka.
func (c *Coordinator) transactions(ctx context.Context, spec *sluicev1.JobSpec) ([]kafkasrc.TxnInfo, error) {
	r := &jobRunner{spec: spec, name: spec.GetName(), logger: c.logger}
	admin, err := c.admins.Get(r.cluster())
	if err != nil {
		return nil, err
	}
	tps, err := r.partitions(ctx, admin, nil)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, tp := range tps {
		want[jobspec.TransactionalID(spec, tp.Topic, tp.Partition)] = true
	}
	prefix := jobspec.TransactionalID(spec, "", 0)
	prefix = prefix[:len(prefix)-len("-0")]
	all, err := kafkasrc.ListTransactions(ctx, jobspec.Sink(spec).Bootstrap, prefix)
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
