package steps

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// kafkaSpec returns a spec of steps that writes to the Kafka sink ks.
func kafkaSpec(ks *sluicev1.KafkaSink, steps ...*sluicev1.Step) *sluicev1.JobSpec {
	s := spec(steps...)
	s.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: ks}}
	return s
}

// routed returns the output record of source record clicks/3 at offset,
// routed to topic and partition with headers given as name, value pairs.
func routed(offset int64, key, value, topic string, partition int32, headers ...string) *sluicev1.OutputRecord {
	o := &sluicev1.OutputRecord{
		Key: []byte(key), Value: []byte(value), Topic: "clicks", Partition: 3, Offset: offset,
		SinkTopic: topic, SinkPartition: partition,
	}
	for i := 0; i < len(headers); i += 2 {
		o.Headers = append(o.Headers, &sluicev1.Header{Key: headers[i], Value: []byte(headers[i+1])})
	}
	return o
}

func checkRecords(t *testing.T, got, want []*sluicev1.OutputRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d:\n%s", len(got), len(want), textRecords(got))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("record %d = %s\nwant        %s", i, prototext.Format(got[i]), prototext.Format(want[i]))
		}
		// Header order is part of the contract: proto.Equal checks it.
	}
}

func textRecords(recs []*sluicev1.OutputRecord) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString(prototext.Format(r))
		b.WriteString("\n")
	}
	return b.String()
}

func TestKafkaSinkCompileErrors(t *testing.T) {
	const aggMsg = "sink.kafka: a Kafka sink cannot follow an aggregate: tasks write their own output; use the collect sink for per-key totals"
	hdrs := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name      string
		spec      *sluicev1.JobSpec
		wantField string
		wantMsg   string // the whole Error() when exact, else a substring
		exact     bool
	}{
		{
			name:      "neither topic nor topic_expr",
			spec:      kafkaSpec(&sluicev1.KafkaSink{PartitionExpr: "0"}),
			wantField: "sink.kafka.topic",
			wantMsg:   "sink.kafka.topic: set topic or topic_expr",
			exact:     true,
		},
		{
			name:      "nil Kafka sink",
			spec:      kafkaSpec(nil),
			wantField: "sink.kafka.topic",
			wantMsg:   "sink.kafka.topic: set topic or topic_expr",
			exact:     true,
		},
		{
			name:      "both topic and topic_expr",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", TopicExpr: "'out'"}),
			wantField: "sink.kafka.topic",
			wantMsg:   "sink.kafka.topic: set topic or topic_expr, not both",
			exact:     true,
		},
		{
			name:      "illegal fixed topic",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out topic"}),
			wantField: "sink.kafka.topic",
			wantMsg:   `sink.kafka.topic: "out topic" is not a valid Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'`,
			exact:     true,
		},
		{
			name:      "topic .. is illegal",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: ".."}),
			wantField: "sink.kafka.topic",
			wantMsg:   `sink.kafka.topic: ".." is not a valid Kafka topic name`,
		},
		{
			name:      "topic_expr not a string",
			spec:      kafkaSpec(&sluicev1.KafkaSink{TopicExpr: "partition"}),
			wantField: "sink.kafka.topic_expr",
			wantMsg:   "sink.kafka.topic_expr: ERROR: <input>:1:1: expression gives int, want a string",
		},
		{
			name:      "topic_expr bytes",
			spec:      kafkaSpec(&sluicev1.KafkaSink{TopicExpr: "key_bytes"}),
			wantField: "sink.kafka.topic_expr",
			wantMsg:   "<input>:1:1: expression gives bytes, want a string",
		},
		{
			name:      "topic_expr undeclared",
			spec:      kafkaSpec(&sluicev1.KafkaSink{TopicExpr: "'t-' + kye"}, mapKV("value", "")),
			wantField: "sink.kafka.topic_expr",
			wantMsg:   "sink.kafka.topic_expr: ERROR: <input>:1:8: undeclared reference to 'kye'",
		},
		{
			name:      "topic_expr blank",
			spec:      kafkaSpec(&sluicev1.KafkaSink{TopicExpr: "  "}),
			wantField: "sink.kafka.topic_expr",
			wantMsg:   `sink.kafka.topic_expr: "  ": empty expression`,
			exact:     true,
		},
		{
			name:      "partition_expr string",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: "key"}),
			wantField: "sink.kafka.partition_expr",
			wantMsg:   "sink.kafka.partition_expr: ERROR: <input>:1:1: expression gives string, want an int",
		},
		{
			name:      "partition_expr double",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: "1.0 * partition"}),
			wantField: "sink.kafka.partition_expr",
			wantMsg:   "sink.kafka.partition_expr: ERROR: <input>:1:5: found no matching overload for '_*_'",
		},
		{
			name:      "partition_expr double literal",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: "2.0"}),
			wantField: "sink.kafka.partition_expr",
			wantMsg:   "expression gives double, want an int",
		},
		{
			name:      "header value int",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: hdrs("n", "offset")}),
			wantField: `sink.kafka.headers["n"]`,
			wantMsg:   `sink.kafka.headers["n"]: ERROR: <input>:1:1: expression gives int, want a string or bytes`,
		},
		{
			name:      "header errors reported in name order",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: hdrs("z", "1", "b", "[key]", "a", "key", "c", "2")}),
			wantField: `sink.kafka.headers["b"]`,
			wantMsg:   "expression gives list(string), want a string or bytes",
		},
		{
			name:      "header expression empty",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: hdrs("x", "")}),
			wantField: `sink.kafka.headers["x"]`,
			wantMsg:   `sink.kafka.headers["x"]: empty expression`,
			exact:     true,
		},
		{
			name:      "header name empty",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: hdrs("", "key", "a", "key")}),
			wantField: `sink.kafka.headers[""]`,
			wantMsg:   `sink.kafka.headers[""]: a header name must not be empty`,
			exact:     true,
		},
		{
			name:      "header name reserved",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: hdrs("sluice-src", "key")}),
			wantField: `sink.kafka.headers["sluice-src"]`,
			wantMsg:   `sink.kafka.headers["sluice-src"]: header names starting with "sluice-" are reserved: the sink adds sluice-job, sluice-batch and sluice-src itself`,
			exact:     true,
		},
		{
			name:      "header name reserved in any case",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: hdrs("Sluice-Trace", "key")}),
			wantField: `sink.kafka.headers["Sluice-Trace"]`,
			wantMsg:   `are reserved`,
		},
		{
			name:      "header name quoted in the field",
			spec:      kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: hdrs(`a"b`, "1")}),
			wantField: `sink.kafka.headers["a\"b"]`,
			wantMsg:   "expression gives int",
		},
		{
			name:      "Kafka sink after an aggregate",
			spec:      withAgg(kafkaSpec(&sluicev1.KafkaSink{Topic: "out"}), "", ""),
			wantField: "sink.kafka",
			wantMsg:   aggMsg,
			exact:     true,
		},
		{
			name:      "Kafka sink after an aggregate, told before the sink's and aggregate's own errors",
			spec:      withAgg(kafkaSpec(&sluicev1.KafkaSink{}), "[key]", ""),
			wantField: "sink.kafka",
			wantMsg:   aggMsg,
			exact:     true,
		},
		{
			name:      "step errors come first",
			spec:      kafkaSpec(&sluicev1.KafkaSink{}, filter("vale")),
			wantField: "steps[0].filter",
			wantMsg:   "undeclared reference to 'vale'",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.spec)
			if err == nil {
				t.Fatalf("Compile() = %v, nil; want error on %s", p, tc.wantField)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Compile() error = %T %v, want *FieldError", err, err)
			}
			if fe.Field != tc.wantField {
				t.Errorf("FieldError.Field = %q, want %q (error: %v)", fe.Field, tc.wantField, err)
			}
			if want := fe.Field + ": " + fe.Reason(); err.Error() != want || strings.HasPrefix(fe.Reason(), fe.Field) {
				t.Errorf("Error() = %q, Reason() = %q; want Error() to be the field then Reason()", err.Error(), fe.Reason())
			}
			if tc.exact && err.Error() != tc.wantMsg {
				t.Errorf("Error() = %q\nwant      %q", err.Error(), tc.wantMsg)
			}
			if !tc.exact && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Error() = %q, want it to contain %q", err.Error(), tc.wantMsg)
			}
		})
	}
}

func TestKafkaSinkCompileAccepts(t *testing.T) {
	tests := []struct {
		name string
		spec *sluicev1.JobSpec
	}{
		{"fixed topic", kafkaSpec(&sluicev1.KafkaSink{Topic: "a.b_c-D9"})},
		{"dyn topic_expr", kafkaSpec(&sluicev1.KafkaSink{TopicExpr: "json.topic"})},
		{"int partition_expr", kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: "partition % 4"})},
		{"uint partition_expr", kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: "uint(size(key)) % 4u"})},
		{"dyn partition_expr", kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: "json.p"})},
		{"string, bytes and dyn headers", kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: map[string]string{
			"s": "key", "b": "value_bytes", "d": "json.h", "sluice": "'not reserved: no dash'",
		}})},
		{"collect sink after an aggregate", &sluicev1.JobSpec{
			Aggregate: &sluicev1.Aggregate{},
			Sink:      &sluicev1.Sink{Kind: &sluicev1.Sink_Collect{Collect: &sluicev1.CollectSink{}}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.spec)
			if err != nil {
				t.Fatalf("Compile() error: %v", err)
			}
			_, kafka := tc.spec.GetSink().GetKind().(*sluicev1.Sink_Kafka)
			if p.KafkaSink() != kafka {
				t.Errorf("KafkaSink() = %v, want %v", p.KafkaSink(), kafka)
			}
		})
	}
	if p := mustCompile(t, spec()); p.KafkaSink() {
		t.Errorf("KafkaSink() = true without a sink")
	}
	if p := mustCompile(t, kafkaSpec(&sluicev1.KafkaSink{TopicExpr: "json.t"})); !p.UsesJSON() {
		t.Errorf("UsesJSON() = false with json in topic_expr")
	}
}

func TestKafkaSinkRouting(t *testing.T) {
	recs := []*record.Record{
		rec(0, "u1", `{"user":"ann","kind":"click","p":2}`),
		rec(1, "u2", `{"user":"bob","kind":"view","p":0}`),
		rec(2, "", `{"user":"cy","kind":"click","p":7}`),
	}
	recs[0].Headers = []record.Header{{Key: "trace", Value: []byte("t0")}, {Key: "sluice-src", Value: []byte("x/0/0")}}
	v0, v1, v2 := string(recs[0].Value), string(recs[1].Value), string(recs[2].Value)
	tests := []struct {
		name string
		spec *sluicev1.JobSpec
		want []*sluicev1.OutputRecord
	}{
		{
			name: "fixed topic, partitioner by key, no source headers copied",
			spec: kafkaSpec(&sluicev1.KafkaSink{Topic: "out"}),
			want: []*sluicev1.OutputRecord{
				routed(0, "u1", v0, "out", -1),
				routed(1, "u2", v1, "out", -1),
				routed(2, "", v2, "out", -1),
			},
		},
		{
			name: "fixed topic after a filter and a map",
			spec: kafkaSpec(&sluicev1.KafkaSink{Topic: "out"}, filter("json.p > 0"), mapKV("json.user", "json.p")),
			want: []*sluicev1.OutputRecord{
				routed(0, "ann", "2", "out", -1),
				routed(2, "cy", "7", "out", -1),
			},
		},
		{
			name: "topic_expr from json and the mapped key",
			spec: kafkaSpec(&sluicev1.KafkaSink{TopicExpr: `json.kind + "-" + key`}, mapKV("json.user", "")),
			want: []*sluicev1.OutputRecord{
				routed(0, "ann", v0, "click-ann", -1),
				routed(1, "bob", v1, "view-bob", -1),
				routed(2, "cy", v2, "click-cy", -1),
			},
		},
		{
			name: "topic_expr sees the mapped value as json",
			spec: kafkaSpec(&sluicev1.KafkaSink{TopicExpr: "json.t"}, mapKV("", `json.encode({"t": json.kind + ".v2"})`)),
			want: []*sluicev1.OutputRecord{
				routed(0, "u1", `{"t":"click.v2"}`, "click.v2", -1),
				routed(1, "u2", `{"t":"view.v2"}`, "view.v2", -1),
				routed(2, "", `{"t":"click.v2"}`, "click.v2", -1),
			},
		},
		{
			name: "source topic and partition stay the source's after a map",
			spec: kafkaSpec(&sluicev1.KafkaSink{TopicExpr: `topic + "-out"`, PartitionExpr: "partition + offset"}, mapKV("'k'", "'v'")),
			want: []*sluicev1.OutputRecord{
				routed(0, "k", "v", "clicks-out", 3),
				routed(1, "k", "v", "clicks-out", 4),
				routed(2, "k", "v", "clicks-out", 5),
			},
		},
		{
			name: "partition_expr int from json",
			spec: kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: "int(json.p)"}),
			want: []*sluicev1.OutputRecord{
				routed(0, "u1", v0, "out", 2),
				routed(1, "u2", v1, "out", 0),
				routed(2, "", v2, "out", 7),
			},
		},
		{
			name: "partition_expr uint, and dyn giving an int",
			spec: kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: "offset == 2 ? dyn(2147483647) : uint(json.p) + 1u"}),
			want: []*sluicev1.OutputRecord{
				routed(0, "u1", v0, "out", 3),
				routed(1, "u2", v1, "out", 1),
				routed(2, "", v2, "out", 2147483647),
			},
		},
		{
			name: "headers from expressions, in name order",
			spec: kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: map[string]string{
				"user":  "key",                                         // the mapped key
				"kind":  "json.kind",                                   // dyn giving a string
				"raw":   `key_bytes + b"\x00\xff"`,                     // bytes
				"trace": `"trace" in headers ? headers.trace : "none"`, // a source header
				"Empty": `""`,
			}}, mapKV("json.user", "")),
			want: []*sluicev1.OutputRecord{
				routed(0, "ann", v0, "out", -1, "Empty", "", "kind", "click", "raw", "ann\x00\xff", "trace", "t0", "user", "ann"),
				routed(1, "bob", v1, "out", -1, "Empty", "", "kind", "view", "raw", "bob\x00\xff", "trace", "none", "user", "bob"),
				routed(2, "cy", v2, "out", -1, "Empty", "", "kind", "click", "raw", "cy\x00\xff", "trace", "none", "user", "cy"),
			},
		},
		{
			name: "everything at once",
			spec: kafkaSpec(&sluicev1.KafkaSink{
				TopicExpr:     `"by-kind." + json.kind`,
				PartitionExpr: "size(key) % 2",
				Headers:       map[string]string{"src-offset": "string(offset)", "b": "base64.decode('AAE=')"},
			}, mapKV("json.user", "")),
			want: []*sluicev1.OutputRecord{
				routed(0, "ann", v0, "by-kind.click", 1, "b", "\x00\x01", "src-offset", "0"),
				routed(1, "bob", v1, "by-kind.view", 1, "b", "\x00\x01", "src-offset", "1"),
				routed(2, "cy", v2, "by-kind.click", 0, "b", "\x00\x01", "src-offset", "2"),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := run(t, tc.spec, recs...)
			checkRecords(t, got.Records, tc.want)
			if got.In != 3 || got.Out != int64(len(tc.want)) || got.Failed != 0 || got.FirstError != "" {
				t.Errorf("In, Out, Failed, FirstError = %d, %d, %d, %q; want 3, %d, 0, \"\"",
					got.In, got.Out, got.Failed, got.FirstError, len(tc.want))
			}
		})
	}

	// Without a Kafka sink, nothing is routed.
	got := run(t, spec(), recs[0])
	checkRecords(t, got.Records, []*sluicev1.OutputRecord{{Key: []byte("u1"), Value: []byte(v0), Topic: "clicks", Partition: 3}})
}

func TestKafkaSinkRoutingErrors(t *testing.T) {
	recs := []*record.Record{
		rec(5, "a", `{"t":"ok","p":1,"h":"x"}`),
		rec(6, "b", `not json`),
		rec(7, "c", `{"t":"bad topic","p":1,"h":"x"}`),
		rec(8, "d", `{"t":"ok","p":-1,"h":"x"}`),
		rec(9, "e", `{"t":"ok","p":1,"h":2}`),
		rec(10, "f", `{"t":"ok","p":2147483648,"h":"x"}`),
		rec(11, "g", `{"t":"","p":0,"h":"x"}`),
		rec(12, "drop", `{}`),
		rec(13, "h", `{"t":"ok2","p":0,"h":"y"}`),
	}
	ok := func(offset int64, key, topic string, partition int32, h string) *sluicev1.OutputRecord {
		return routed(offset, key, string(recs[offset-5].Value), topic, partition, "h", h)
	}
	tests := []struct {
		name     string
		spec     *sluicev1.JobSpec
		wantErrs []string // per record, the exact RecordError, "" when it passes
		want     []*sluicev1.OutputRecord
	}{
		{
			name: "topic, partition and header expressions",
			spec: kafkaSpec(&sluicev1.KafkaSink{TopicExpr: "json.t", PartitionExpr: "int(json.p)", Headers: map[string]string{"h": "json.h"}},
				filter("key != 'drop'"), mapKV("key + '!'", "")),
			wantErrs: []string{
				"",
				"record clicks/3 offset 6: sink.kafka.topic_expr: value is not JSON: invalid character 'o' at offset 1 in literal null",
				`record clicks/3 offset 7: sink.kafka.topic_expr: "bad topic" is not a valid Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'`,
				"record clicks/3 offset 8: sink.kafka.partition_expr: partition -1 is out of range 0 to 2147483647",
				`record clicks/3 offset 9: sink.kafka.headers["h"]: expression gave double, want a string or bytes`,
				"record clicks/3 offset 10: sink.kafka.partition_expr: partition 2147483648 is out of range 0 to 2147483647",
				`record clicks/3 offset 11: sink.kafka.topic_expr: "" is not a valid Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'`,
				"", // dropped by the filter: never routed
				"",
			},
			want: []*sluicev1.OutputRecord{
				ok(5, "a!", "ok", 1, "x"),
				ok(13, "h!", "ok2", 0, "y"),
			},
		},
		{
			name: "partition_expr gives a double or a uint out of range",
			spec: kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: "json.p < 0.0 ? dyn(4294967296u) : json.p", Headers: map[string]string{"h": "'c'"}},
				filter("json.?t.orValue('') != ''")),
			wantErrs: []string{
				"record clicks/3 offset 5: sink.kafka.partition_expr: expression gave double, want an int (JSON numbers are doubles: write int(...))",
				"record clicks/3 offset 6: steps[0].filter: value is not JSON: invalid character 'o' at offset 1 in literal null",
				"record clicks/3 offset 7: sink.kafka.partition_expr: expression gave double, want an int (JSON numbers are doubles: write int(...))",
				"record clicks/3 offset 8: sink.kafka.partition_expr: partition 4294967296 is out of range 0 to 2147483647",
				"record clicks/3 offset 9: sink.kafka.partition_expr: expression gave double, want an int (JSON numbers are doubles: write int(...))",
				"record clicks/3 offset 10: sink.kafka.partition_expr: expression gave double, want an int (JSON numbers are doubles: write int(...))",
				"",
				"",
				"record clicks/3 offset 13: sink.kafka.partition_expr: expression gave double, want an int (JSON numbers are doubles: write int(...))",
			},
		},
	}
	for _, tc := range tests {
		for _, policy := range []sluicev1.RecordErrorPolicy{skip, fail, sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_UNSPECIFIED} {
			t.Run(tc.name+"/"+policy.String(), func(t *testing.T) {
				s := proto.Clone(tc.spec).(*sluicev1.JobSpec)
				s.OnRecordError = policy
				r := mustCompile(t, s).NewRunner()
				var failed int64
				var first string
				for i, rc := range recs {
					err := r.Process(rc)
					want := tc.wantErrs[i]
					if want != "" {
						failed++
						if first == "" {
							first = want
						}
					}
					switch {
					case policy == skip || want == "":
						if err != nil {
							t.Errorf("Process(offset %d) error = %v, want nil", rc.Offset, err)
						}
					default:
						var re *RecordError
						if !errors.As(err, &re) {
							t.Fatalf("Process(offset %d) error = %v, want *RecordError %q", rc.Offset, err, want)
						}
						if err.Error() != want {
							t.Errorf("Process(offset %d) error = %q\nwant                      %q", rc.Offset, err, want)
						}
						if wantField := strings.SplitN(strings.TrimPrefix(want, fmt.Sprintf("record clicks/3 offset %d: ", rc.Offset)), ": ", 2)[0]; re.Field != wantField {
							t.Errorf("RecordError.Field = %q, want %q", re.Field, wantField)
						}
					}
				}
				got := r.Result()
				wantOut := int64(len(tc.want)) // failed and dropped records are not out
				if got.In != int64(len(recs)) || got.Out != wantOut || got.Failed != failed {
					t.Errorf("In, Out, Failed = %d, %d, %d; want %d, %d, %d", got.In, got.Out, got.Failed, len(recs), wantOut, failed)
				}
				if got.FirstError != first {
					t.Errorf("FirstError = %q, want %q", got.FirstError, first)
				}
				checkRecords(t, got.Records, tc.want)
			})
		}
	}
}

// Nothing routed may alias the record, and topic_expr results are shared.
func TestKafkaSinkOutputIsCopied(t *testing.T) {
	buf := []byte("key1value1")
	r := &record.Record{Topic: "t", Key: buf[:4], Value: buf[4:], Headers: []record.Header{{Key: "h", Value: buf[4:]}}}
	ks := &sluicev1.KafkaSink{TopicExpr: "key", Headers: map[string]string{"k": "key", "v": "value_bytes", "h": "headers.h"}}
	run := mustCompile(t, kafkaSpec(ks)).NewRunner()
	for range 2 {
		if err := run.Process(r); err != nil {
			t.Fatal(err)
		}
	}
	copy(buf, "XXXXXXXXXX")
	res := run.Result()
	want := &sluicev1.OutputRecord{
		Key: []byte("key1"), Value: []byte("value1"), Topic: "t", SinkTopic: "key1", SinkPartition: -1,
		Headers: []*sluicev1.Header{{Key: "h", Value: []byte("value1")}, {Key: "k", Value: []byte("key1")}, {Key: "v", Value: []byte("value1")}},
	}
	checkRecords(t, res.Records, []*sluicev1.OutputRecord{want, want})
	if a, b := res.Records[0].GetSinkTopic(), res.Records[1].GetSinkTopic(); unsafe.StringData(a) != unsafe.StringData(b) {
		t.Errorf("records routed to the same topic_expr result hold two copies of it")
	}
	// Appending to a record's headers or value must not overwrite another's.
	res.Records[0].Headers = append(res.Records[0].Headers, &sluicev1.Header{Key: "x"})
	res.Records[0].Value = append(res.Records[0].Value, 'X')
	checkRecords(t, res.Records[1:], []*sluicev1.OutputRecord{want})
	if got, want := run.OutputBytes(), 2*int64(10+1+recordOverhead+4+routeOverhead+3*(1+headerOverhead)+6+4+6); got != want {
		t.Errorf("OutputBytes() = %d, want %d", got, want)
	}
}

// A fixed topic costs no allocation per record beyond the output record.
func TestKafkaSinkAllocations(t *testing.T) {
	recs := clickRecords(64)
	allocs := func(s *sluicev1.JobSpec) float64 {
		r := mustCompile(t, s).NewRunner()
		i := 0
		return testing.AllocsPerRun(200, func() {
			if err := r.Process(recs[i%len(recs)]); err != nil {
				t.Fatal(err)
			}
			i++
		})
	}
	collect := allocs(spec(filter("true")))
	fixed := allocs(kafkaSpec(&sluicev1.KafkaSink{Topic: "out"}, filter("true")))
	if fixed != collect {
		t.Errorf("allocations per record: %v with a fixed-topic Kafka sink, %v without; want the same", fixed, collect)
	}
}

// One op is one record: a filter on the raw value, then routing.
func BenchmarkKafkaSink(b *testing.B) {
	b.Run("fixed_topic", func(b *testing.B) {
		benchProcess(b, kafkaSpec(&sluicev1.KafkaSink{Topic: "out"}, filter(`value.contains('"action":"click"')`)))
	})
	b.Run("topic_partition_headers", func(b *testing.B) {
		benchProcess(b, kafkaSpec(&sluicev1.KafkaSink{
			TopicExpr:     `"clicks-" + json.country`,
			PartitionExpr: "int(json.ms) % 8",
			Headers:       map[string]string{"user": "key", "page": "json.page"},
		}, filter(`value.contains('"action":"click"')`)))
	})
}
