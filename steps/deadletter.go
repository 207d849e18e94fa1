package steps

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// The headers a dead letter carries besides the record's own. A reader of
// the dead-letter topic finds the step that failed, why, and the record's
// place in the source (which also de-duplicates an at-least-once sink).
const (
	// HeaderDLQJob is the job's name.
	HeaderDLQJob = "sluice-dlq-job"
	// HeaderDLQField is the failing expression's field in the spec, e.g.
	// "steps[1].map.value", "aggregate.key", "sink.kafka.topic_expr".
	HeaderDLQField = "sluice-dlq-field"
	// HeaderDLQStep is the index of the failing step; absent when the
	// expression is not a step's (the aggregate's, the sink's).
	HeaderDLQStep = "sluice-dlq-step"
	// HeaderDLQStepKind is "filter", "map", "flatMap", "processor",
	// "aggregate", "sink", or "source" for a key or value that its source
	// format cannot decode.
	HeaderDLQStepKind = "sluice-dlq-step-kind"
	// HeaderDLQExpression is the failing CEL expression (of a processor
	// step, the processor's name); absent for a source format's decoding.
	HeaderDLQExpression = "sluice-dlq-expression"
	// HeaderDLQError is the evaluation error (with a hint when there is one).
	HeaderDLQError = "sluice-dlq-error"
	// HeaderDLQTopic, HeaderDLQPartition and HeaderDLQOffset place the record
	// in the source (partition and offset in decimal).
	HeaderDLQTopic     = "sluice-dlq-topic"
	HeaderDLQPartition = "sluice-dlq-partition"
	HeaderDLQOffset    = "sluice-dlq-offset"
)

// deadLetter is where RECORD_ERROR_POLICY_DEAD_LETTER sends failing records.
type deadLetter struct {
	topic string
	job   []byte
}

// compileDeadLetter checks the dead-letter settings against the record
// error policy and the sink; nil without the policy.
func compileDeadLetter(spec *sluicev1.JobSpec) (*deadLetter, error) {
	dl := spec.GetDeadLetter()
	policy := spec.GetOnRecordError()
	if policy != sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER {
		if dl != nil {
			return nil, &FieldError{Field: "dead_letter", Err: fmt.Errorf(
				"is only used with on_record_error RECORD_ERROR_POLICY_DEAD_LETTER (on_record_error is %v): set the policy or remove dead_letter", policy)}
		}
		return nil, nil
	}
	topic := dl.GetTopic()
	if topic == "" {
		return nil, &FieldError{Field: "dead_letter.topic", Err: errors.New(
			"required by on_record_error RECORD_ERROR_POLICY_DEAD_LETTER: the topic failing records are written to")}
	}
	if err := checkTopic(topic); err != nil {
		return nil, &FieldError{Field: "dead_letter.topic", Err: err}
	}
	for _, t := range spec.GetSource().GetTopics() {
		if t == topic && deadLetterCluster(spec) == spec.GetSource().GetBootstrapServers() {
			return nil, &FieldError{Field: "dead_letter.topic", Err: fmt.Errorf(
				"%q is a source topic of the job: its dead letters would be read and fail again", topic)}
		}
	}
	if k := spec.GetSink().GetKafka(); k != nil {
		// The sink's producer writes the dead letters, in the task's
		// transaction when the sink is transactional.
		if b := dl.GetBootstrapServers(); b != "" && b != deadLetterCluster(spec) {
			return nil, &FieldError{Field: "dead_letter.bootstrap_servers", Err: fmt.Errorf(
				"%q: with a Kafka sink the dead letters go through the sink's producer (in its transaction), so they go to the sink's cluster %q: leave it empty",
				b, deadLetterCluster(spec))}
		}
		if len(dl.GetProperties()) > 0 {
			return nil, &FieldError{Field: "dead_letter.properties", Err: errors.New(
				"with a Kafka sink the dead letters go through the sink's producer: set producer properties in sink.kafka.properties")}
		}
	}
	return &deadLetter{topic: topic, job: []byte(spec.GetName())}, nil
}

// deadLetterCluster is the bootstrap servers of the dead-letter topic: the
// Kafka sink's cluster, else dead_letter's own, else the source's.
func deadLetterCluster(spec *sluicev1.JobSpec) string {
	if k := spec.GetSink().GetKafka(); k != nil {
		if b := k.GetBootstrapServers(); b != "" {
			return b
		}
		return spec.GetSource().GetBootstrapServers()
	}
	if b := spec.GetDeadLetter().GetBootstrapServers(); b != "" {
		return b
	}
	return spec.GetSource().GetBootstrapServers()
}

// DeadLetters reports whether the program writes failing records to a
// dead-letter topic; each task then drains them with DrainDeadLetters.
func (p *Program) DeadLetters() bool { return p.dead != nil }

// keepDeadLetter keeps rec, unchanged, as a dead letter of the expression x
// that failed on it with err.
func (r *Runner) keepDeadLetter(rec *record.Record, x *expr, rerr *RecordError) {
	field := x.field
	idx, kind := "", stepKind(field)
	if rest, ok := strings.CutPrefix(field, "steps["); ok {
		if i := strings.IndexByte(rest, ']'); i > 0 {
			idx = rest[:i]
		}
	}
	msg := rerr.Err.Error()
	if rerr.Hint != "" {
		msg += " (" + rerr.Hint + ")"
	}
	msg = SafeText(msg, MaxErrorBytes)
	hdrs := make([]*sluicev1.Header, 0, len(rec.Headers)+9)
	for _, h := range rec.Headers {
		hdrs = append(hdrs, &sluicev1.Header{Key: h.Key, Value: clone(h.Value)})
	}
	add := func(k, v string) { hdrs = append(hdrs, &sluicev1.Header{Key: k, Value: []byte(v)}) }
	add(HeaderDLQJob, string(r.p.dead.job))
	add(HeaderDLQField, field)
	if idx != "" {
		add(HeaderDLQStep, idx)
	}
	add(HeaderDLQStepKind, kind)
	if x.src != "" { // a source format's decoding has none
		add(HeaderDLQExpression, x.src)
	}
	add(HeaderDLQError, msg)
	add(HeaderDLQTopic, rec.Topic)
	add(HeaderDLQPartition, strconv.FormatInt(int64(rec.Partition), 10))
	add(HeaderDLQOffset, strconv.FormatInt(rec.Offset, 10))
	out := &sluicev1.OutputRecord{
		Key: clone(rec.Key), Value: clone(rec.Value),
		Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		SinkTopic: r.p.dead.topic, SinkPartition: -1, Headers: hdrs,
	}
	n := int64(len(out.Key)+len(out.Value)+len(rec.Topic)) + recordOverhead
	for _, h := range hdrs {
		n += int64(len(h.Key)+len(h.Value)) + headerOverhead
	}
	r.dead = append(r.dead, out)
	r.deadBytes += n
	r.deadLettered++
}

// stepKind names the kind of the expression at field.
func stepKind(field string) string {
	switch {
	case strings.HasPrefix(field, "aggregate."):
		return "aggregate"
	case strings.HasPrefix(field, "sink."):
		return "sink"
	case strings.HasPrefix(field, "source."):
		return "source"
	case strings.HasSuffix(field, ".filter"):
		return "filter"
	case strings.HasSuffix(field, ".flatMap"):
		return "flatMap"
	case strings.HasSuffix(field, ".processor"):
		return "processor"
	case strings.Contains(field, ".map."):
		return "map"
	}
	return field
}

// clone copies b, keeping nil nil.
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// PendingDeadLetters returns the number and approximate size of the dead
// letters kept since the last DrainDeadLetters.
func (r *Runner) PendingDeadLetters() (int, int64) { return len(r.dead), r.deadBytes }

// DrainDeadLetters returns the dead letters kept since the last call, in
// the order processed, and forgets them. Each is the failing record as read
// (key, value, headers) plus the sluice-dlq-* headers, with SinkTopic the
// dead-letter topic and SinkPartition -1. The records are the caller's.
func (r *Runner) DrainDeadLetters() []*sluicev1.OutputRecord {
	d := r.dead
	r.dead, r.deadBytes = nil, 0
	return d
}
