package jobspec

import sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"

// UpdateStream reports whether the job's Kafka sink receives its aggregate
// state as an update stream: a Kafka sink after an aggregate that keeps
// state across batches (running totals or windows). The coordinator, not
// the tasks, writes it, after each batch's commit.
func UpdateStream(spec *sluicev1.JobSpec) bool {
	a := spec.GetAggregate()
	return spec.GetSink().GetKafka() != nil && (a.GetRunning() || a.GetWindow() != nil)
}

// UpdatesTransactionalID is the transactional id the coordinator writes the
// job incarnation's update stream with: "<prefix>:<job>:<incarnation>:~updates".
// '~' is in no topic name, so no source partition's id is equal to it.
func UpdatesTransactionalID(spec *sluicev1.JobSpec, incarnation string) string {
	return TransactionalIDPrefix(spec, incarnation) + "~updates"
}

// UpdatesGroupID is the consumer group whose committed offset, written in
// each update transaction, is the id of the last batch whose updates are in
// Kafka: "<group>:~updates".
func UpdatesGroupID(job, incarnation string) string {
	return GroupID(job, incarnation) + ":~updates"
}
