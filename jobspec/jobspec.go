// Package jobspec derives what coordinator and worker both need from a job
// spec, so that they agree on it: the Kafka clusters and the sink's mode.
package jobspec

import (
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Source is the cluster the job reads, with its isolation level.
func Source(spec *sluicev1.JobSpec) kafkasrc.Cluster {
	src := spec.GetSource()
	return kafkasrc.Cluster{
		Bootstrap:     src.GetBootstrapServers(),
		Properties:    src.GetProperties(),
		ReadCommitted: src.GetIsolationLevel() != sluicev1.IsolationLevel_ISOLATION_LEVEL_READ_UNCOMMITTED,
	}
}

// Sink is the cluster the Kafka sink writes to: its own bootstrap servers,
// or the source's cluster (with the source's client properties).
func Sink(spec *sluicev1.JobSpec) kafkasrc.Cluster {
	if b := spec.GetSink().GetKafka().GetBootstrapServers(); b != "" {
		return kafkasrc.Cluster{Bootstrap: b}
	}
	c := Source(spec)
	c.ReadCommitted = false
	return c
}

// Transactional reports whether the job writes Kafka transactions.
func Transactional(spec *sluicev1.JobSpec) bool {
	k := spec.GetSink().GetKafka()
	return k != nil && k.GetMode() != sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT
}

// TransactionalID is the transactional id of one source partition of the job.
func TransactionalID(spec *sluicev1.JobSpec, topic string, partition int32) string {
	return kafkasrc.TransactionalID(spec.GetSink().GetKafka().GetTransactionalIdPrefix(), spec.GetName(), topic, partition)
}
