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
		} else if d > maxDuration {
			return invalid("batch_interval", "%s is above the 24h maximum", d)
		}
	}
	if err := validateLimits(spec.GetLimits()); err != nil {
		return err
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

// Bounds of the limits. The planner multiplies the rate by the batch interval
// in milliseconds: 1e9 records/s x 24h stays far below 2^63.
const (
	maxDuration         = 24 * time.Hour // batch_interval, limits.task_timeout
	maxRatePerPartition = 1_000_000_000
	maxRecordsPerBatch  = 1_000_000_000_000
	maxTaskAttempts     = 100
	maxTaskRetries      = 1000
)

// validateLimits checks spec.limits; nil is the defaults. Zero means the
// default for every field but task_timeout, which is omitted for its default.
func validateLimits(lim *sluicev1.Limits) error {
	if lim == nil {
		return nil
	}
	if r := lim.GetMaxRatePerPartition(); r < 0 || r > maxRatePerPartition {
		return invalid("limits.max_rate_per_partition", "%d: use 0 (unlimited) to %d records per second", r, maxRatePerPartition)
	}
	if n := lim.GetMaxRecordsPerBatch(); n < 0 || n > maxRecordsPerBatch {
		return invalid("limits.max_records_per_batch", "%d: use 0 (unlimited) to %d records", n, maxRecordsPerBatch)
	}
	if n := lim.GetMaxTaskAttempts(); n < 0 || n > maxTaskAttempts {
		return invalid("limits.max_task_attempts", "%d: use 1 to %d, or 0 for the default 4", n, maxTaskAttempts)
	}
	if n := lim.GetMaxTaskRetries(); n < 0 || n > maxTaskRetries {
		return invalid("limits.max_task_retries", "%d: use 0 to %d (0 for the default 30)", n, maxTaskRetries)
	}
	if tt := lim.GetTaskTimeout(); tt != nil {
		if err := tt.CheckValid(); err != nil {
			return invalid("limits.task_timeout", "%v", err)
		}
		// A huge timeout would overflow into a deadline in the past.
		switch d := tt.AsDuration(); {
		case d <= 0:
			return invalid("limits.task_timeout", "%s: must be positive (omit it for the default 60s)", d)
		case d > maxDuration:
			return invalid("limits.task_timeout", "%s is above the 24h maximum", d)
		}
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
