package steps

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// fuzzProgram is a job's steps run on fuzzed records, with what must hold of
// each record's output beyond what holds of every output.
type fuzzProgram struct {
	name string
	spec *sluicev1.JobSpec
	// check, when set, checks the output of in (a copy of the record given to
	// Process, whose buffers were overwritten since).
	check func(t *testing.T, in *record.Record, res Result)
}

func withPolicy(s *sluicev1.JobSpec, p sluicev1.RecordErrorPolicy) *sluicev1.JobSpec {
	s.OnRecordError = p
	return s
}

var fuzzPrograms = []fuzzProgram{
	{name: "example job: json filter, aggregate by json.page", spec: withAgg(spec(filter("json.ms < 1000")), "json.page", "json.ms", count, avg, maxF)},
	{name: "bytes unchanged", spec: spec(mapKV("key_bytes", "value_bytes")), check: func(t *testing.T, in *record.Record, res Result) {
		checkOneRecord(t, res, in.Key, in.Value)
	}},
	{name: "strings unchanged", spec: spec(filter("true"), mapKV("key", "value")), check: func(t *testing.T, in *record.Record, res Result) {
		checkOneRecord(t, res, in.Key, in.Value)
	}},
	{name: "aggregate by record key", spec: withAgg(spec(), "", "size(value_bytes)", count, sum), check: func(t *testing.T, in *record.Record, res Result) {
		if len(res.Aggregates) != 1 || ExactKey(res.Aggregates[0]) != string(in.Key) || res.Aggregates[0].GetCount() != 1 ||
			res.Aggregates[0].GetSum() != float64(len(in.Value)) {
			t.Fatalf("aggregates = %v, want one of key %q, count 1, sum %d", res.Aggregates, in.Key, len(in.Value))
		}
	}},
	{name: "aggregate by value and a header", spec: withAgg(spec(), "value + '|' + ('x' in headers ? headers['x'] : '')", "offset", minF)},
	{name: "aggregate by json key", spec: withPolicy(withAgg(spec(filter("has(json.k)")), "json.k", "json.v", sum, minF, maxF, avg), skip)},
	// A map step writes a list or map as JSON, a string as its text.
	{name: "json as written", spec: spec(mapKV("", "json")), check: func(t *testing.T, in *record.Record, res Result) {
		v := bytes.TrimLeft(in.Value, " \t\r\n")
		if len(v) > 0 && (v[0] == '{' || v[0] == '[') && !sameJSON(in.Value, res.Records[0].GetValue()) {
			t.Fatalf("value %q written as %q", in.Value, res.Records[0].GetValue())
		}
	}},
	{name: "map to JSON", spec: spec(mapKV("{'k': key, 'h': headers, 'v': value_bytes}", "[key, value, partition, offset, timestamp]")),
		check: func(t *testing.T, in *record.Record, res Result) {
			if len(res.Records) == 1 && !(json.Valid(res.Records[0].GetKey()) && json.Valid(res.Records[0].GetValue())) {
				t.Fatalf("map to JSON wrote %q=%q: not JSON", res.Records[0].GetKey(), res.Records[0].GetValue())
			}
		}},
	{name: "string functions", spec: withPolicy(spec(
		filter("headers.exists(k, k.startsWith('x-')) || value.contains('a') || key.matches('^[0-9]+$') || true"),
		mapKV("key.lowerAscii().split('-')[0] + base64.encode(key_bytes)", "value.replace('a', 'b').trim() + string(timestamp)"),
		filter("size(value) >= 0"),
	), skip)},
	{name: "kafka sink: routed by record", spec: kafkaSpec(&sluicev1.KafkaSink{
		TopicExpr:     "'out-' + string(size(key_bytes) % 3)",
		PartitionExpr: "size(value_bytes) % 7",
		Headers:       map[string]string{"k": "key", "v": "value_bytes", "h": "headers.?x.orValue('none')"},
	}), check: func(t *testing.T, in *record.Record, res Result) {
		checkOneRecord(t, res, in.Key, in.Value)
		o := res.Records[0]
		if want := fmt.Sprintf("out-%d", len(in.Key)%3); o.GetSinkTopic() != want || o.GetSinkPartition() != int32(len(in.Value)%7) {
			t.Fatalf("routed to %s/%d, want %s/%d", o.GetSinkTopic(), o.GetSinkPartition(), want, len(in.Value)%7)
		}
		if len(o.GetHeaders()) != 3 || !bytes.Equal(o.GetHeaders()[1].GetValue(), in.Key) || !bytes.Equal(o.GetHeaders()[2].GetValue(), in.Value) {
			t.Fatalf("headers = %v, want h, k (the key %q), v (the value %q)", o.GetHeaders(), in.Key, in.Value)
		}
	}},
	{name: "kafka sink: routed by json", spec: withPolicy(kafkaSpec(&sluicev1.KafkaSink{
		TopicExpr: "json.t", PartitionExpr: "int(json.p)", Headers: map[string]string{"j": "json.h"},
	}, filter("json.keep != false")), skip)},
	// A flatMap of the JSON array's elements, then JSON steps on each, and
	// one of the split value: never more records than elements.
	{name: "flatMap of json, then json steps", spec: withPolicy(withAgg(spec(
		flatMap("json.items"), filter("json.q > 0")), "string(json.k)", "json.q", count, sum), skip)},
	{name: "flatMap of a split value, dead letters", spec: func() *sluicev1.JobSpec {
		s := spec(flatMap(`value.split(",").map(x, {"key": x, "value": x + "!"})`), mapKV("", "value + key"))
		s.OnRecordError = sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER
		s.DeadLetter = &sluicev1.DeadLetter{Topic: "dlq"}
		return s
	}(), check: func(t *testing.T, in *record.Record, res Result) {
		if want := int64(bytes.Count(in.Value, []byte(","))) + 1; res.Failed == 0 && res.Out != want {
			t.Fatalf("%q split into %d records, want %d", in.Value, res.Out, want)
		}
	}},
}

func fans(s *sluicev1.JobSpec) bool {
	for _, st := range s.GetSteps() {
		if st.GetFlatMap() != "" {
			return true
		}
	}
	return false
}

// compiled is fuzzPrograms compiled, once per fuzz process.
var compiled = func() []*Program {
	ps := make([]*Program, len(fuzzPrograms))
	for i, fp := range fuzzPrograms {
		p, err := Compile(fp.spec)
		if err != nil {
			panic(fmt.Sprintf("%s: %v", fp.name, err))
		}
		ps[i] = p
	}
	return ps
}

// FuzzProcess runs any bytes as key, value and a header (name and value)
// through filter, map, aggregate and Kafka sink programs over JSON and raw
// bytes: Process never panics or hangs, a failed record is counted and its
// error is valid UTF-8 of bounded size, and the output is what the sink
// needs: every OutputRecord and KeyAggregate marshals (its strings are valid
// UTF-8), exact bytes are kept, and the output does not alias the record's
// buffers, which the reader reuses.
func FuzzProcess(f *testing.F) {
	for _, rc := range clickRecords(3) {
		f.Add(rc.Key, rc.Value, "x-id", []byte("42"), rc.Timestamp.UnixMilli())
	}
	for _, v := range jsonCorpus {
		f.Add([]byte("k"), []byte(v), "x", []byte(v), int64(0))
	}
	f.Add([]byte(nil), []byte(`{"k":"\u00ff","v":1.5,"t":"out","p":3,"h":"a"}`), "x-a", []byte(nil), int64(-1))
	f.Add([]byte{0xff, 0xfe}, []byte{0xc3}, "\xff", []byte{0xc0, 0x80}, int64(1)<<62)
	f.Add([]byte(`{"k":1}`), []byte(`{"k":true,"v":-0,"t":"a.b","p":1e300,"keep":false}`), "", []byte("\x00"), int64(-1)<<62)
	f.Add([]byte("u-1"), []byte(`{"k":{"a":[1,{"b":null}]},"v":"1","t":"..","p":-1,"h":["x"]}`), "x", []byte("é"), int64(253402300800000))

	progs := compiled()
	f.Fuzz(func(t *testing.T, key, value []byte, hname string, hvalue []byte, tsMillis int64) {
		for i, p := range progs {
			fp := &fuzzPrograms[i]
			in := &record.Record{Topic: "clicks", Partition: 3, Offset: 41, Key: key, Value: value,
				Headers:   []record.Header{{Key: hname, Value: hvalue}, {Key: "x", Value: []byte("x")}},
				Timestamp: time.UnixMilli(tsMillis)}
			if len(key) == 0 {
				in.Key = nil
			}
			// Given copies, overwritten after Process as the reader does.
			rec := *in
			rec.Key, rec.Value = bytes.Clone(in.Key), bytes.Clone(in.Value)
			rec.Headers = []record.Header{{Key: hname, Value: bytes.Clone(hvalue)}, {Key: "x", Value: []byte("x")}}

			stop := watchdog(fmt.Sprintf("%s: Process(%q, %q, %q: %q)", fp.name, key, value, hname, hvalue))
			r := p.NewRunner()
			err := r.Process(&rec)
			stop()
			for _, b := range [][]byte{rec.Key, rec.Value, rec.Headers[0].Value} {
				for j := range b {
					b[j] = 0xee
				}
			}
			checkProcessError(t, fp.name, err)
			res := r.Result()
			// A flatMap may output many records of one; a failed record
			// outputs none. Skipped and dead-lettered ones are no error.
			policy := fp.spec.GetOnRecordError()
			swallowed := policy == skip || policy == sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER
			if res.In != 1 || (res.Out+res.Failed > 1 && !fans(fp.spec)) || (res.Failed > 0 && res.Out > 0) || res.Failed > 1 ||
				(err != nil) != (res.Failed == 1 && !swallowed) {
				t.Fatalf("%s: Process error = %v; Result() = %d in, %d out, %d failed", fp.name, err, res.In, res.Out, res.Failed)
			}
			if dead := r.DrainDeadLetters(); policy == sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER &&
				(int64(len(dead)) != res.Failed || res.DeadLettered != res.Failed) {
				t.Fatalf("%s: %d failed, %d dead letters, %d dead-lettered", fp.name, res.Failed, len(dead), res.DeadLettered)
			} else if len(dead) == 1 && (!bytes.Equal(dead[0].GetValue(), in.Value) || !bytes.Equal(dead[0].GetKey(), in.Key)) {
				t.Fatalf("%s: dead letter %q=%q, want the record %q=%q", fp.name, dead[0].GetKey(), dead[0].GetValue(), in.Key, in.Value)
			}
			if res.Failed == 1 && res.FirstError == "" {
				t.Fatalf("%s: a record failed and Result().FirstError is empty", fp.name)
			}
			checkResult(t, res)
			if fp.check != nil {
				if err != nil {
					continue
				}
				fp.check(t, in, res)
			}
		}
	})
}

// checkResult checks what every Result must be for the worker to send it:
// a TaskResult with these aggregates, records and error marshals.
func checkResult(t *testing.T, res Result) {
	t.Helper()
	if !utf8.ValidString(res.FirstError) || len(res.FirstError) > MaxErrorBytes {
		t.Fatalf("Result().FirstError of %d bytes, valid UTF-8 %v: %q", len(res.FirstError), utf8.ValidString(res.FirstError), res.FirstError)
	}
	tr := &sluicev1.TaskResult{Error: res.FirstError, RecordsIn: res.In, RecordsOut: res.Out, RecordsFailed: res.Failed,
		Aggregates: res.Aggregates, Records: res.Records}
	if _, err := proto.Marshal(tr); err != nil {
		t.Fatalf("TaskResult of Result() does not marshal: %v\n%v", err, tr)
	}
	for _, ka := range res.Aggregates {
		if len(ka.GetKeyBytes()) > 0 && (utf8.Valid(ka.GetKeyBytes()) || ka.GetKey() != escapeInvalid(string(ka.GetKeyBytes()))) {
			t.Fatalf("aggregate key %q with key_bytes %q: key_bytes only for a key that is not UTF-8, key its readable form", ka.GetKey(), ka.GetKeyBytes())
		}
	}
}

// checkOneRecord checks that res holds one output record of key and value.
func checkOneRecord(t *testing.T, res Result, key, value []byte) {
	t.Helper()
	if len(res.Records) != 1 || !bytes.Equal(res.Records[0].GetKey(), key) || !bytes.Equal(res.Records[0].GetValue(), value) {
		t.Fatalf("output = %v, want one record %q=%q", res.Records, key, value)
	}
}

// sameJSON reports whether a and b are the same JSON value as encoding/json
// reads them.
func sameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}
