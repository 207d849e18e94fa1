package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// keyRecs returns one record per key, in order, with the given value.
func keyRecs(value string, keys ...string) []*record.Record {
	recs := make([]*record.Record, len(keys))
	for i, k := range keys {
		recs[i] = &record.Record{Topic: "clicks", Partition: 3, Offset: int64(i), Key: []byte(k), Value: []byte(value)}
	}
	return recs
}

// exactKeys returns the exact key and count of each aggregate, and fails the
// test unless the aggregates marshal and every key field is valid UTF-8.
func exactKeys(t *testing.T, aggs []*sluicev1.KeyAggregate) map[string]int64 {
	t.Helper()
	if _, err := proto.Marshal(&sluicev1.TaskResult{Aggregates: aggs}); err != nil {
		t.Fatalf("proto.Marshal(aggregates %q) error: %v", aggs, err)
	}
	got := make(map[string]int64)
	for _, ka := range aggs {
		if !utf8.ValidString(ka.GetKey()) {
			t.Errorf("key %q is not valid UTF-8", ka.GetKey())
		}
		if b := ka.GetKeyBytes(); b != nil && utf8.Valid(b) {
			t.Errorf("key %q has key_bytes %q although it is valid UTF-8", ka.GetKey(), b)
		}
		if _, dup := got[ExactKey(ka)]; dup {
			t.Errorf("key %q appears twice", ExactKey(ka))
		}
		got[ExactKey(ka)] = ka.GetCount()
	}
	return got
}

// A record key that is not valid UTF-8 once made the worker's TaskResult
// unmarshallable ("string field contains invalid UTF-8"), which ended its
// stream. Keys are now readable text plus their exact bytes, and the escaped
// text of one key never merges with a key that reads the same.
func TestAggregateKeysNotUTF8(t *testing.T) {
	keys := []string{"\xff\xfe", "\xff", `\xff`, "é", "\xff", `\xff`, "\xff\xfe", "\xff"}
	want := map[string]int64{"\xff\xfe": 2, "\xff": 3, `\xff`: 2, "é": 1}
	wantText := map[string]string{"\xff\xfe": `\xff\xfe`, "\xff": `\xff`, `\xff`: `\xff`, "é": "é"}
	tests := []struct {
		name string
		spec *sluicev1.JobSpec
	}{
		{"record key", withAgg(spec(), "", "")},
		{"key variable", withAgg(spec(), "key", "")},
		{"key_bytes", withAgg(spec(), "key_bytes", "")},
		{"mapped key", withAgg(spec(mapKV("key_bytes", "")), "", "")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := mustCompile(t, tc.spec)
			whole, even, odd := p.NewRunner(), p.NewRunner(), p.NewRunner()
			for i, rc := range keyRecs("v", keys...) {
				part := even
				if i%2 == 1 {
					part = odd
				}
				for _, r := range []*Runner{whole, part} {
					if err := r.Process(rc); err != nil {
						t.Fatalf("Process(key %q) error: %v", rc.Key, err)
					}
				}
			}
			res := whole.Result()
			got := exactKeys(t, res.Aggregates)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Result() counts by exact key = %v, want %v", got, want)
			}
			for _, ka := range res.Aggregates {
				if w := wantText[ExactKey(ka)]; ka.GetKey() != w {
					t.Errorf("key of %q = %q, want %q", ExactKey(ka), ka.GetKey(), w)
				}
			}
			// Sorted by exact bytes.
			for i := 1; i < len(res.Aggregates); i++ {
				if ExactKey(res.Aggregates[i-1]) >= ExactKey(res.Aggregates[i]) {
					t.Errorf("aggregates not sorted by exact key: %q before %q", ExactKey(res.Aggregates[i-1]), ExactKey(res.Aggregates[i]))
				}
			}
			merged := Merge(even.Result().Aggregates, odd.Result().Aggregates)
			if got := exactKeys(t, merged); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Merge() counts by exact key = %v, want %v", got, want)
			}
			for i := range merged {
				if !proto.Equal(merged[i], res.Aggregates[i]) {
					t.Errorf("Merge()[%d] = %v, want %v", i, merged[i], res.Aggregates[i])
				}
			}
		})
	}
}

// Merge tells keys apart by their exact bytes, whatever the parts look like:
// totals stored before key_bytes existed, and aggregates built by hand.
func TestMergeExactKeys(t *testing.T) {
	got := Merge(
		[]*sluicev1.KeyAggregate{
			{Key: `\xff`, KeyBytes: []byte("\xff"), Count: 1, Sum: 1, Min: 1, Max: 1},
			{Key: `\xff`, Count: 10, Sum: 10, Min: 1, Max: 1},
		},
		[]*sluicev1.KeyAggregate{
			{Key: "anything", KeyBytes: []byte("\xff"), Count: 2, Sum: 4, Min: 2, Max: 2},
			{Key: "a", KeyBytes: []byte("a"), Count: 1, Sum: 1, Min: 1, Max: 1}, // key_bytes of a valid key
			{Key: "a", Count: 1, Sum: 3, Min: 3, Max: 3},
			{Key: "\xfe", Count: 1, Sum: 0, Min: 0, Max: 0}, // not from a protobuf message
		},
	)
	// Sorted by exact bytes: '\\' < 'a' < 0xfe.
	want := []*sluicev1.KeyAggregate{
		{Key: `\xff`, Count: 10, Sum: 10, Min: 1, Max: 1, Avg: 1},
		{Key: "a", Count: 2, Sum: 4, Min: 1, Max: 3, Avg: 2},
		{Key: `\xfe`, KeyBytes: []byte("\xfe"), Count: 1},
		{Key: `\xff`, KeyBytes: []byte("\xff"), Count: 3, Sum: 5, Min: 1, Max: 2, Avg: 5.0 / 3},
	}
	if len(got) != len(want) {
		t.Fatalf("Merge() = %v, want %v", got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("Merge()[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	exactKeys(t, got)
}

// CEL errors may quote record content ("no such key: <the key>"): the error
// and FirstError stay valid UTF-8 and bounded, and marshal.
func TestRecordErrorTextIsSafe(t *testing.T) {
	long := strings.Repeat("\xff", 5000)
	for _, policy := range []sluicev1.RecordErrorPolicy{fail, skip} {
		t.Run(policy.String(), func(t *testing.T) {
			s := spec(filter("headers[key] == 'x'"))
			s.OnRecordError = policy
			r := mustCompile(t, s).NewRunner()
			err := r.Process(keyRecs("v", long)[0])
			if policy == fail {
				var re *RecordError
				if !errors.As(err, &re) {
					t.Fatalf("Process() error = %v, want *RecordError", err)
				}
				checkSafeText(t, "RecordError.Error()", err.Error())
				if !strings.HasPrefix(err.Error(), `record clicks/3 offset 0: steps[0].filter: no such key: \xff\xff`) {
					t.Errorf("Error() = %.80q..., want the record, the field and the escaped key", err.Error())
				}
			}
			first := r.Result().FirstError
			checkSafeText(t, "FirstError", first)
			if _, err := proto.Marshal(&sluicev1.TaskResult{Error: first}); err != nil {
				t.Errorf("proto.Marshal(TaskResult with FirstError) error: %v", err)
			}
		})
	}
}

func checkSafeText(t *testing.T, what, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Errorf("%s = %.80q... is not valid UTF-8", what, s)
	}
	if len(s) > MaxErrorBytes {
		t.Errorf("%s is %d bytes long, want at most %d", what, len(s), MaxErrorBytes)
	}
	if !strings.HasSuffix(s, "…") {
		t.Errorf("%s = ...%q, want it cut with …", what, s[max(len(s)-20, 0):])
	}
}

func TestSafeText(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 0, "plain"},
		{"plain", 5, "plain"},
		{"\xff\xfe", 0, `\xff\xfe`},
		{`\xff`, 0, `\xff`},
		{"a\xffé\xc3", 0, `a\xffé\xc3`},
		{"abcdef", 4, "a…"},
		{"ééé", 6, "ééé"},
		{"éééé", 6, "é…"}, // é is 2 bytes, … 3: cut at a character boundary
		{"éééé", 7, "éé…"},
		{"\xff\xff\xff", 9, `\xff…`}, // not inside an escape
		{"\xff\xff\xff", 11, `\xff\xff…`},
		{"abc", 2, "…"},
	}
	for _, tc := range tests {
		if got := SafeText(tc.in, tc.max); got != tc.want {
			t.Errorf("SafeText(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
	if got := ErrorText(errors.New("x\xffy")); got != `x\xffy` {
		t.Errorf("ErrorText() = %q, want %q", got, `x\xffy`)
	}
	if got := ErrorText(nil); got != "" {
		t.Errorf("ErrorText(nil) = %q, want empty", got)
	}
}

// The filter of issue 7 spun both workers at 100% CPU forever; it is now
// refused at compile time, as is any expression that exceeds the limit for one
// record whatever the record.
func TestCompileRefusesRunawayExpressions(t *testing.T) {
	tests := []struct {
		name, field string
		spec        *sluicev1.JobSpec
	}{
		{"issue 7", "steps[0].filter", spec(filter("lists.range(100000).all(i, lists.range(100000).all(j, j >= 0))"))},
		{"nested ranges under the limit each", "steps[1].filter", spec(filter("true"), filter("lists.range(3000).all(i, lists.range(3000).all(j, j >= 0))"))},
		{"map", "steps[0].map.key", spec(mapKV("lists.range(1000).map(i, lists.range(1000).map(j, i * j)).size()", ""))},
		{"aggregate value", "aggregate.value", withAgg(spec(), "", "lists.range(500000).filter(i, i % 7 == 0).size()", sum)},
		{"kafka sink header", `sink.kafka.headers["h"]`, kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: map[string]string{
			"h": "lists.range(2000).map(i, lists.range(2000).filter(j, j > i).size()).size() > 0 ? 'a' : 'b'"}})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.spec)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Compile() error = %v, want *FieldError", err)
			}
			const want = "even on an empty record, above the limit of 1000000 for one record"
			if fe.Field != tc.field || !strings.Contains(err.Error(), want) {
				t.Errorf("Compile() error = %q, want one on %s containing %q", err, tc.field, want)
			}
		})
	}
}

// Ordinary expressions pass the static estimate, loops over the JSON value
// included, however nested: the run-time limit bounds those.
func TestCompileAcceptsOrdinaryCosts(t *testing.T) {
	for _, src := range []string{
		"json.ms > 100",
		"json.items.all(x, x.price > 0.0 && x.name.startsWith('a'))",
		"json.items.map(x, x.qty).exists(q, q > 3)",
		"json.items.filter(x, x.tags.exists(t, t == 'sale')).size() > 0",
		"json.a.exists(x, json.b.exists(y, x == y))",
		"json.tags.distinct().size() == json.tags.size()",
		"sets.intersects(json.a, json.b)",
		"headers.exists(k, k.startsWith('x-'))",
		"headers['x-id'] + '-' + key != ''",
		"value.split(',').size() > 3",
		"value.matches('^a.*b$') || regex.extract(value, 'id=([0-9]+)').hasValue()",
		"json.parse(value).orValue([]).all(x, x > 1)",
		"json.encode(json.a) == json.encode(json.b)",
		"lists.range(int(json.n)).exists(i, i > 10)",
		"lists.range(100).all(i, lists.range(100).all(j, i + j >= 0))",
		"cel.bind(v, value, v.startsWith('a') || v.endsWith('z'))",
		"[1, 2, 3].map(i, i * json.n).size() == 3",
	} {
		if _, err := Compile(spec(filter(src))); err != nil {
			t.Errorf("Compile(%s) error: %v", src, err)
		}
	}
}

// jsonList returns a JSON object with a list of n zeros under "items".
func jsonList(n int) string {
	return `{"items":[` + strings.TrimSuffix(strings.Repeat("0,", n), ",") + `]}`
}

// A loop over a large JSON list passes the estimate but stops at the run-time
// limit, failing that record and no other.
func TestRuntimeCostLimit(t *testing.T) {
	recs := []*record.Record{
		{Topic: "clicks", Partition: 3, Offset: 41, Value: []byte(jsonList(10))},
		{Topic: "clicks", Partition: 3, Offset: 42, Value: []byte(jsonList(400_000))},
		{Topic: "clicks", Partition: 3, Offset: 43, Value: []byte(jsonList(1000))},
	}
	const wantErr = "record clicks/3 offset 42: steps[1].filter: evaluation stopped: it exceeded the cost limit of 1000000 for one record"
	for _, policy := range []sluicev1.RecordErrorPolicy{fail, skip} {
		t.Run(policy.String(), func(t *testing.T) {
			s := spec(filter("true"), filter("json.items.all(x, x >= 0)"))
			s.OnRecordError = policy
			r := mustCompile(t, s).NewRunner()
			var errs []string
			for _, rc := range recs {
				err := r.Process(rc)
				if err == nil {
					errs = append(errs, "")
					continue
				}
				var re *RecordError
				if !errors.As(err, &re) {
					t.Fatalf("Process(offset %d) error = %T %v, want *RecordError", rc.Offset, err, err)
				}
				errs = append(errs, err.Error())
			}
			wantErrs := []string{"", wantErr, ""}
			if policy == skip {
				wantErrs[1] = ""
			}
			for i := range errs {
				if !strings.HasPrefix(errs[i], wantErrs[i]) || (wantErrs[i] == "") != (errs[i] == "") {
					t.Errorf("Process(offset %d) error = %q, want %q", recs[i].Offset, errs[i], wantErrs[i])
				}
			}
			res := r.Result()
			if res.In != 3 || res.Out != 2 || res.Failed != 1 || !strings.HasPrefix(res.FirstError, wantErr) {
				t.Errorf("Result() = %d in, %d out, %d failed, first error %q; want 3, 2, 1, %q", res.In, res.Out, res.Failed, res.FirstError, wantErr)
			}
		})
	}
}

// A runner made with a context stops evaluating soon after it is done: the
// record is neither failed nor skipped, and the error wraps the cause.
func TestRunnerContextInterrupts(t *testing.T) {
	for _, policy := range []sluicev1.RecordErrorPolicy{fail, skip} {
		t.Run(policy.String(), func(t *testing.T) {
			s := spec(filter("json.items.all(x, x >= 0)"))
			s.OnRecordError = policy
			p := mustCompile(t, s)
			ctx, cancel := context.WithCancel(context.Background())
			r := p.NewRunnerContext(ctx)
			ok := &record.Record{Topic: "clicks", Partition: 3, Offset: 1, Value: []byte(jsonList(1000))}
			if err := r.Process(ok); err != nil {
				t.Fatalf("Process() before cancel error: %v", err)
			}
			cancel()
			// 400,000 elements would exceed the cost limit: the loop stops
			// at its first interrupt check instead.
			big := &record.Record{Topic: "clicks", Partition: 3, Offset: 2, Value: []byte(jsonList(400_000))}
			err := r.Process(big)
			var re *RecordError
			if !errors.Is(err, context.Canceled) || errors.As(err, &re) {
				t.Fatalf("Process() after cancel error = %v, want context.Canceled and no *RecordError", err)
			}
			if want := "record clicks/3 offset 2: steps[0].filter: evaluation interrupted: context canceled"; err.Error() != want {
				t.Errorf("Process() error = %q, want %q", err, want)
			}
			if res := r.Result(); res.In != 2 || res.Out != 1 || res.Failed != 0 || res.FirstError != "" {
				t.Errorf("Result() = %d in, %d out, %d failed, first error %q; want 2, 1, 0, none", res.In, res.Out, res.Failed, res.FirstError)
			}
		})
	}
	// NewRunner and a nil context: no interruption, the cost limit applies.
	for _, r := range []*Runner{mustCompile(t, spec(filter("json.items.all(x, x >= 0)"))).NewRunner(), mustCompile(t, spec(filter("json.items.all(x, x >= 0)"))).NewRunnerContext(nil)} { //nolint:staticcheck // nil is documented
		err := r.Process(&record.Record{Topic: "t", Value: []byte(jsonList(400_000))})
		if err == nil || !strings.Contains(err.Error(), "cost limit") {
			t.Errorf("Process() error = %v, want the cost limit", err)
		}
	}
}

// JSON numbers are doubles: errors say what to write instead.
func TestErrorHints(t *testing.T) {
	tests := []struct {
		name, expr, value, want string
	}{
		{"modulo", "json.x % 3 == 0", `{"x": 4}`, "steps[0].filter: no such overload: _%_ (JSON numbers are doubles: write int(json.x) % 3)"},
		{"modulo on the right", "10 % json.x == 0", `{"x": 4}`, "(JSON numbers are doubles: write 10 % int(json.x))"},
		{"modulo of two fields", "json.a.b % json.c == 0", `{"a": {"b": 4}, "c": 2}`, "(JSON numbers are doubles: write int(json.a.b) % int(json.c))"},
		{"addition", "json.x + 1 > 2", `{"x": 4}`, "no such overload (JSON numbers are doubles: write json.x + 1.0 or int(json.x) + 1)"},
		{"subtraction of an int expression", "json.x - size(key) > 2", `{"x": 4}`, "(JSON numbers are doubles: write json.x - double(size(key)) or int(json.x) - size(key))"},
		{"product inside a sum", "1 + json.x * 2 > 2", `{"x": 4}`, "(JSON numbers are doubles: write json.x * 2.0 or int(json.x) * 2)"},
		{"int argument", "lists.range(json.n).size() > 0", `{"n": 4}`, "no such overload: lists.range(double) (JSON numbers are doubles: if lists.range wants an int here, write int(json.n))"},
		{"member int argument", "value.substring(json.n) == ''", `{"n": 1}`, "(JSON numbers are doubles: if substring wants an int here, write int(json.n))"},
		{"string field: no hint", "json.x + 1 > 2", `{"x": "4"}`, "steps[0].filter: no such overload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustCompile(t, spec(filter(tc.expr))).NewRunner()
			err := r.Process(rec(0, "k", tc.value))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Process() error = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(tc.name, "no hint") && strings.Contains(err.Error(), "doubles") {
				t.Errorf("Process() error = %q, want no hint about doubles", err)
			}
		})
	}
}

func TestCompileErrorHints(t *testing.T) {
	tests := []struct{ expr, want string }{
		{"double(size(key)) % 3 == 0.0", "% is defined on ints, not doubles: convert with int(...), e.g. int(x) % 3"},
		{"double(size(key)) + 1 > 0.0", "CEL does not mix int and double in arithmetic"},
		{"size(key) * 1.5 > 0.0", "CEL does not mix int and double in arithmetic"},
	}
	for _, tc := range tests {
		_, err := Compile(spec(filter(tc.expr)))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "found no matching overload") {
			t.Errorf("Compile(%s) error = %v, want CEL's and %q", tc.expr, err, tc.want)
		}
	}
}

// cel-go's distinct and sets functions compare every pair in one call that
// nothing can interrupt, and the cost limit is only checked after it: above
// MaxPairs they return at once.
func TestPairGuards(t *testing.T) {
	list := func(n int) []any {
		l := make([]any, n)
		for i := range l {
			l[i] = float64(i % 7)
		}
		return l
	}
	small, big := list(20), list(5000)
	tests := []struct {
		expr string
		a, b []any
		want string // the error, "" for true
	}{
		{"a.distinct().size() == 7", small, nil, ""},
		{"a.distinct().size() == 7", big, nil, "distinct of 5000 and 5000 elements would compare more than 10000000 pairs: use smaller lists"},
		{"sets.contains(a, [1, 2])", big, nil, ""},
		{"sets.contains(a, b)", big, big, "sets.contains of 5000 and 5000 elements would compare more than 10000000 pairs"},
		{"sets.equivalent(a, b)", small, []any{0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, ""},
		{"!sets.intersects(a, b)", big, big, "sets.intersects of 5000 and 5000 elements"},
	}
	e, err := environment()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		e, err := e.Extend(cel.Variable("a", cel.DynType), cel.Variable("b", cel.DynType))
		if err != nil {
			t.Fatal(err)
		}
		ast, iss := e.Compile(tc.expr)
		if iss.Err() != nil {
			t.Fatal(iss.Err())
		}
		prg, err := e.Program(ast) // no cost limit: the guard alone
		if err != nil {
			t.Fatal(err)
		}
		v, _, err := prg.Eval(map[string]any{"a": tc.a, "b": tc.b})
		switch {
		case tc.want == "" && (err != nil || v != types.True):
			t.Errorf("%s = %v, %v; want true", tc.expr, v, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s error = %v, want it to contain %q", tc.expr, err, tc.want)
		}
	}
	// In a job, the record fails on the cost limit, at once.
	r := mustCompile(t, spec(filter("json.a.distinct().size() > 1"))).NewRunner()
	v, _ := json.Marshal(map[string]any{"a": list(100_000)})
	if err := r.Process(rec(0, "k", string(v))); err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Errorf("Process(distinct of 100000 elements) error = %v, want the cost limit", err)
	}
}

// lists.range of a number from the record passes the estimate; the run-time
// limit bounds it.
func TestRangeOfRecordNumber(t *testing.T) {
	r := mustCompile(t, spec(filter("lists.range(int(json.n)).all(i, i >= 0)"))).NewRunner()
	if err := r.Process(rec(0, "k", `{"n": 100}`)); err != nil {
		t.Errorf("Process(n=100) error: %v", err)
	}
	if err := r.Process(rec(1, "k", `{"n": 900000}`)); err == nil || !strings.Contains(err.Error(), "offset 1: steps[0].filter: evaluation stopped: it exceeded the cost limit of 1000000") {
		t.Errorf("Process(n=900000) error = %v, want the cost limit", err)
	}
}
