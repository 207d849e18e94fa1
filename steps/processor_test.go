package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

func processor(name string, config map[string]any) *sluicev1.Step {
	ps := &sluicev1.ProcessorStep{Name: name}
	if config != nil {
		s, err := structpb.NewStruct(config)
		if err != nil {
			panic(err)
		}
		ps.Config = s
	}
	return &sluicev1.Step{Kind: &sluicev1.Step_Processor{Processor: ps}}
}

// fixed is a factory that ignores its config.
func fixed(fn Processor) ProcessorFactory {
	return func(map[string]any) (Processor, error) { return fn, nil }
}

// split returns one record per comma-separated part of the value.
func split(_ context.Context, rec record.Record) ([]record.Record, error) {
	var out []record.Record
	for _, part := range bytes.Split(rec.Value, []byte(",")) {
		if len(part) > 0 {
			out = append(out, record.Record{Key: rec.Key, Value: part})
		}
	}
	return out, nil
}

func compileWith(t *testing.T, s *sluicev1.JobSpec, procs map[string]ProcessorFactory) *Program {
	t.Helper()
	p, err := Compile(s, WithProcessors(procs))
	if err != nil {
		t.Fatalf("Compile() error: %v", err)
	}
	return p
}

func runWith(t *testing.T, s *sluicev1.JobSpec, procs map[string]ProcessorFactory, recs ...*record.Record) Result {
	t.Helper()
	r := compileWith(t, s, procs).NewRunner()
	for _, rc := range recs {
		if err := r.Process(rc); err != nil {
			t.Fatalf("Process(offset %d) error: %v", rc.Offset, err)
		}
	}
	return r.Result()
}

func TestProcessorCompileErrors(t *testing.T) {
	big := map[string]any{"blob": strings.Repeat("x", 64<<10)}
	procs := map[string]ProcessorFactory{
		"split": fixed(split),
		"needs-table": func(config map[string]any) (Processor, error) {
			if _, ok := config["table"].(string); !ok {
				return nil, errors.New(`config "table" (a string) is required`)
			}
			return split, nil
		},
		"panics": func(map[string]any) (Processor, error) { panic("no database") },
		"nil":    func(map[string]any) (Processor, error) { return nil, nil },
	}
	tests := []struct {
		name      string
		spec      *sluicev1.JobSpec
		resolve   bool
		wantField string
		wantMsg   string
	}{
		{"empty name", spec(filter("true"), processor("", nil)), false,
			"steps[1].processor.name", `processor name "" must be a letter, then up to 62 letters, digits, '.', '_' or '-'`},
		{"name with a space", spec(processor("en rich", nil)), false, "steps[0].processor.name", `processor name "en rich"`},
		{"name starting with a digit", spec(processor("1x", nil)), false, "steps[0].processor.name", `processor name "1x"`},
		{"name too long", spec(processor("a"+strings.Repeat("b", 63), nil)), false, "steps[0].processor.name", "up to 62"},
		{"config too big", spec(processor("split", big)), false,
			"steps[0].processor.config", "bytes encoded: at most 65536"},
		{"factory error", spec(mapKV("", "value"), processor("needs-table", map[string]any{"tabel": "x"})), true,
			"steps[1].processor.config", `processor "needs-table": config "table" (a string) is required`},
		{"factory panic", spec(processor("panics", nil)), true,
			"steps[0].processor.config", `processor "panics": factory panicked: no database at `},
		{"factory returns nothing", spec(processor("nil", nil)), true,
			"steps[0].processor.config", `processor "nil": factory returned no processor and no error`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []CompileOption
			if tt.resolve {
				opts = append(opts, WithProcessors(procs))
			}
			_, err := Compile(tt.spec, opts...)
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

// The coordinator compiles without the processors: the steps are checked,
// and the names are the job's placement constraint.
func TestProcessorCompileWithoutProcessors(t *testing.T) {
	if _, err := Compile(spec(processor("enrich", map[string]any{"x": 1.0}), filter("value != ''"))); err != nil {
		t.Fatalf("Compile() error = %v", err)
	}
}

// A worker without the processor cannot compile the job, and the error says
// it is the worker's lack, not the job's fault.
func TestProcessorMissingOnWorker(t *testing.T) {
	_, err := Compile(spec(processor("enrich", nil)), WithProcessors(map[string]ProcessorFactory{"split": fixed(split)}))
	var me *MissingProcessorError
	var fe *FieldError
	if !errors.As(err, &me) || errors.As(err, &fe) {
		t.Fatalf("Compile() error = %v, want only a *MissingProcessorError", err)
	}
	if want := `steps[0].processor.name: processor "enrich" is not registered on this worker`; err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
}

func TestProcessor(t *testing.T) {
	upper := func(_ context.Context, rec record.Record) ([]record.Record, error) {
		rec.Value = bytes.ToUpper(rec.Value)
		return []record.Record{rec}, nil
	}
	drop := func(context.Context, record.Record) ([]record.Record, error) { return nil, nil }
	procs := map[string]ProcessorFactory{"split": fixed(split), "upper": fixed(upper), "drop": fixed(drop)}
	tests := []struct {
		name  string
		steps []*sluicev1.Step
		recs  []*record.Record
		want  string
		out   int64
	}{
		{"one record in, one out", []*sluicev1.Step{processor("upper", nil)},
			[]*record.Record{rec(0, "k", "abc")}, "k=ABC", 1},
		{"none drops the record", []*sluicev1.Step{processor("drop", nil)},
			[]*record.Record{rec(0, "k", "abc"), rec(1, "k", "d")}, "", 0},
		{"fan out, order kept across records", []*sluicev1.Step{processor("split", nil)},
			[]*record.Record{rec(0, "k", "a,b,c"), rec(1, "j", ""), rec(2, "i", "d,e")},
			"k=a | k=b | k=c | i=d | i=e", 5},
		{"sees the steps before; the steps after see each record", []*sluicev1.Step{
			mapKV("'key-' + key", "value + ',z'"), processor("split", nil), filter("value != 'b'"),
			processor("upper", nil), mapKV("", "value + '!'")},
			[]*record.Record{rec(0, "k", "a,b")}, "key-k=A! | key-k=Z!", 2},
		{"two processors multiply", []*sluicev1.Step{processor("split", nil), mapKV("", "value + ',' + value"), processor("split", nil)},
			[]*record.Record{rec(0, "k", "a,b")}, "k=a | k=a | k=b | k=b", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runWith(t, spec(tt.steps...), procs, tt.recs...)
			if got := kv(res.Records); got != tt.want {
				t.Fatalf("output = %s\nwant     %s", got, tt.want)
			}
			if res.Out != tt.out || res.In != int64(len(tt.recs)) || res.Failed != 0 {
				t.Fatalf("in %d out %d failed %d, want in %d out %d failed 0", res.In, res.Out, res.Failed, len(tt.recs), tt.out)
			}
		})
	}
}

// The processor sees the source record's place, time and headers, and its
// config as a JSON object.
func TestProcessorSeesRecordAndConfig(t *testing.T) {
	var seen record.Record
	factory := func(config map[string]any) (Processor, error) {
		suffix, _ := config["suffix"].(string)
		times, _ := config["times"].(float64) // JSON numbers are doubles
		return func(_ context.Context, rec record.Record) ([]record.Record, error) {
			seen = rec
			return []record.Record{{Key: rec.Key, Value: append(bytes.Repeat(rec.Value, int(times)), suffix...)}}, nil
		}, nil
	}
	in := rec(9, "k", "ab")
	in.Timestamp = time.Unix(1700000000, 0)
	in.Headers = []record.Header{{Key: "trace", Value: []byte("t1")}, {Key: "empty"}}
	res := runWith(t, spec(processor("rep", map[string]any{"suffix": "!", "times": 2})),
		map[string]ProcessorFactory{"rep": factory}, in)
	if got := kv(res.Records); got != "k=abab!" {
		t.Fatalf("output = %s", got)
	}
	if seen.Topic != "clicks" || seen.Partition != 3 || seen.Offset != 9 || !seen.Timestamp.Equal(in.Timestamp) ||
		len(seen.Headers) != 2 || string(seen.Headers[0].Value) != "t1" || seen.Headers[1].Value != nil {
		t.Fatalf("processor saw %+v", seen)
	}
	if out := res.Records[0]; out.Topic != "clicks" || out.Partition != 3 || out.Offset != 9 {
		t.Fatalf("output record's source = %s/%d@%d, want clicks/3@9", out.Topic, out.Partition, out.Offset)
	}
}

// The record a processor gets is its own: the reader reuses its buffers,
// and a processor may keep what it was given.
func TestProcessorGetsCopies(t *testing.T) {
	var kept [][]byte
	keep := func(_ context.Context, rec record.Record) ([]record.Record, error) {
		kept = append(kept, rec.Value)
		return []record.Record{rec, rec}, nil
	}
	r := compileWith(t, spec(processor("keep", nil), mapKV("", "value + '-' + string(offset)")),
		map[string]ProcessorFactory{"keep": fixed(keep)}).NewRunner()
	buf := []byte("aa")
	for i := range 2 {
		copy(buf, fmt.Sprintf("%c%c", 'a'+i, 'a'+i))
		if err := r.Process(&record.Record{Topic: "t", Offset: int64(i), Key: []byte("k"), Value: buf}); err != nil {
			t.Fatal(err)
		}
	}
	if got := kv(r.Result().Records); got != "k=aa-0 | k=aa-0 | k=bb-1 | k=bb-1" {
		t.Fatalf("output = %s", got)
	}
	if string(kept[0]) != "aa" || string(kept[1]) != "bb" {
		t.Fatalf("kept %q, %q: the processor's record changed under it", kept[0], kept[1])
	}
}

func TestProcessorRecordErrors(t *testing.T) {
	procs := map[string]ProcessorFactory{
		"fails": fixed(func(_ context.Context, rec record.Record) ([]record.Record, error) {
			return nil, fmt.Errorf("no customer %q", rec.Key)
		}),
		"panics": fixed(func(_ context.Context, rec record.Record) ([]record.Record, error) {
			var m map[string]int
			m[string(rec.Key)]++ // assignment to entry in nil map
			return nil, nil
		}),
		"floods": fixed(func(context.Context, record.Record) ([]record.Record, error) {
			return make([]record.Record, MaxFlatMapElements+1), nil
		}),
	}
	tests := []struct {
		name, proc, want string
	}{
		{"error", "fails", `record clicks/3 offset 7: steps[1].processor: processor "fails": no customer "k"`},
		{"panic", "panics", `record clicks/3 offset 7: steps[1].processor: processor "panics" panicked: assignment to entry in nil map at github.com/sluice-stream/sluice/steps.TestProcessorRecordErrors.func`},
		{"fan-out bound", "floods", `steps[1].processor: the record fans out to more than 100000 records (processor "floods" returned 100001)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := compileWith(t, spec(filter("true"), processor(tt.proc, nil)), procs).NewRunner()
			err := r.Process(rec(7, "k", "v"))
			var re *RecordError
			if !errors.As(err, &re) || re.Field != "steps[1].processor" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Process() error = %v, want a RecordError with %q", err, tt.want)
			}
			if tt.proc == "panics" && !strings.Contains(err.Error(), "processor_test.go:") {
				t.Fatalf("Process() error = %v, want the file and line that panicked", err)
			}
			// Under the skip policy it is a failed record, and the next goes on.
			s := spec(filter("true"), processor(tt.proc, nil), mapKV("", "'x'"))
			s.OnRecordError = skip
			res := runWith(t, s, map[string]ProcessorFactory{tt.proc: procs[tt.proc]}, rec(1, "k", "v"), rec(2, "k", "v"))
			if res.Failed != 2 || res.Out != 0 || !strings.Contains(res.FirstError, "offset 1: steps[1].processor") {
				t.Fatalf("skip: failed %d out %d first error %q", res.Failed, res.Out, res.FirstError)
			}
		})
	}
}

// A panic with an error value names the processor, the error and where it
// panicked.
func TestProcessorPanicNamesProcessor(t *testing.T) {
	p := compileWith(t, spec(processor("geo", nil)), map[string]ProcessorFactory{
		"geo": fixed(func(context.Context, record.Record) ([]record.Record, error) {
			panic(errors.New("lookup table not loaded"))
		}),
	})
	err := p.NewRunner().Process(rec(1, "k", "v"))
	if err == nil || !strings.Contains(err.Error(), `steps[0].processor: processor "geo" panicked: lookup table not loaded at `) {
		t.Fatalf("Process() error = %v", err)
	}
}

// A record is all or nothing: a later step failing on the second record a
// processor returned drops the first too.
func TestProcessorRecordIsAllOrNothing(t *testing.T) {
	s := spec(processor("split", nil), mapKV("", "string(int(value) * 2)"))
	s.OnRecordError = skip
	res := runWith(t, s, map[string]ProcessorFactory{"split": fixed(split)}, rec(0, "k", "1,2"), rec(1, "k", "3,x"))
	if kv(res.Records) != "k=2 | k=4" || res.Failed != 1 || res.Out != 2 {
		t.Fatalf("output %s, failed %d, out %d", kv(res.Records), res.Failed, res.Out)
	}
}

func TestProcessorAggregate(t *testing.T) {
	s := withAgg(spec(processor("split", nil)), "value", "", count)
	res := runWith(t, s, map[string]ProcessorFactory{"split": fixed(split)}, rec(0, "", "a,b,a"), rec(1, "", "b"))
	if len(res.Aggregates) != 2 || res.Aggregates[0].Count != 2 || res.Aggregates[1].Count != 2 {
		t.Fatalf("aggregates = %v", res.Aggregates)
	}
}

// The task's context reaches the processor; a processor that gives up
// because the task was cancelled fails the task, not the record.
func TestProcessorContext(t *testing.T) {
	waits := fixed(func(ctx context.Context, rec record.Record) ([]record.Record, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return []record.Record{rec}, nil
	})
	p := compileWith(t, spec(processor("waits", nil)), map[string]ProcessorFactory{"waits": waits})
	ctx, cancel := context.WithCancel(context.Background())
	r := p.NewRunnerContext(ctx)
	if err := r.Process(rec(0, "k", "v")); err != nil {
		t.Fatal(err)
	}
	cancel()
	err := r.Process(rec(1, "k", "v"))
	var re *RecordError
	if err == nil || errors.As(err, &re) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Process() after cancel = %v, want an error wrapping context.Canceled, not a RecordError", err)
	}
	if res := r.Result(); res.Failed != 0 || res.Out != 1 {
		t.Fatalf("failed %d out %d, want 0 and 1", res.Failed, res.Out)
	}
}

// The output limit holds over the records a processor returns.
func TestProcessorOutputLimit(t *testing.T) {
	bigs := fixed(func(context.Context, record.Record) ([]record.Record, error) {
		out := make([]record.Record, 100)
		for i := range out {
			out[i].Value = bytes.Repeat([]byte("x"), 10_000)
		}
		return out, nil
	})
	r := compileWith(t, spec(processor("bigs", nil)), map[string]ProcessorFactory{"bigs": bigs}).NewRunner()
	r.SetOutputLimit(OutputLimit{Bytes: 100_000, Field: "limits.max_task_output_bytes"})
	err := r.Process(rec(1, "k", "v"))
	var le *OutputLimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "limits.max_task_output_bytes 100000") {
		t.Fatalf("Process() error = %v, want an OutputLimitError", err)
	}
}

// Under the dead-letter policy a record its processor fails on is kept
// unchanged, its headers naming the processor step and the processor.
func TestProcessorDeadLetter(t *testing.T) {
	fails := fixed(func(_ context.Context, rec record.Record) ([]record.Record, error) {
		if string(rec.Value) == "bad!" {
			return nil, errors.New("no customer")
		}
		return []record.Record{rec}, nil
	})
	s := withDLQ(spec(mapKV("", "value + '!'"), processor("lookup", nil)), "dlq")
	s.Name = "orders"
	r := compileWith(t, s, map[string]ProcessorFactory{"lookup": fails}).NewRunner()
	for i, v := range []string{"ok", "bad", "fine"} {
		if err := r.Process(rec(int64(i), "k", v)); err != nil {
			t.Fatal(err)
		}
	}
	if res := r.Result(); kv(res.Records) != "k=ok! | k=fine!" || res.Failed != 1 || res.DeadLettered != 1 {
		t.Fatalf("output %s, failed %d, dead-lettered %d", kv(res.Records), res.Failed, res.DeadLettered)
	}
	dead := r.DrainDeadLetters()
	if len(dead) != 1 || string(dead[0].GetValue()) != "bad" {
		t.Fatalf("dead letters %v", dead)
	}
	for k, v := range map[string]string{
		HeaderDLQField: "steps[1].processor", HeaderDLQStep: "1", HeaderDLQStepKind: "processor",
		HeaderDLQExpression: "lookup", HeaderDLQOffset: "1",
	} {
		if got, _ := header(dead[0], k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if got, _ := header(dead[0], HeaderDLQError); got != `processor "lookup": no customer` {
		t.Errorf("error header %q", got)
	}
}
