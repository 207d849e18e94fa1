package coordinator

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
	"github.com/sluice-stream/sluice/window"
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
	if err := validateSizes(spec); err != nil {
		return err
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
	if err := validateFormats(src); err != nil {
		return err
	}
	if err := validatePlacement(spec.GetPlacement(), topics); err != nil {
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
	if err := validateWindow(spec); err != nil {
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
	if err := validateDeadLetter(spec.GetDeadLetter()); err != nil {
		return err
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
	maxJobRate          = 1_000_000_000_000 // records per second over a job
	maxFixedEntries     = 10_000
)

// labelRE is a worker label: what `sluice worker --label` accepts.
var labelRE = regexp.MustCompile(`^[A-Za-z0-9._=:-]{1,63}$`)

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
	if r := lim.GetMinRatePerPartition(); r < 0 || r > maxRatePerPartition {
		return invalid("limits.min_rate_per_partition", "%d: use 0 (none) to %d records per second", r, maxRatePerPartition)
	}
	if mx, mn := lim.GetMaxRatePerPartition(), lim.GetMinRatePerPartition(); mx > 0 && mn > mx {
		return invalid("limits.min_rate_per_partition", "%d is above limits.max_rate_per_partition %d", mn, mx)
	}
	if r := lim.GetInitialRate(); r < 0 || r > maxJobRate {
		return invalid("limits.initial_rate", "%d: use 0 (the default %d) to %d records per second", r, defaultInitialRate, maxJobRate)
	}
	if n := lim.GetMaxRecordsPerTask(); n < 0 || n > maxRecordsPerBatch {
		return invalid("limits.max_records_per_task", "%d: use 0 (split hot partitions only) to %d records", n, maxRecordsPerBatch)
	}
	if n := lim.GetMaxTaskOutputBytes(); n < 0 || n > jobspec.MaxTaskOutputBytes {
		return invalid("limits.max_task_output_bytes", "%d: use 0 (the default %d) to %d bytes", n, jobspec.DefaultTaskOutputBytes, jobspec.MaxTaskOutputBytes)
	}
	if k := lim.GetSpeculationMultiplier(); math.IsNaN(k) || k > jobspec.MaxSpeculationMultiplier || (k > 0 && k < 1) {
		return invalid("limits.speculation_multiplier", "%v: use 1 to %v, 0 for the default %v, or a negative value to turn speculation off",
			k, jobspec.MaxSpeculationMultiplier, jobspec.DefaultSpeculationMultiplier)
	}
	if n := lim.GetMaxStateKeys(); n < 0 || n > window.MaxKeys {
		return invalid("limits.max_state_keys", "%d: use 0 (the default %d) to %d keys", n, window.DefaultMaxKeys, window.MaxKeys)
	}
	if err := validateBackpressure(lim.GetBackpressure()); err != nil {
		return err
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

// maxGain bounds the PID gains: a gain above it is a typo, not a tuning.
const maxGain = 100

func validateBackpressure(bp *sluicev1.Backpressure) error {
	if bp == nil {
		return nil
	}
	gains := []struct {
		field string
		v     *float64
	}{
		{"proportional", bp.Proportional}, {"integral", bp.Integral}, {"derivative", bp.Derivative},
	}
	for _, g := range gains {
		if g.v == nil {
			continue
		}
		if v := *g.v; math.IsNaN(v) || v < 0 || v > maxGain {
			return invalid("limits.backpressure."+g.field, "%v: use 0 to %d", v, maxGain)
		}
	}
	if r := bp.GetMinRate(); r < 0 || r > maxJobRate {
		return invalid("limits.backpressure.min_rate", "%d: use 0 (the default 100) to %d records per second", r, maxJobRate)
	}
	return nil
}

// validatePlacement checks spec.placement against the job's topics.
func validatePlacement(pl *sluicev1.Placement, topics map[string]bool) error {
	if pl == nil {
		return nil
	}
	if _, ok := sluicev1.PlacementMode_name[int32(pl.GetMode())]; !ok {
		return invalid("placement.mode", "unknown value %d", pl.GetMode())
	}
	fixed := pl.GetMode() == sluicev1.PlacementMode_PLACEMENT_MODE_FIXED
	if fixed && len(pl.GetFixed()) == 0 {
		return invalid("placement.fixed", "fixed placement needs at least one entry (topic, partitions, worker_label)")
	}
	if !fixed && len(pl.GetFixed()) > 0 {
		return invalid("placement.fixed", "entries are only used with mode PLACEMENT_MODE_FIXED")
	}
	if len(pl.GetFixed()) > maxFixedEntries {
		return invalid("placement.fixed", "%d entries: at most %d", len(pl.GetFixed()), maxFixedEntries)
	}
	seen := map[partitionKey]bool{}
	whole := map[string]bool{}
	for i, f := range pl.GetFixed() {
		field := fmt.Sprintf("placement.fixed[%d]", i)
		if !topics[f.GetTopic()] {
			return invalid(field+".topic", "%q is not one of the job's topics", f.GetTopic())
		}
		if !labelRE.MatchString(f.GetWorkerLabel()) {
			return invalid(field+".worker_label", "%q must be 1 to 63 letters, digits, '.', '_', '-', '=' or ':'", f.GetWorkerLabel())
		}
		if len(f.GetPartitions()) == 0 {
			if whole[f.GetTopic()] {
				return invalid(field, "topic %q is placed twice", f.GetTopic())
			}
			whole[f.GetTopic()] = true
		}
		for _, p := range f.GetPartitions() {
			pk := partitionKey{f.GetTopic(), p}
			if p < 0 {
				return invalid(field+".partitions", "partition %d is negative", p)
			}
			if seen[pk] {
				return invalid(field+".partitions", "partition %s is placed twice", pk)
			}
			seen[pk] = true
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
	if d := k.GetTransactionTimeout(); d != nil && d.CheckValid() != nil {
		return invalid("sink.kafka.transaction_timeout", "%v", d.CheckValid())
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

// validateSizes refuses a spec above the bounds of jobspec/limits.go,
// naming the field and the bound; it runs before anything is compiled.
func validateSizes(spec *sluicev1.JobSpec) error {
	if n := proto.Size(spec); n > jobspec.MaxSpecBytes {
		return invalid("spec", "%d bytes encoded: at most %d", n, jobspec.MaxSpecBytes)
	}
	if n := len(spec.GetName()); n > jobspec.MaxNameLength {
		return invalid("name", "%d characters: at most %d", n, jobspec.MaxNameLength)
	}
	if n := len(spec.GetSteps()); n > jobspec.MaxSteps {
		return invalid("steps", "%d steps: at most %d", n, jobspec.MaxSteps)
	}
	exprs := []struct{ field, src string }{
		{"aggregate.key", spec.GetAggregate().GetKey()},
		{"aggregate.value", spec.GetAggregate().GetValue()},
		{"sink.kafka.topic_expr", spec.GetSink().GetKafka().GetTopicExpr()},
		{"sink.kafka.partition_expr", spec.GetSink().GetKafka().GetPartitionExpr()},
	}
	for i, st := range spec.GetSteps() {
		exprs = append(exprs,
			struct{ field, src string }{fmt.Sprintf("steps[%d].filter", i), st.GetFilter()},
			struct{ field, src string }{fmt.Sprintf("steps[%d].map.key", i), st.GetMap().GetKey()},
			struct{ field, src string }{fmt.Sprintf("steps[%d].map.value", i), st.GetMap().GetValue()},
			struct{ field, src string }{fmt.Sprintf("steps[%d].flatMap", i), st.GetFlatMap()})
	}
	for name, src := range spec.GetSink().GetKafka().GetHeaders() {
		exprs = append(exprs, struct{ field, src string }{fmt.Sprintf("sink.kafka.headers[%q]", name), src})
	}
	for _, e := range exprs {
		if n := len(e.src); n > jobspec.MaxExpressionLength {
			return invalid(e.field, "expression of %d bytes: at most %d", n, jobspec.MaxExpressionLength)
		}
	}
	entries := []struct {
		field string
		m     map[string]string
	}{
		{"source.properties", spec.GetSource().GetProperties()},
		{"sink.kafka.properties", spec.GetSink().GetKafka().GetProperties()},
		{"sink.kafka.headers", spec.GetSink().GetKafka().GetHeaders()},
		{"dead_letter.properties", spec.GetDeadLetter().GetProperties()},
	}
	for _, m := range entries {
		if n := len(m.m); n > jobspec.MaxProperties {
			return invalid(m.field, "%d entries: at most %d", n, jobspec.MaxProperties)
		}
		for _, k := range slices.Sorted(maps.Keys(m.m)) {
			if n := len(k); n > jobspec.MaxPropertyNameLength {
				return invalid(m.field, "name %.40q... of %d bytes: at most %d", k, n, jobspec.MaxPropertyNameLength)
			}
			if n := len(m.m[k]); n > jobspec.MaxPropertyValueLength {
				return invalid(m.field, "%q: value of %d bytes: at most %d", k, n, jobspec.MaxPropertyValueLength)
			}
		}
	}
	return nil
}

// CheckPolicy checks the job's Kafka clusters and client properties against
// the operator's policy (see kafkasrc.Policy): at submit, and before a
// stored job runs, since it may predate the policy.
func CheckPolicy(spec *sluicev1.JobSpec, p kafkasrc.Policy) error {
	src := spec.GetSource()
	if err := p.CheckBootstrap(src.GetBootstrapServers()); err != nil {
		return invalid("source.bootstrap_servers", "%v", unwrapped(err))
	}
	if err := p.CheckProperties(src.GetProperties()); err != nil {
		return invalid("source.properties", "%v", unwrapped(err))
	}
	if dl := spec.GetDeadLetter(); dl != nil {
		if b := dl.GetBootstrapServers(); b != "" {
			if err := p.CheckBootstrap(b); err != nil {
				return invalid("dead_letter.bootstrap_servers", "%v", unwrapped(err))
			}
		}
		if err := p.CheckProperties(dl.GetProperties()); err != nil {
			return invalid("dead_letter.properties", "%v", unwrapped(err))
		}
	}
	if reg := src.GetSchemaRegistry(); reg.GetUrl() != "" {
		if err := p.CheckSchemaRegistry(reg.GetUrl()); err != nil {
			return invalid("source.schema_registry.url", "%v", unwrapped(err))
		}
	}
	k := spec.GetSink().GetKafka()
	if k == nil {
		return nil
	}
	if b := k.GetBootstrapServers(); b != "" {
		if err := p.CheckBootstrap(b); err != nil {
			return invalid("sink.kafka.bootstrap_servers", "%v", unwrapped(err))
		}
	}
	if err := p.CheckProperties(k.GetProperties()); err != nil {
		return invalid("sink.kafka.properties", "%v", unwrapped(err))
	}
	return nil
}

// unwrapped is a policy error's message without the sentinel's tail,
// which tells a user nothing the field does not.
func unwrapped(err error) string {
	return strings.TrimSuffix(err.Error(), ": "+kafkasrc.ErrRefusedProperty.Error())
}

// validateDeadLetter checks dead_letter's client settings; steps.Compile
// checks its topic against the record error policy and the sink.
func validateDeadLetter(dl *sluicev1.DeadLetter) error {
	if dl == nil {
		return nil
	}
	if err := kafkasrc.ValidateProperties(dl.GetProperties()); err != nil {
		return invalid("dead_letter.properties", "%v", err)
	}
	for name := range dl.GetProperties() {
		n := strings.TrimSpace(name)
		for _, owned := range sinkOwned {
			if n == owned || strings.HasPrefix(n, "go.") {
				return invalid("dead_letter.properties", "property %q is set by Sluice", name)
			}
		}
	}
	return nil
}
