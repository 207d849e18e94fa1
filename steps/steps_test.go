package steps

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

const (
	count = sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT
	sum   = sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM
	minF  = sluicev1.AggregateFunction_AGGREGATE_FUNCTION_MIN
	maxF  = sluicev1.AggregateFunction_AGGREGATE_FUNCTION_MAX
	avg   = sluicev1.AggregateFunction_AGGREGATE_FUNCTION_AVG
	skip  = sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_SKIP
	fail  = sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_FAIL
)

func filter(src string) *sluicev1.Step {
	return &sluicev1.Step{Kind: &sluicev1.Step_Filter{Filter: src}}
}

func mapKV(key, value string) *sluicev1.Step {
	return &sluicev1.Step{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{Key: key, Value: value}}}
}

func spec(steps ...*sluicev1.Step) *sluicev1.JobSpec {
	return &sluicev1.JobSpec{Name: "test", Steps: steps}
}

func withAgg(s *sluicev1.JobSpec, key, value string, fns ...sluicev1.AggregateFunction) *sluicev1.JobSpec {
	s.Aggregate = &sluicev1.Aggregate{Key: key, Value: value, Functions: fns}
	return s
}

// rec returns a record of topic "clicks", partition 3, at offset.
func rec(offset int64, key, value string) *record.Record {
	r := &record.Record{Topic: "clicks", Partition: 3, Offset: offset, Value: []byte(value)}
	if key != "" {
		r.Key = []byte(key)
	}
	return r
}

func mustCompile(t testing.TB, s *sluicev1.JobSpec) *Program {
	t.Helper()
	p, err := Compile(s)
	if err != nil {
		t.Fatalf("Compile() error: %v", err)
	}
	return p
}

// run processes recs and returns the result; it fails the test on an error.
func run(t *testing.T, s *sluicev1.JobSpec, recs ...*record.Record) Result {
	t.Helper()
	r := mustCompile(t, s).NewRunner()
	for _, rc := range recs {
		if err := r.Process(rc); err != nil {
			t.Fatalf("Process(offset %d) error: %v", rc.Offset, err)
		}
	}
	return r.Result()
}

// kv renders output records as "key=value" for comparison.
func kv(recs []*sluicev1.OutputRecord) string {
	var b strings.Builder
	for i, r := range recs {
		if i > 0 {
			b.WriteString(" | ")
		}
		fmt.Fprintf(&b, "%s=%s", r.GetKey(), r.GetValue())
	}
	return b.String()
}

func TestCompileErrors(t *testing.T) {
	unspecified := sluicev1.AggregateFunction_AGGREGATE_FUNCTION_UNSPECIFIED
	tests := []struct {
		name      string
		spec      *sluicev1.JobSpec
		wantField string
		wantMsg   []string // substrings of Error()
	}{
		{
			name:      "undeclared reference",
			spec:      spec(filter("true"), filter("true"), filter("vale == 'x'")),
			wantField: "steps[2].filter",
			wantMsg:   []string{"steps[2].filter: ERROR: <input>:1:1: undeclared reference to 'vale'", "vale == 'x'"},
		},
		{
			name:      "undeclared reference at column 5",
			spec:      spec(filter("true"), filter("1 < vale")),
			wantField: "steps[1].filter",
			wantMsg:   []string{"steps[1].filter: ERROR: <input>:1:5: undeclared reference to 'vale'"},
		},
		{
			name:      "syntax error",
			spec:      spec(filter("value.contains('a') &&")),
			wantField: "steps[0].filter",
			wantMsg:   []string{"<input>:1:23: Syntax error"},
		},
		{
			name:      "filter not bool",
			spec:      spec(filter("size(value)")),
			wantField: "steps[0].filter",
			wantMsg:   []string{"<input>:1:5: expression gives int, want a bool", "size(value)"},
		},
		{
			name:      "invalid regex constant",
			spec:      spec(filter("value.matches('[')")),
			wantField: "steps[0].filter",
			wantMsg:   []string{"steps[0].filter: ", "missing closing ]"},
		},
		{
			name:      "empty filter",
			spec:      spec(filter(" ")),
			wantField: "steps[0].filter",
			wantMsg:   []string{"empty expression"},
		},
		{
			name:      "step without kind",
			spec:      spec(filter("true"), &sluicev1.Step{}),
			wantField: "steps[1]",
			wantMsg:   []string{"steps[1]: needs a filter or a map"},
		},
		{
			name:      "map without expressions",
			spec:      spec(mapKV("", "")),
			wantField: "steps[0].map",
			wantMsg:   []string{"needs a key or a value"},
		},
		{
			name:      "map key type error",
			spec:      spec(mapKV("key + 1", "")),
			wantField: "steps[0].map.key",
			wantMsg:   []string{"<input>:1:5: found no matching overload for '_+_'"},
		},
		{
			name:      "map value of type type",
			spec:      spec(mapKV("key", "type(value)")),
			wantField: "steps[0].map.value",
			wantMsg:   []string{"1:5: expression gives type(string), want a string, bytes"},
		},
		{
			name:      "aggregate key list",
			spec:      withAgg(spec(), "[key]", ""),
			wantField: "aggregate.key",
			wantMsg:   []string{"aggregate.key: ERROR: <input>:1:1: expression gives list(string), want a string, bytes, number or bool"},
		},
		{
			name:      "aggregate value string",
			spec:      withAgg(spec(), "", "value", sum),
			wantField: "aggregate.value",
			wantMsg:   []string{"<input>:1:1: expression gives string, want a number"},
		},
		{
			name:      "aggregate value missing",
			spec:      withAgg(spec(), "key", "", count, sum, avg),
			wantField: "aggregate.value",
			wantMsg:   []string{"required by AGGREGATE_FUNCTION_SUM, AGGREGATE_FUNCTION_AVG"},
		},
		{
			name:      "aggregate function unspecified",
			spec:      withAgg(spec(), "key", "1", count, sum, unspecified),
			wantField: "aggregate.functions[2]",
			wantMsg:   []string{"aggregate.functions[2]: AGGREGATE_FUNCTION_UNSPECIFIED is not an aggregate function"},
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
			if errors.Unwrap(err) != fe.Err {
				t.Errorf("Unwrap() = %v, want %v", errors.Unwrap(err), fe.Err)
			}
			for _, w := range tc.wantMsg {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Error() = %q, want it to contain %q", err.Error(), w)
				}
			}
		})
	}
}

func TestCompileAccepts(t *testing.T) {
	tests := []struct {
		name string
		spec *sluicev1.JobSpec
	}{
		{"dyn filter", spec(filter("json.ok"))},
		{"double vs int comparison", spec(filter("json.ms > 100"))},
		{"json functions beside the json variable", spec(filter("json.encode(json.a) == string(json.parse('1').orValue(0))"))},
		{"strings extension", spec(mapKV("key.lowerAscii().split('-')[0]", "value.substring(1)"))},
		{"math extension", spec(mapKV("", "math.greatest(1, 2.5)"))},
		{"regex extension", spec(mapKV("regex.extract(value, 'id=([0-9]+)').orValue('')", ""))},
		{"bindings", spec(filter("cel.bind(v, value, v.startsWith('a') || v.endsWith('z'))"))},
		{"count by default", withAgg(spec(), "", "")},
		{"int key", withAgg(spec(), "partition", "")},
		{"dyn value", withAgg(spec(), "json.user", "json.ms", count, sum, minF, maxF, avg)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Compile(tc.spec); err != nil {
				t.Errorf("Compile() error: %v", err)
			}
		})
	}
}

func TestSteps(t *testing.T) {
	recs := []*record.Record{
		rec(0, "u1", `{"user":"ann","ms":120,"tags":["a","b"],"ok":true}`),
		rec(1, "u2", `{"user":"bob","ms":80,"tags":[],"ok":false}`),
		rec(2, "u3", `{"user":"cy","ms":101.5,"tags":["c"],"ok":true}`),
	}
	tests := []struct {
		name  string
		steps []*sluicev1.Step
		want  string
	}{
		{
			name: "no steps",
			want: `u1={"user":"ann","ms":120,"tags":["a","b"],"ok":true} | u2={"user":"bob","ms":80,"tags":[],"ok":false} | u3={"user":"cy","ms":101.5,"tags":["c"],"ok":true}`,
		},
		{
			name:  "filter on value",
			steps: []*sluicev1.Step{filter("value.contains('bob')")},
			want:  `u2={"user":"bob","ms":80,"tags":[],"ok":false}`,
		},
		{
			name:  "filter on json double against int",
			steps: []*sluicev1.Step{filter("json.ms > 100"), mapKV("json.user", "json.ms")},
			want:  `ann=120 | cy=101.5`,
		},
		{
			name:  "map key and value see the same input",
			steps: []*sluicev1.Step{mapKV("value.size()", "key")},
			want:  `50=u1 | 43=u2 | 47=u3`,
		},
		{
			name:  "map then filter sees the new value",
			steps: []*sluicev1.Step{mapKV("", "json.user.upperAscii()"), filter("value == 'BOB'")},
			want:  `u2=BOB`,
		},
		{
			name:  "filter then map",
			steps: []*sluicev1.Step{filter("json.ok"), mapKV("", "json.user")},
			want:  `u1=ann | u3=cy`,
		},
		{
			name:  "json re-parses a mapped value",
			steps: []*sluicev1.Step{mapKV("", `json.encode({"n": json.tags.size()})`), filter("json.n >= 1"), mapKV("", "json.n")},
			want:  `u1=2 | u3=1`,
		},
		{
			name:  "chained maps",
			steps: []*sluicev1.Step{mapKV("key + '-' + json.user", ""), mapKV("key + '!'", "key"), mapKV("value + '/' + key", "")},
			want:  `u1-ann/u1-ann!=u1-ann | u2-bob/u2-bob!=u2-bob | u3-cy/u3-cy!=u3-cy`,
		},
		{
			name:  "lists and maps as sorted JSON",
			steps: []*sluicev1.Step{mapKV("json.tags", `{"z": json.ok, "a": [1, 2u, 0.5, null, "q\"\n"], "m": {"k": b"hi"}}`), filter("key != '[]'")},
			want:  `["a","b"]={"a":[1,2,0.5,null,"q\"\n"],"m":{"k":"aGk="},"z":true} | ["c"]={"a":[1,2,0.5,null,"q\"\n"],"m":{"k":"aGk="},"z":true}`,
		},
		{
			name:  "whole json object",
			steps: []*sluicev1.Step{filter("offset == 0"), mapKV("", "json")},
			want:  `u1={"ms":120,"ok":true,"tags":["a","b"],"user":"ann"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := run(t, spec(tc.steps...), recs...)
			if kv(got.Records) != tc.want {
				t.Errorf("records = %s\nwant      %s", kv(got.Records), tc.want)
			}
			if got.In != 3 || got.Out != int64(len(got.Records)) || got.Failed != 0 {
				t.Errorf("In, Out, Failed = %d, %d, %d; want 3, %d, 0", got.In, got.Out, got.Failed, len(got.Records))
			}
		})
	}
}

func TestMapConversions(t *testing.T) {
	tests := []struct {
		expr string
		want string
	}{
		{"'text'", "text"},
		{"b'\\x00\\xff'", "\x00\xff"},
		{"-42", "-42"},
		{"42u", "42"},
		{"2.5", "2.5"},
		{"1234567.0", "1234567"},
		{"1e21", "1e+21"},
		{"0.0000001", "1e-7"},
		{"true", "true"},
		{"null", ""},
		{"[1, 'a']", `[1,"a"]`},
		{"{2: 'b', 1: 'a'}", `{"1":"a","2":"b"}`},
		{"timestamp('2024-05-01T10:00:00Z')", "2024-05-01T10:00:00Z"},
		{"duration('90s')", "90s"},
		{"dyn(7)", "7"},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			got := run(t, spec(mapKV("", tc.expr)), rec(0, "k", "v"))
			if len(got.Records) != 1 || string(got.Records[0].GetValue()) != tc.want {
				t.Errorf("map value %s gave %q, want %q", tc.expr, kv(got.Records), tc.want)
			}
		})
	}
}

func TestAggregate(t *testing.T) {
	recs := []*record.Record{
		rec(0, "k1", `{"user":"ann","ms":120,"n":1}`),
		rec(1, "k2", `{"user":"bob","ms":80,"n":2}`),
		rec(2, "k1", `{"user":"ann","ms":30.5,"n":1}`),
		rec(3, "k1", `{"user":"ann","ms":200,"n":3}`),
		rec(4, "", `{"user":"cy","ms":-1,"n":3}`),
	}
	ka := func(key string, count int64, sum, min, max, avg float64) *sluicev1.KeyAggregate {
		return &sluicev1.KeyAggregate{Key: key, Count: count, Sum: sum, Min: min, Max: max, Avg: avg}
	}
	tests := []struct {
		name string
		spec *sluicev1.JobSpec
		want []*sluicev1.KeyAggregate
		out  int64
	}{
		{
			name: "count by record key",
			spec: withAgg(spec(), "", ""),
			want: []*sluicev1.KeyAggregate{ka("", 1, 0, 0, 0, 0), ka("k1", 3, 0, 0, 0, 0), ka("k2", 1, 0, 0, 0, 0)},
			out:  5,
		},
		{
			name: "json key and value",
			spec: withAgg(spec(), "json.user", "json.ms", count, sum, minF, maxF, avg),
			want: []*sluicev1.KeyAggregate{
				ka("ann", 3, 350.5, 30.5, 200, 350.5/3),
				ka("bob", 1, 80, 80, 80, 80),
				ka("cy", 1, -1, -1, -1, -1),
			},
			out: 5,
		},
		{
			name: "number key formatted, int value, after a filter",
			spec: withAgg(spec(filter("json.ms >= 0")), "json.n", "offset * 10", sum),
			want: []*sluicev1.KeyAggregate{ka("1", 2, 20, 0, 20, 10), ka("2", 1, 10, 10, 10, 10), ka("3", 1, 30, 30, 30, 30)},
			out:  4,
		},
		{
			name: "key from a map step",
			spec: withAgg(spec(mapKV("json.user.size() > 2 ? 'long' : 'short'", "")), "", "json.n", count, avg),
			want: []*sluicev1.KeyAggregate{ka("long", 4, 7, 1, 3, 1.75), ka("short", 1, 3, 3, 3, 3)},
			out:  5,
		},
		{
			name: "bool key",
			spec: withAgg(spec(), "json.ms > 100", ""),
			want: []*sluicev1.KeyAggregate{ka("false", 3, 0, 0, 0, 0), ka("true", 2, 0, 0, 0, 0)},
			out:  5,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := run(t, tc.spec, recs...)
			if len(got.Aggregates) != len(tc.want) {
				t.Fatalf("Aggregates = %v, want %v", got.Aggregates, tc.want)
			}
			for i := range tc.want {
				if !proto.Equal(got.Aggregates[i], tc.want[i]) {
					t.Errorf("Aggregates[%d] = %v, want %v", i, got.Aggregates[i], tc.want[i])
				}
			}
			if got.Records != nil {
				t.Errorf("Records = %v, want none when aggregating", got.Records)
			}
			if got.In != 5 || got.Out != tc.out {
				t.Errorf("In, Out = %d, %d; want 5, %d", got.In, got.Out, tc.out)
			}
		})
	}
}

func TestJSONLaziness(t *testing.T) {
	notJSON := []*record.Record{rec(0, "a", "not json"), rec(1, "b", "{broken"), rec(2, "c", "")}
	p := mustCompile(t, spec(filter("key != 'x'"), mapKV("", "value + '!'")))
	if p.UsesJSON() {
		t.Errorf("UsesJSON() = true for a program without json")
	}
	r := p.NewRunner()
	for _, rc := range notJSON {
		if err := r.Process(rc); err != nil {
			t.Fatalf("Process(%q) error: %v", rc.Value, err)
		}
	}
	if got, want := kv(r.Result().Records), "a=not json! | b={broken! | c=!"; got != want {
		t.Errorf("records = %s, want %s", got, want)
	}
	if r.act.json.parses != 0 {
		t.Errorf("values parsed = %d, want 0", r.act.json.parses)
	}

	// json functions are not the variable: they must not parse the value either.
	p = mustCompile(t, spec(filter(`json.encode(key) == '"a"'`)))
	if p.UsesJSON() {
		t.Errorf("UsesJSON() = true for json.encode only")
	}
	if got := run(t, spec(filter(`json.encode(key) == '"a"'`)), notJSON...); kv(got.Records) != "a=not json" {
		t.Errorf("records = %s, want a=not json", kv(got.Records))
	}

	// Several reads of json over several steps parse once per value.
	p = mustCompile(t, withAgg(spec(filter("json.a > 0 && json.b != 'x'"), filter("has(json.a)")), "json.b", "json.a", sum))
	r = p.NewRunner()
	for i := range 4 {
		if err := r.Process(rec(int64(i), "", fmt.Sprintf(`{"a":%d,"b":"k"}`, i))); err != nil {
			t.Fatalf("Process error: %v", err)
		}
	}
	if got := r.act.json.parses; got != 4 {
		t.Errorf("values parsed = %d, want 4 (one per record)", got)
	}
	// A map step that changes the value makes json parse the new one.
	p = mustCompile(t, spec(filter("json.a > 0"), mapKV("", `'{"c": 5}'`), filter("json.c == 5")))
	r = p.NewRunner()
	if err := r.Process(rec(0, "", `{"a":1}`)); err != nil {
		t.Fatalf("Process error: %v", err)
	}
	if got := r.act.json.parses; got != 2 {
		t.Errorf("values parsed = %d, want 2 (before and after the map)", got)
	}
	if got := r.Result().Out; got != 1 {
		t.Errorf("Out = %d, want 1", got)
	}
}

func TestRecordErrors(t *testing.T) {
	recs := []*record.Record{
		rec(5, "a", `{"ms": 10}`),
		rec(6, "b", `not json`),
		rec(7, "c", `{"other": 1}`),
		rec(8, "d", `{"ms": "slow"}`),
		rec(9, "e", `{"ms": 30}`),
	}
	tests := []struct {
		name       string
		spec       *sluicev1.JobSpec
		wantErrs   []string // per record, "" when it passes
		wantOut    int64
		wantFirst  string
		wantFields []string
	}{
		{
			name:     "filter",
			spec:     spec(filter("json.ms > 5")),
			wantErrs: []string{"", "record clicks/3 offset 6: steps[0].filter: value is not JSON", "record clicks/3 offset 7: steps[0].filter: no such key: ms", "steps[0].filter: no such overload", ""},
			wantOut:  2,
		},
		{
			name:     "filter not bool at run time",
			spec:     spec(filter("json.ms != 10"), filter("json.ms")),
			wantErrs: []string{"", "value is not JSON", "no such key: ms", "record clicks/3 offset 8: steps[1].filter: filter gave string, want bool", "steps[1].filter: filter gave double, want bool"},
			wantOut:  0,
		},
		{
			name:     "json error even when the result did not need it",
			spec:     spec(filter("value.startsWith('{') || has(json.ms)"), mapKV("'k'", "")),
			wantErrs: []string{"", "steps[0].filter: value is not JSON", "", "", ""},
			wantOut:  4,
		},
		{
			name:     "map value",
			spec:     spec(mapKV("", "json.ms + 1.0")),
			wantErrs: []string{"", "steps[0].map.value: value is not JSON", "steps[0].map.value: no such key: ms", "steps[0].map.value: no such overload", ""},
			wantOut:  2,
		},
		{
			name:     "aggregate value",
			spec:     withAgg(spec(filter("value.startsWith('{')")), "key", "json.?ms.orValue(0)", sum),
			wantErrs: []string{"", "", "", "offset 8: aggregate.value: expression gave string, want a number", ""},
			wantOut:  3,
		},
		{
			name:     "aggregate key",
			spec:     withAgg(spec(filter("value.startsWith('{')")), "json.ms", ""),
			wantErrs: []string{"", "", "aggregate.key: no such key: ms", "", ""},
			wantOut:  3,
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
					case policy == skip && err != nil:
						t.Errorf("Process(offset %d) error = %v, want nil under SKIP", rc.Offset, err)
					case policy != skip && want == "" && err != nil:
						t.Errorf("Process(offset %d) error = %v, want nil", rc.Offset, err)
					case policy != skip && want != "":
						var re *RecordError
						if !errors.As(err, &re) {
							t.Fatalf("Process(offset %d) error = %v, want *RecordError containing %q", rc.Offset, err, want)
						}
						if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("clicks/3 offset %d", rc.Offset)) {
							t.Errorf("Process(offset %d) error = %q, want it to contain %q", rc.Offset, err, want)
						}
						if re.Offset != rc.Offset || re.Topic != "clicks" || re.Partition != 3 {
							t.Errorf("RecordError = %+v, want clicks/3 offset %d", re, rc.Offset)
						}
					}
				}
				got := r.Result()
				if got.In != 5 || got.Out != tc.wantOut || got.Failed != failed {
					t.Errorf("In, Out, Failed = %d, %d, %d; want 5, %d, %d", got.In, got.Out, got.Failed, tc.wantOut, failed)
				}
				if !strings.Contains(got.FirstError, first) || !strings.HasPrefix(got.FirstError, "record clicks/3 offset ") {
					t.Errorf("FirstError = %q, want it to contain %q", got.FirstError, first)
				}
			})
		}
	}
}

func TestVariables(t *testing.T) {
	ts := time.Date(2024, 5, 1, 10, 30, 0, 0, time.FixedZone("CEST", 2*3600))
	r := &record.Record{
		Topic: "orders", Partition: 7, Offset: 1 << 40,
		Key: []byte("k\xff"), Value: []byte("v1"),
		Headers:   []record.Header{{Key: "trace", Value: []byte("t1")}, {Key: "src", Value: []byte("web")}, {Key: "trace", Value: []byte("t2")}},
		Timestamp: ts,
	}
	tests := []struct {
		expr string
		want string
	}{
		{"topic", "orders"},
		{"partition", "7"},
		{"offset", "1099511627776"},
		{"timestamp", "2024-05-01T08:30:00Z"},
		{"timestamp.getHours()", "8"},
		{"timestamp.getHours('+02:00')", "10"},
		{"int(timestamp)", "1714552200"},
		{"headers", `{"src":"web","trace":"t2"}`},
		{"headers.src + ',' + headers.trace", "web,t2"},
		{"'x' in headers", "false"},
		{"key_bytes", "k\xff"},
		{"size(key_bytes)", "2"},
		{"value_bytes + b'!'", "v1!"},
		{"base64.encode(value_bytes)", "djE="},
		{"value", "v1"},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			got := run(t, spec(mapKV("", tc.expr)), r)
			if len(got.Records) != 1 || string(got.Records[0].GetValue()) != tc.want {
				t.Errorf("%s = %q, want %q", tc.expr, kv(got.Records), tc.want)
			}
		})
	}
	got := run(t, spec(filter("true")), r)
	o := got.Records[0]
	if o.GetTopic() != "orders" || o.GetPartition() != 7 || o.GetOffset() != 1<<40 {
		t.Errorf("output record = %v, want orders/7 at offset %d", o, int64(1)<<40)
	}
	if got := run(t, spec(mapKV("key == '' ? 'none' : key", "")), rec(0, "", "v")); kv(got.Records) != "none=v" {
		t.Errorf("record without key gave %s, want none=v", kv(got.Records))
	}
}

// The reader reuses its buffers: nothing kept may alias a record.
func TestOutputIsCopied(t *testing.T) {
	buf := []byte("key1value1")
	r := &record.Record{Topic: "t", Key: buf[:4], Value: buf[4:]}
	collect := mustCompile(t, spec(filter("true"))).NewRunner()
	agg := mustCompile(t, withAgg(spec(), "", "")).NewRunner()
	mapped := mustCompile(t, spec(mapKV("value", "key"))).NewRunner()
	for _, run := range []*Runner{collect, agg, mapped} {
		if err := run.Process(r); err != nil {
			t.Fatal(err)
		}
	}
	copy(buf, "XXXXXXXXXX")
	if got := kv(collect.Result().Records); got != "key1=value1" {
		t.Errorf("collected %s, want key1=value1", got)
	}
	if got := kv(mapped.Result().Records); got != "value1=key1" {
		t.Errorf("mapped %s, want value1=key1", got)
	}
	if got := agg.Result().Aggregates[0].GetKey(); got != "key1" {
		t.Errorf("aggregate key %q, want key1", got)
	}
	if got, want := collect.OutputBytes(), int64(10+1+recordOverhead); got != want {
		t.Errorf("OutputBytes() = %d, want %d", got, want)
	}
}

func TestMerge(t *testing.T) {
	a := []*sluicev1.KeyAggregate{
		{Key: "x", Count: 2, Sum: 10, Min: 1, Max: 9, Avg: 5},
		{Key: "y", Count: 1, Sum: -3, Min: -3, Max: -3, Avg: -3},
	}
	b := []*sluicev1.KeyAggregate{
		{Key: "z", Count: 4, Sum: 2, Min: 0.25, Max: 1, Avg: 0.5},
		{Key: "x", Count: 3, Sum: 20.5, Min: 0.5, Max: 12, Avg: 20.5 / 3},
	}
	c := []*sluicev1.KeyAggregate{
		{Key: "y", Count: 2, Sum: 4, Min: 1, Max: 3, Avg: 2},
		{Key: "x", Count: 1, Sum: 7, Min: 7, Max: 7, Avg: 7},
	}
	aBefore := proto.Clone(a[0])
	got := Merge(a, b, nil, c)
	want := []*sluicev1.KeyAggregate{
		{Key: "x", Count: 6, Sum: 37.5, Min: 0.5, Max: 12, Avg: 6.25},
		{Key: "y", Count: 3, Sum: 1, Min: -3, Max: 3, Avg: 1.0 / 3},
		{Key: "z", Count: 4, Sum: 2, Min: 0.25, Max: 1, Avg: 0.5},
	}
	if len(got) != len(want) {
		t.Fatalf("Merge() = %v, want %v", got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("Merge()[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if !proto.Equal(a[0], aBefore) {
		t.Errorf("Merge modified its input: %v, was %v", a[0], aBefore)
	}
	if got := Merge(); len(got) != 0 {
		t.Errorf("Merge() of nothing = %v, want empty", got)
	}

	// Merging the results of two runners equals one runner over all records.
	p := mustCompile(t, withAgg(spec(), "json.k", "json.v", count, sum, minF, maxF, avg))
	all, r1, r2 := p.NewRunner(), p.NewRunner(), p.NewRunner()
	for i := range 20 {
		rc := rec(int64(i), "", fmt.Sprintf(`{"k":"k%d","v":%d}`, i%3, i*i-50))
		part := r1
		if i%2 == 1 {
			part = r2
		}
		if err := part.Process(rc); err != nil {
			t.Fatal(err)
		}
		if err := all.Process(rc); err != nil {
			t.Fatal(err)
		}
	}
	merged, whole := Merge(r1.Result().Aggregates, r2.Result().Aggregates), all.Result().Aggregates
	for i := range whole {
		if !proto.Equal(merged[i], whole[i]) {
			t.Errorf("Merge of two runners [%d] = %v, want %v", i, merged[i], whole[i])
		}
	}
}

// One Program, many Runners at once (run with -race).
func TestConcurrentRunners(t *testing.T) {
	p := mustCompile(t, withAgg(spec(filter("int(json.n) % 2 == 0")), "json.k", "json.n", sum))
	var wg sync.WaitGroup
	results := make([]Result, 8)
	for w := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := p.NewRunner()
			for i := range 100 {
				if err := r.Process(rec(int64(i), "", fmt.Sprintf(`{"k":"k%d","n":%d}`, i%2+w%2, i))); err != nil {
					return
				}
			}
			results[w] = r.Result()
		}()
	}
	wg.Wait()
	for w, res := range results {
		// Even n only: 0+2+...+98 = 2450 over 50 records.
		if len(res.Aggregates) != 1 || res.Aggregates[0].GetSum() != 2450 || res.Aggregates[0].GetCount() != 50 {
			t.Errorf("runner %d aggregates = %v, want one key with count 50, sum 2450", w, res.Aggregates)
		}
	}
}

// The json variable must behave as a CEL map, list or scalar whatever is
// decoded lazily.
func TestJSONVariable(t *testing.T) {
	obj := `{"a": 1, "b": "x\u00e9", "n": {"c": [1, 2.5, {"d": null}]}, "t": true, "a2": -0.5e1, "dup": 1, "dup": 2}`
	tests := []struct {
		value string
		expr  string // must give true
	}{
		{obj, "json.a == 1 && json.a > 0.5 && json.a2 == -5.0"},
		{obj, "json.b == 'xé' && json.b.size() == 2"},
		{obj, "json.t && !has(json.missing) && has(json.n.c)"},
		{obj, "json.n.c[1] == 2.5 && json.n.c[2].d == null && size(json.n.c) == 3"},
		{obj, "json.dup == 2"},
		{obj, "size(json) == 6"},
		{obj, "'a' in json && !('z' in json)"},
		{obj, "json.exists(k, k == 't') && json.all(k, k.size() <= 3)"},
		{obj, "json.?missing.orValue('none') == 'none' && json.?a.orValue(0) == 1"},
		{obj, `json.encode(json.n) == '{"c":[1,2.5,{"d":null}]}'`},
		{`{"a": 1, "b": [true]}`, `json == {"b": [true], "a": 1}`},
		{`{"a": 1, "b": [true]}`, `{"a": 1, "b": [true]} == json`},
		{`{"a": 1}`, `json != {"a": 2}`},
		{`{}`, "size(json) == 0 && json == {}"},
		{`[1, "two", {"x": 3}]`, "json[0] == 1 && json[1] == 'two' && json[2].x == 3 && size(json) == 3"},
		{`"text"`, "json == 'text'"},
		{` 42 `, "json == 42 && json > 41.5"},
		{`null`, "json == null"},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			r := mustCompile(t, spec(filter(tc.expr))).NewRunner()
			if err := r.Process(rec(0, "k", tc.value)); err != nil {
				t.Fatalf("Process(%s) error: %v", tc.value, err)
			}
			if got := r.Result().Out; got != 1 {
				t.Errorf("%s on %s dropped the record, want it kept", tc.expr, tc.value)
			}
		})
	}
}
