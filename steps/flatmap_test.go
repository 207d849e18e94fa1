package steps

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

func flatMap(src string) *sluicev1.Step {
	return &sluicev1.Step{Kind: &sluicev1.Step_FlatMap{FlatMap: src}}
}

func TestFlatMapCompileErrors(t *testing.T) {
	tests := []struct {
		name      string
		spec      *sluicev1.JobSpec
		wantField string
		wantMsg   string
	}{
		{"not a list", spec(filter("true"), mapKV("", "value"), flatMap("value + 'x'")),
			"steps[2].flatMap", "expression gives string, want a list"},
		{"a map is not a list", spec(flatMap("{'a': 1}")), "steps[0].flatMap", "want a list"},
		{"empty", spec(flatMap(" ")), "steps[0].flatMap", "empty expression"},
		{"undeclared", spec(flatMap("jsn.items")), "steps[0].flatMap", "undeclared reference to 'jsn'"},
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
}

func TestFlatMap(t *testing.T) {
	order := `{"order":"o1","items":[{"sku":"a","qty":2},{"sku":"b","qty":1}]}`
	tests := []struct {
		name  string
		steps []*sluicev1.Step
		recs  []*record.Record
		want  string // kv of the output
		out   int64
	}{
		{"explode a JSON array, values as JSON",
			[]*sluicev1.Step{flatMap("json.items")},
			[]*record.Record{rec(0, "k", order)},
			`k={"qty":2,"sku":"a"} | k={"qty":1,"sku":"b"}`, 2},
		{"key and value from maps; later steps see each element's json",
			[]*sluicev1.Step{
				flatMap(`json.items.map(i, {"key": i.sku, "value": i})`),
				filter("json.qty > 1"),
				mapKV("", "string(int(json.qty) * 10)")},
			[]*record.Record{rec(0, "k", order)},
			`a=20`, 1},
		{"only a key keeps the value; only a value keeps the key",
			[]*sluicev1.Step{flatMap(`[{"key": "x"}, {"value": "y"}]`)},
			[]*record.Record{rec(0, "k", "v")},
			`x=v | k=y`, 2},
		{"other maps are values; scalars are formatted",
			[]*sluicev1.Step{flatMap(`[{"key": 1, "other": 2}, 3, 1.5, true, "s", b"b"]`)},
			[]*record.Record{rec(0, "k", "v")},
			`k={"key":1,"other":2} | k=3 | k=1.5 | k=true | k=s | k=b`, 6},
		{"empty list drops the record; order kept across records",
			[]*sluicev1.Step{flatMap(`value == "" ? [] : value.split(",")`)},
			[]*record.Record{rec(0, "k", "a,b"), rec(1, "k", ""), rec(2, "j", "c")},
			`k=a | k=b | j=c`, 3},
		{"two flatMaps multiply",
			[]*sluicev1.Step{flatMap(`value.split(",")`), flatMap(`[value + "1", value + "2"]`)},
			[]*record.Record{rec(0, "k", "a,b")},
			`k=a1 | k=a2 | k=b1 | k=b2`, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, spec(tt.steps...), tt.recs...)
			if got := kv(res.Records); got != tt.want {
				t.Fatalf("output = %s\nwant     %s", got, tt.want)
			}
			if res.Out != tt.out || res.In != int64(len(tt.recs)) {
				t.Fatalf("in %d out %d, want in %d out %d", res.In, res.Out, len(tt.recs), tt.out)
			}
		})
	}
}

func TestFlatMapAggregate(t *testing.T) {
	s := withAgg(spec(flatMap("json.items")), "json.sku", "json.qty", count, sum)
	res := run(t, s,
		rec(0, "", `{"items":[{"sku":"a","qty":2},{"sku":"b","qty":1}]}`),
		rec(1, "", `{"items":[{"sku":"a","qty":5}]}`))
	if len(res.Aggregates) != 2 {
		t.Fatalf("aggregates = %v", res.Aggregates)
	}
	a, b := res.Aggregates[0], res.Aggregates[1]
	if a.Key != "a" || a.Count != 2 || a.Sum != 7 || b.Key != "b" || b.Count != 1 || b.Sum != 1 {
		t.Fatalf("aggregates = %v", res.Aggregates)
	}
}

// A record whose second element fails emits nothing, whatever the first
// did: it is a failed record, not half of one.
func TestFlatMapRecordIsAllOrNothing(t *testing.T) {
	recs := []*record.Record{
		rec(0, "k", `{"items":[{"qty":1},{"qty":2}]}`),
		rec(1, "k", `{"items":[{"qty":3},{"nope":0}]}`),
	}
	for _, agg := range []bool{false, true} {
		s := spec(flatMap("json.items"), mapKV("", "string(int(json.qty))"))
		if agg {
			s = withAgg(s, "'all'", "double(value)", count, sum)
		}
		s.OnRecordError = skip
		res := run(t, s, recs...)
		if res.Failed != 1 || res.Out != 2 {
			t.Fatalf("aggregate %v: failed %d out %d, want 1 and 2", agg, res.Failed, res.Out)
		}
		if !agg && kv(res.Records) != "k=1 | k=2" {
			t.Fatalf("output = %s", kv(res.Records))
		}
		if agg && (res.Aggregates[0].Count != 2 || res.Aggregates[0].Sum != 3) {
			t.Fatalf("aggregates = %v", res.Aggregates)
		}
		if !strings.Contains(res.FirstError, "offset 1: steps[1].map.value") {
			t.Fatalf("first error = %q", res.FirstError)
		}
	}
}

func TestFlatMapRecordErrors(t *testing.T) {
	tests := []struct {
		name, expr, value, want string
	}{
		{"not a list at run time", "json.items", `{"items": 3}`, "steps[0].flatMap: flatMap gave double, want a list"},
		{"fan-out bound", "lists.range(100001)", `{}`, "steps[0].flatMap: the record fans out to more than 100000 records (this flatMap gave 100001 elements)"},
		{"element not convertible", "['a', type(1)]", `{}`, "steps[0].flatMap: element 1: expression gave type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustCompile(t, spec(flatMap(tt.expr))).NewRunner()
			err := r.Process(rec(7, "k", tt.value))
			if tt.want == "" {
				return // only: no panic
			}
			var re *RecordError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Process() error = %v, want a RecordError with %q", err, tt.want)
			}
		})
	}
}

// The fan-out is bounded over all the flatMaps of a record.
func TestFlatMapNestedBound(t *testing.T) {
	r := mustCompile(t, spec(flatMap("lists.range(400)"), flatMap("lists.range(400)"))).NewRunner()
	err := r.Process(rec(1, "k", "v"))
	if err == nil || !strings.Contains(err.Error(), "steps[1].flatMap: the record fans out to more than 100000 records") {
		t.Fatalf("Process() error = %v", err)
	}
	if res := r.Result(); len(res.Records) != 0 || res.Out != 0 {
		t.Fatalf("kept %d records of a failed record", len(res.Records))
	}
}

// The output limit holds inside one record's fan-out.
func TestFlatMapOutputLimit(t *testing.T) {
	r := mustCompile(t, spec(flatMap("lists.range(50000).map(i, 'xxxxxxxxxxxxxxxxxxxx')"))).NewRunner()
	r.SetOutputLimit(OutputLimit{Bytes: 100_000, Field: "limits.max_task_output_bytes"})
	err := r.Process(rec(1, "k", "v"))
	var le *OutputLimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "limits.max_task_output_bytes 100000") {
		t.Fatalf("Process() error = %v, want an OutputLimitError", err)
	}
}

// A flatMap's pending aggregate inputs are not counted twice: the state
// kept is the same size as without it.
func TestFlatMapAggregateBytes(t *testing.T) {
	plain := mustCompile(t, withAgg(spec(), "value", "")).NewRunner()
	fanned := mustCompile(t, withAgg(spec(flatMap("[value]")), "value", "")).NewRunner()
	for i := range 50 {
		r := rec(int64(i), "k", fmt.Sprintf("v%d", i%7))
		if err := plain.Process(r); err != nil {
			t.Fatal(err)
		}
		if err := fanned.Process(r); err != nil {
			t.Fatal(err)
		}
	}
	if p, f := plain.OutputBytes(), fanned.OutputBytes(); p != f || p == 0 {
		t.Fatalf("OutputBytes: %d without flatMap, %d with", p, f)
	}
}
