package coordinator

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// ValidationError is a job spec refused at submit; it names the field.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid job spec: %s: %s", e.Field, e.Reason)
}

var (
	jobNameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
)

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks a job spec before it is stored: every field, and every CEL
// expression compiled and type-checked.
func Validate(spec *sluicev1.JobSpec) error {
	if spec == nil {
		return invalid("spec", "a job spec is required")
	}
	if !jobNameRE.MatchString(spec.GetName()) {
		return invalid("name", "%q must be 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit", spec.GetName())
	}
	src := spec.GetSource()
	if src == nil {
		return invalid("source", "a Kafka source is required")
	}
	if src.GetBootstrapServers() == "" {
		return invalid("source.bootstrap_servers", "at least one host:port is required")
	}
	if len(src.GetTopics()) == 0 {
		return invalid("source.topics", "at least one topic is required")
	}
	topics := map[string]bool{}
	for i, t := range src.GetTopics() {
		if !topicNameRE.MatchString(t) || t == "." || t == ".." {
			return invalid(fmt.Sprintf("source.topics[%d]", i), "%q is not a valid Kafka topic name", t)
		}
		if topics[t] {
			return invalid(fmt.Sprintf("source.topics[%d]", i), "topic %q is listed twice", t)
		}
		topics[t] = true
	}
	if err := kafkasrc.ValidateProperties(src.GetProperties()); err != nil {
		return invalid("source.properties", "%v", err)
	}
	if _, ok := sluicev1.IsolationLevel_name[int32(src.GetIsolationLevel())]; !ok {
		return invalid("source.isolation_level", "unknown value %d", src.GetIsolationLevel())
	}
	if err := validateStart(src.GetStartingOffsets(), topics); err != nil {
		return err
	}
	if bi := spec.GetBatchInterval(); bi != nil {
		if err := bi.CheckValid(); err != nil {
			return invalid("batch_interval", "%v", err)
		}
		if d := bi.AsDuration(); d < 10*time.Millisecond {
			return invalid("batch_interval", "%s is below the 10ms minimum", d)
		}
	}
	if lim := spec.GetLimits(); lim != nil {
		switch {
		case lim.GetMaxRatePerPartition() < 0:
			return invalid("limits.max_rate_per_partition", "must not be negative")
		case lim.GetMaxRecordsPerBatch() < 0:
			return invalid("limits.max_records_per_batch", "must not be negative")
		case lim.GetMaxTaskAttempts() < 0:
			return invalid("limits.max_task_attempts", "must not be negative")
		case lim.GetTaskTimeout() != nil && lim.GetTaskTimeout().AsDuration() < 0:
			return invalid("limits.task_timeout", "must not be negative")
		}
	}
	if _, ok := sluicev1.RecordErrorPolicy_name[int32(spec.GetOnRecordError())]; !ok {
		return invalid("on_record_error", "unknown value %d", spec.GetOnRecordError())
	}
	if s := spec.GetSink(); s != nil && s.GetKind() == nil {
		return invalid("sink", "choose a sink kind (collect or kafka)")
	}
	if k := spec.GetSink().GetKafka(); k != nil {
		if err := validateKafkaSink(k); err != nil {
			return err
		}
	}
	if _, err := steps.Compile(spec); err != nil {
		var fe *steps.FieldError
		if errors.As(err, &fe) {
			return &ValidationError{Field: fe.Field, Reason: strings.TrimPrefix(fe.Error(), fe.Field+": ")}
		}
		return invalid("steps", "%v", err)
	}
	return nil
}

func validateStart(so *sluicev1.StartingOffsets, topics map[string]bool) error {
	switch k := so.GetKind().(type) {
	case nil:
	case *sluicev1.StartingOffsets_Position:
		if k.Position == sluicev1.StartPosition_START_POSITION_UNSPECIFIED {
			return invalid("source.starting_offsets.position", "choose START_POSITION_EARLIEST or START_POSITION_LATEST")
		}
		if _, ok := sluicev1.StartPosition_name[int32(k.Position)]; !ok {
			return invalid("source.starting_offsets.position", "unknown value %d", k.Position)
		}
	case *sluicev1.StartingOffsets_Timestamp:
		if err := k.Timestamp.CheckValid(); err != nil {
			return invalid("source.starting_offsets.timestamp", "%v", err)
		}
	case *sluicev1.StartingOffsets_Explicit:
		seen := map[partitionKey]bool{}
		for i, po := range k.Explicit.GetOffsets() {
			field := fmt.Sprintf("source.starting_offsets.explicit.offsets[%d]", i)
			if !topics[po.GetTopic()] {
				return invalid(field+".topic", "topic %q is not one of source.topics", po.GetTopic())
			}
			if po.GetPartition() < 0 {
				return invalid(field+".partition", "must not be negative")
			}
			if po.GetOffset() < 0 {
				return invalid(field+".offset", "must not be negative")
			}
			pk := partitionKey{po.GetTopic(), po.GetPartition()}
			if seen[pk] {
				return invalid(field, "partition %s is listed twice", pk)
			}
			seen[pk] = true
		}
	}
	return nil
}

// sinkOwned are producer properties the Kafka sink sets itself.
var sinkOwned = []string{"transactional.id", "transaction.timeout.ms", "enable.idempotence", "bootstrap.servers", "metadata.broker.list"}

func validateKafkaSink(k *sluicev1.KafkaSink) error {
	if _, ok := sluicev1.KafkaSinkMode_name[int32(k.GetMode())]; !ok {
		return invalid("sink.kafka.mode", "unknown value %d", k.GetMode())
	}
	if t := k.GetTopic(); t != "" && !topicNameRE.MatchString(t) {
		return invalid("sink.kafka.topic", "%q is not a valid Kafka topic name", t)
	}
	if p := k.GetTransactionalIdPrefix(); p != "" && !regexp.MustCompile(`^[a-zA-Z0-9._-]{1,100}$`).MatchString(p) {
		return invalid("sink.kafka.transactional_id_prefix", "%q: use letters, digits, '.', '_' or '-' (at most 100)", p)
	}
	if d := k.GetTransactionTimeout(); d != nil && (d.AsDuration() < time.Second || d.AsDuration() > time.Hour) {
		return invalid("sink.kafka.transaction_timeout", "%s: use 1s to 1h (and at most the broker's transaction.max.timeout.ms)", d.AsDuration())
	}
	for name := range k.GetProperties() {
		n := strings.TrimSpace(name)
		for _, owned := range sinkOwned {
			if n == owned || strings.HasPrefix(n, "go.") {
				return invalid("sink.kafka.properties", "property %q is set by Sluice", name)
			}
		}
	}
	return nil
}
