package steps

import (
	"errors"
	"strings"
	"testing"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// fakeDecoder decodes "n=<int>" into {"n": int}; "down" is a registry that
// cannot answer, anything else a record error.
type fakeDecoder struct{ calls int }

type tempErr struct{}

func (tempErr) Error() string   { return "schema registry unavailable" }
func (tempErr) Temporary() bool { return true }

func (d *fakeDecoder) Decode(topic string, data []byte) (ref.Val, error) {
	d.calls++
	s := string(data)
	switch {
	case s == "down":
		return nil, tempErr{}
	case strings.HasPrefix(s, "n="):
		n := int64(len(s) - 2)
		return types.NewStringInterfaceMap(types.DefaultTypeAdapter, map[string]any{"n": n}), nil
	}
	return nil, errors.New("avro: schema id 9: not found in the schema registry")
}

func decodeSpec(policy sluicev1.RecordErrorPolicy) *sluicev1.JobSpec {
	s := withAgg(spec(filter("record.n >= 2")), "string(record_key.n)", "record.n", count, sum)
	s.Source = &sluicev1.KafkaSource{ValueFormat: "avro", KeyFormat: "protobuf"}
	s.OnRecordError = policy
	return s
}

func TestDecodedRecords(t *testing.T) {
	for _, policy := range []sluicev1.RecordErrorPolicy{fail, skip} {
		p := mustCompile(t, decodeSpec(policy))
		if !p.DecodesKey() || !p.DecodesValue() {
			t.Fatal("program does not decode")
		}
		r := p.NewRunner()
		r.SetDecoders(&fakeDecoder{}, &fakeDecoder{})
		for i, v := range []string{"n=1", "n=22", "n=333", "n=22"} {
			if err := r.Process(rec(int64(i), "n=k", v)); err != nil {
				t.Fatal(err)
			}
		}
		err := r.Process(rec(7, "n=k", "garbage"))
		res := r.Result()
		want := "record clicks/3 offset 7: source.value_format: avro: schema id 9: not found in the schema registry"
		if policy == fail {
			var re *RecordError
			if !errors.As(err, &re) || err.Error() != want {
				t.Errorf("FAIL: error %v, want a *RecordError %q", err, want)
			}
		} else if err != nil {
			t.Errorf("SKIP: error %v", err)
		}
		if res.Failed != 1 || res.FirstError != want {
			t.Errorf("%v: failed %d (%q)", policy, res.Failed, res.FirstError)
		}
		if len(res.Aggregates) != 1 || res.Aggregates[0].GetKey() != "1" || res.Aggregates[0].GetCount() != 3 || res.Aggregates[0].GetSum() != 7 {
			t.Errorf("%v: aggregates %v, want key 1: count 3, sum 7", policy, res.Aggregates)
		}
		// The key is named apart from the value.
		err = r.Process(rec(8, "bad", "n=1"))
		if policy == fail && (err == nil || !strings.Contains(err.Error(), "offset 8: source.key_format:")) {
			t.Errorf("key error %v, want it to name source.key_format", err)
		}
		// An unavailable registry is not the record's fault under any policy.
		failed := r.Result().Failed
		err = r.Process(rec(9, "n=k", "down"))
		var re *RecordError
		if err == nil || errors.As(err, &re) || !strings.Contains(err.Error(), "record clicks/3 offset 9: source.value_format: schema registry unavailable") {
			t.Errorf("%v: unavailable registry: error %v (%T), want a plain error", policy, err, err)
		}
		if got := r.Result().Failed; got != failed {
			t.Errorf("%v: unavailable registry counted as failed", policy)
		}
	}
}

func TestRecordVariablesNeedAFormat(t *testing.T) {
	for _, c := range []struct {
		s     *sluicev1.JobSpec
		field string
		want  string
	}{
		{spec(filter("record.n > 1")), "steps[0].filter", "set source.value_format"},
		{spec(mapKV("record_key.id", "")), "steps[0].map.key", "set source.key_format"},
	} {
		_, err := Compile(c.s)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Compile: %v, want %s: %s", err, c.field, c.want)
		}
	}
	s := spec(filter("record.n > 1"))
	s.Source = &sluicev1.KafkaSource{ValueFormat: "json"}
	if _, err := Compile(s); err == nil {
		t.Error("record with value_format json compiled")
	}
}

// A JSON job has no decoders: Process never calls one.
func TestJSONJobDoesNotDecode(t *testing.T) {
	p := mustCompile(t, spec(filter("json.n > 1")))
	if p.DecodesKey() || p.DecodesValue() {
		t.Fatal("a JSON program decodes")
	}
	r := p.NewRunner()
	r.SetDecoders(nil, nil)
	if r.dec != nil {
		t.Fatal("SetDecoders(nil, nil) kept decoders")
	}
	if err := r.Process(&record.Record{Value: []byte(`{"n": 2}`)}); err != nil || r.Result().Out != 1 {
		t.Fatalf("Process: %v, out %d", err, r.Result().Out)
	}
}
