// Package jobspec derives what coordinator and worker both need from a job
// spec, so that they agree on it: the Kafka clusters, the sink's mode and
// the names of the job's Kafka transactional ids and consumer group.
package jobspec

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"strconv"

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
// or the source's cluster (with the source's client properties). The sink
// properties that change how a client connects (security, sockets) apply,
// over the source's, to every client of the sink's cluster: its producers,
// the group consumer, the admin and txn list.
func Sink(spec *sluicev1.JobSpec) kafkasrc.Cluster {
	k := spec.GetSink().GetKafka()
	return targetCluster(spec, k.GetBootstrapServers(), k.GetProperties())
}

// targetCluster is the cluster a job writes to: bootstrap, or the source's
// cluster (with the source's client properties), with the properties of
// props that change how a client connects applied over them.
func targetCluster(spec *sluicev1.JobSpec, bootstrap string, props map[string]string) kafkasrc.Cluster {
	var c kafkasrc.Cluster
	if bootstrap != "" {
		c = kafkasrc.Cluster{Bootstrap: bootstrap}
	} else {
		c = Source(spec)
		c.ReadCommitted = false
	}
	if conn := kafkasrc.ConnectionProperties(props); len(conn) > 0 {
		merged := make(map[string]string, len(c.Properties)+len(conn))
		maps.Copy(merged, c.Properties)
		maps.Copy(merged, conn)
		c.Properties = merged
	}
	return c
}

// Transactional reports whether the job writes Kafka transactions.
func Transactional(spec *sluicev1.JobSpec) bool {
	k := spec.GetSink().GetKafka()
	return k != nil && k.GetMode() != sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT
}

// The Kafka sink's transactional ids and the job's consumer group name the
// job's incarnation (Job.incarnation: random, new when the job is created and
// when its offsets are reset), so that a job deleted and submitted again with
// the same name, or reset, never finds the transactions or the committed
// group offsets of an earlier one. Their parts are separated by ':', which
// job names (lowercase letters, digits and '-'), topic names (letters,
// digits, '.', '_' and '-') and incarnations (hex) cannot contain: read from
// the right, an id has one decomposition, so two jobs, or two incarnations,
// never share one, whatever prefix each picks.
//
// A job created before incarnations existed has an empty one; it keeps the
// names it had, "<prefix>-<job>-<topic>-<partition>" and "sluice-<job>", so
// that its open transactions are still fenced and its committed offsets still
// found after an upgrade.

// NewIncarnation returns a new random job incarnation: 16 lowercase hex
// digits.
func NewIncarnation() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("jobspec: no randomness for a job incarnation: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// DefaultTransactionalIDPrefix is the prefix of a sink without
// transactional_id_prefix.
const DefaultTransactionalIDPrefix = "sluice"

// TransactionalIDPrefix is what every transactional id of the job's
// incarnation starts with: "<prefix>:<job>:<incarnation>:". Other jobs' ids
// may start with it too (a prefix may contain the whole of it): match ids
// exactly with TransactionalID, not by prefix alone.
func TransactionalIDPrefix(spec *sluicev1.JobSpec, incarnation string) string {
	prefix := spec.GetSink().GetKafka().GetTransactionalIdPrefix()
	if prefix == "" {
		prefix = DefaultTransactionalIDPrefix
	}
	if incarnation == "" {
		return prefix + "-" + spec.GetName() + "-"
	}
	return prefix + ":" + spec.GetName() + ":" + incarnation + ":"
}

// TransactionalID is the transactional id of one source partition of the
// job's incarnation: "<prefix>:<job>:<incarnation>:<topic>:<partition>". It is
// stable across the incarnation's batches, so that a new attempt of a range
// fences the previous one, and bounded: one per source partition.
func TransactionalID(spec *sluicev1.JobSpec, incarnation, topic string, partition int32) string {
	sep := ":"
	if incarnation == "" {
		sep = "-"
	}
	return TransactionalIDPrefix(spec, incarnation) + topic + sep + strconv.FormatInt(int64(partition), 10)
}

// GroupID is the job incarnation's Kafka consumer group,
// "sluice:<job>:<incarnation>". Sluice never joins it (assign, not
// subscribe); it holds the job's offsets for lag tools and, with the
// transactional Kafka sink, the offsets committed with the output.
func GroupID(job, incarnation string) string {
	if incarnation == "" {
		return "sluice-" + job
	}
	return "sluice:" + job + ":" + incarnation
}
