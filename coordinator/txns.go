package coordinator

import (
	"context"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// abortTransactions aborts the open Kafka transactions of the job's
// incarnation (one transactional id per source partition: the Kafka sink's,
// or the dead letters' of a job without one) and returns their ids.
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
	cluster, props := jobspec.Sink(spec), spec.GetSink().GetKafka().GetProperties()
	if jobspec.DeadLetterTxn(spec) {
		cluster, props = jobspec.DeadLetterCluster(spec), spec.GetDeadLetter().GetProperties()
	}
	if err := kafkasrc.AbortTransactions(ctx, cluster, props, ids, c.logger.Named("kafka")); err != nil {
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
	id, cluster, prefix := jobspec.TransactionalID, jobspec.Sink(spec), jobspec.TransactionalIDPrefix(spec, inc)
	if jobspec.DeadLetterTxn(spec) {
		id, cluster = jobspec.DeadLetterTransactionalID, jobspec.DeadLetterCluster(spec)
		prefix = jobspec.DeadLetterTransactionalIDPrefix(spec, inc)
	}
	want := map[string]bool{}
	for _, tp := range tps {
		want[id(spec, inc, tp.Topic, tp.Partition)] = true
	}
	prefixes := []string{prefix}
	if jobspec.UpdateStream(spec) {
		// The coordinator's own, on the sink's cluster (the dead letters'
		// too when the job has both).
		want[jobspec.UpdatesTransactionalID(spec, inc)] = true
		if p := jobspec.TransactionalIDPrefix(spec, inc); p != prefix {
			prefixes = append(prefixes, p)
		}
	}
	var out []kafkasrc.TxnInfo
	for _, prefix := range prefixes {
		all, err := kafkasrc.ListTransactions(ctx, cluster, prefix)
		if err != nil {
			return nil, err
		}
		for _, t := range all {
			if want[t.ID] {
				out = append(out, t)
			}
		}
	}
	return out, nil
}
