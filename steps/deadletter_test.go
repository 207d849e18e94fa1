package steps

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

const deadLetterPolicy = sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER

func withDLQ(s *sluicev1.JobSpec, topic string) *sluicev1.JobSpec {
	s.Source = &sluicev1.KafkaSource{BootstrapServers: "k:9092", Topics: []string{"clicks"}}
	s.OnRecordError = deadLetterPolicy
	s.DeadLetter = &sluicev1.DeadLetter{Topic: topic}
	return s
}

func TestDeadLetterCompileErrors(t *testing.T) {
	kafkaSink := func(s *sluicev1.JobSpec) *sluicev1.JobSpec {
		s.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: "out"}}}
		return s
	}
	tests := []struct {
		name      string
		spec      *sluicev1.JobSpec
		wantField string
		wantMsg   string
	}{
		{"policy without dead_letter", func() *sluicev1.JobSpec {
			s := withDLQ(spec(), "x")
			s.DeadLetter = nil
			return s
		}(), "dead_letter.topic", "required by on_record_error RECORD_ERROR_POLICY_DEAD_LETTER"},
		{"policy without a topic", withDLQ(spec(), ""), "dead_letter.topic", "required by on_record_error"},
		{"dead_letter without the policy", func() *sluicev1.JobSpec {
			s := withDLQ(spec(), "dlq")
			s.OnRecordError = skip
			return s
		}(), "dead_letter", "is only used with on_record_error RECORD_ERROR_POLICY_DEAD_LETTER (on_record_error is RECORD_ERROR_POLICY_SKIP)"},
		{"bad topic name", withDLQ(spec(), "bad topic"), "dead_letter.topic", `"bad topic" is not a valid Kafka topic name`},
		{"a source topic", withDLQ(spec(), "clicks"), "dead_letter.topic", `"clicks" is a source topic of the job`},
		{"another cluster than the Kafka sink's", func() *sluicev1.JobSpec {
			s := kafkaSink(withDLQ(spec(), "dlq"))
			s.DeadLetter.BootstrapServers = "other:9092"
			return s
		}(), "dead_letter.bootstrap_servers", `with a Kafka sink the dead letters go through the sink's producer`},
		{"properties with a Kafka sink", func() *sluicev1.JobSpec {
			s := kafkaSink(withDLQ(spec(), "dlq"))
			s.DeadLetter.Properties = map[string]string{"linger.ms": "5"}
			return s
		}(), "dead_letter.properties", "set producer properties in sink.kafka.properties"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.spec)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Compile() error = %v, want a *FieldError", err)
			}
			if fe.Field != tt.wantField || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Compile() error = %q (field %q), want field %q and %q", err, fe.Field, tt.wantField, tt.wantMsg)
			}
		})
	}
	// The sink's own cluster, named again, is accepted.
	s := kafkaSink(withDLQ(spec(), "dlq"))
	s.DeadLetter.BootstrapServers = "k:9092"
	if _, err := Compile(s); err != nil {
		t.Fatalf("Compile() error = %v", err)
	}
}

func header(r *sluicev1.OutputRecord, key string) (string, bool) {
	for _, h := range r.GetHeaders() {
		if h.GetKey() == key {
			return string(h.GetValue()), true
		}
	}
	return "", false
}

func TestDeadLetters(t *testing.T) {
	s := withDLQ(spec(filter("json.ok"), flatMap("[value]"), mapKV("json.id", "")), "dlq")
	s.Name = "orders"
	r := mustCompile(t, s).NewRunner()
	bad := []byte{'{', 0xff, '}'}
	recs := []*record.Record{
		{Topic: "clicks", Partition: 3, Offset: 10, Key: []byte("k1"), Value: []byte(`{"ok":true,"id":"a"}`)},
		{Topic: "clicks", Partition: 3, Offset: 11, Key: []byte("k2"), Value: bad,
			Headers: []record.Header{{Key: "trace", Value: []byte("t1")}}},
		{Topic: "clicks", Partition: 3, Offset: 12, Value: []byte(`{"ok":true}`)},
		{Topic: "clicks", Partition: 3, Offset: 13, Key: []byte("k4"), Value: []byte(`{"ok":false}`)},
	}
	for _, rc := range recs {
		if err := r.Process(rc); err != nil {
			t.Fatalf("Process(offset %d) error = %v", rc.Offset, err)
		}
	}
	// The reader reuses its buffers: the dead letters are copies.
	bad[1] = 'X'
	res := r.Result()
	if res.In != 4 || res.Out != 1 || res.Failed != 2 || res.DeadLettered != 2 {
		t.Fatalf("in %d out %d failed %d dead-lettered %d, want 4 1 2 2", res.In, res.Out, res.Failed, res.DeadLettered)
	}
	if n, b := r.PendingDeadLetters(); n != 2 || b <= 0 {
		t.Fatalf("PendingDeadLetters() = %d, %d", n, b)
	}
	dead := r.DrainDeadLetters()
	if n, _ := r.PendingDeadLetters(); n != 0 || len(dead) != 2 {
		t.Fatalf("drained %d, %d left", len(dead), n)
	}
	want := []struct {
		key, value                    string
		offset                        string
		field, step, kind, expr, errs string
		trace                         bool
	}{
		{"k2", "{\xff}", "11", "steps[0].filter", "0", "filter", "json.ok", "invalid", true},
		{"", `{"ok":true}`, "12", "steps[2].map.key", "2", "map", "json.id", "no such key: id", false},
	}
	for i, w := range want {
		d := dead[i]
		if string(d.GetKey()) != w.key || string(d.GetValue()) != w.value || d.GetSinkTopic() != "dlq" || d.GetSinkPartition() != -1 {
			t.Errorf("dead letter %d = %q=%q to %s/%d", i, d.GetKey(), d.GetValue(), d.GetSinkTopic(), d.GetSinkPartition())
		}
		if (w.key == "") != (d.GetKey() == nil) {
			t.Errorf("dead letter %d: key %v, want it absent as in the record", i, d.GetKey())
		}
		checks := map[string]string{
			HeaderDLQJob: "orders", HeaderDLQField: w.field, HeaderDLQStep: w.step, HeaderDLQStepKind: w.kind,
			HeaderDLQExpression: w.expr, HeaderDLQTopic: "clicks", HeaderDLQPartition: "3", HeaderDLQOffset: w.offset,
		}
		for k, v := range checks {
			if got, _ := header(d, k); got != v {
				t.Errorf("dead letter %d: header %s = %q, want %q", i, k, got, v)
			}
		}
		if got, _ := header(d, HeaderDLQError); !strings.Contains(got, w.errs) {
			t.Errorf("dead letter %d: error header %q, want it to contain %q", i, got, w.errs)
		}
		if got, ok := header(d, "trace"); ok != w.trace || (ok && got != "t1") {
			t.Errorf("dead letter %d: the record's own header trace = %q, %v", i, got, ok)
		}
		if w.trace && d.GetHeaders()[0].GetKey() != "trace" {
			t.Errorf("dead letter %d: the record's own headers come first: %v", i, d.GetHeaders())
		}
	}
	if !strings.Contains(res.FirstError, "offset 11: steps[0].filter") {
		t.Fatalf("first error = %q", res.FirstError)
	}
}

// Expressions after the steps name their kind and no step index.
func TestDeadLetterOfAggregateAndSink(t *testing.T) {
	s := withAgg(withDLQ(spec(), "dlq"), "json.k", "")
	r := mustCompile(t, s).NewRunner()
	if err := r.Process(rec(5, "k", `{}`)); err != nil {
		t.Fatal(err)
	}
	d := r.DrainDeadLetters()
	if len(d) != 1 {
		t.Fatalf("%d dead letters", len(d))
	}
	if _, ok := header(d[0], HeaderDLQStep); ok {
		t.Errorf("an aggregate's dead letter has %s", HeaderDLQStep)
	}
	for k, v := range map[string]string{HeaderDLQField: "aggregate.key", HeaderDLQStepKind: "aggregate"} {
		if got, _ := header(d[0], k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if kinds := fmt.Sprintln(stepKind("sink.kafka.topic_expr"), stepKind("steps[3].flatMap"), stepKind("source.value_format")); kinds != "sink flatMap source\n" {
		t.Errorf("kinds = %s", kinds)
	}
}
