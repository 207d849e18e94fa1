package jobspec

import (
	"strconv"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// DeadLetterTxn reports whether the job writes its dead letters in Kafka
// transactions of its own: RECORD_ERROR_POLICY_DEAD_LETTER without a Kafka
// sink, or with the update stream of an aggregate, which the coordinator
// writes (else the sink's producer carries them in the task's transaction).
func DeadLetterTxn(spec *sluicev1.JobSpec) bool {
	return spec.GetDeadLetter().GetTopic() != "" && (spec.GetSink().GetKafka() == nil || spec.GetAggregate() != nil) &&
		spec.GetOnRecordError() == sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER
}

// PerPartitionTasks reports whether every task must read one range of one
// partition, never packed with others nor split: its writes are Kafka
// transactions per source partition, which commit the range's end offset
// and find it committed when a retry comes (the transactional Kafka sink,
// and dead letters written in transactions of their own).
func PerPartitionTasks(spec *sluicev1.JobSpec) bool {
	return Transactional(spec) || DeadLetterTxn(spec)
}

// DeadLetterCluster is the cluster of the dead-letter topic: the Kafka
// sink's, else dead_letter's bootstrap servers, else the source's cluster
// (with the source's client properties). dead_letter's connection
// properties apply over them, as the sink's do.
func DeadLetterCluster(spec *sluicev1.JobSpec) kafkasrc.Cluster {
	if spec.GetSink().GetKafka() != nil {
		return Sink(spec)
	}
	dl := spec.GetDeadLetter()
	return targetCluster(spec, dl.GetBootstrapServers(), dl.GetProperties())
}

// DeadLetterIDPrefix starts the transactional ids of DeadLetterTxn jobs.
const DeadLetterIDPrefix = "sluice-dlq"

// DeadLetterTransactionalID is the transactional id that writes the dead
// letters of one source partition of the job's incarnation (DeadLetterTxn):
// "sluice-dlq:<job>:<incarnation>:<topic>:<partition>".
func DeadLetterTransactionalID(spec *sluicev1.JobSpec, incarnation, topic string, partition int32) string {
	sep := ":"
	if incarnation == "" {
		sep = "-"
	}
	return DeadLetterTransactionalIDPrefix(spec, incarnation) + topic + sep + strconv.FormatInt(int64(partition), 10)
}

// DeadLetterTransactionalIDPrefix is what every DeadLetterTransactionalID
// of the job's incarnation starts with.
func DeadLetterTransactionalIDPrefix(spec *sluicev1.JobSpec, incarnation string) string {
	sep := ":"
	if incarnation == "" {
		sep = "-"
	}
	return DeadLetterIDPrefix + sep + spec.GetName() + sep + incarnation + sep
}

// DeadLetterGroupID is the consumer group whose offsets the dead-letter
// transactions commit (DeadLetterTxn): a range whose end it already holds
// wrote its dead letters in an earlier attempt. It is not the job's group,
// which the coordinator sets from its own commits.
func DeadLetterGroupID(job, incarnation string) string {
	return GroupID(job, incarnation) + ":dlq"
}
