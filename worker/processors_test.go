package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

func passThrough(_ context.Context, rec record.Record) ([]record.Record, error) {
	return []record.Record{rec}, nil
}

func newTestWorker(t *testing.T) *Worker {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Coordinators = []string{"127.0.0.1:1"}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestRegisterProcessor(t *testing.T) {
	w := newTestWorker(t)
	factory := func(map[string]any) (Processor, error) { return passThrough, nil }
	if err := w.RegisterProcessor("enrich", passThrough); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterProcessorFactory("geo.v2", factory); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		register func() error
		want     string
	}{
		{"bad name", func() error { return w.RegisterProcessor("en rich", passThrough) },
			`worker: RegisterProcessor: processor name "en rich" must be a letter, then up to 62 letters, digits, '.', '_' or '-'`},
		{"empty name", func() error { return w.RegisterProcessorFactory("", factory) }, `processor name ""`},
		{"nil func", func() error { return w.RegisterProcessor("x", nil) }, `worker: RegisterProcessor "x": nil processor`},
		{"nil factory", func() error { return w.RegisterProcessorFactory("x", nil) }, `worker: RegisterProcessorFactory "x": nil factory`},
		{"twice", func() error { return w.RegisterProcessor("enrich", passThrough) }, `processor "enrich" is already registered`},
		{"twice, as a factory", func() error { return w.RegisterProcessorFactory("geo.v2", factory) }, `processor "geo.v2" is already registered`},
	}
	for _, tt := range tests {
		if err := tt.register(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error = %v, want %q", tt.name, err, tt.want)
		}
	}
	if got := w.Processors(); !slices.Equal(got, []string{"enrich", "geo.v2"}) {
		t.Errorf("Processors() = %q", got)
	}

	// Once running, it has advertised its processors: no more.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterProcessor("late", passThrough); err == nil || !strings.Contains(err.Error(),
		`worker: RegisterProcessor "late" after Run: register processors before the worker runs`) {
		t.Errorf("register after Run: %v", err)
	}
}

func processorStep(t *testing.T, name string, config map[string]any) *sluicev1.Step {
	t.Helper()
	ps := &sluicev1.ProcessorStep{Name: name}
	if config != nil {
		s, err := structpb.NewStruct(config)
		if err != nil {
			t.Fatal(err)
		}
		ps.Config = s
	}
	return &sluicev1.Step{Kind: &sluicev1.Step_Processor{Processor: ps}}
}

// A task runs the registered processors with their step's config; what
// goes wrong is told apart: a processor this worker lacks is retried
// (elsewhere), a bad config or a failing record fails the job at once, a
// processor stopped by the task's deadline is retried.
func TestRunTaskProcessors(t *testing.T) {
	env := newTaskEnv(t, nil)
	env.produce(10, 12)
	calls := 0
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(env.w.RegisterProcessorFactory("tag", func(config map[string]any) (Processor, error) {
		calls++
		prefix, ok := config["prefix"].(string)
		if !ok {
			return nil, errors.New(`config "prefix" (a string) is required`)
		}
		copies, _ := config["copies"].(float64)
		return func(_ context.Context, rec record.Record) ([]record.Record, error) {
			out := make([]record.Record, int(copies))
			for i := range out {
				out[i] = record.Record{Key: fmt.Appendf(nil, "%d", i), Value: append([]byte(prefix), rec.Value[:8]...)}
			}
			return out, nil
		}, nil
	}))
	must(env.w.RegisterProcessor("plain", passThrough))
	must(env.w.RegisterProcessor("fails", func(_ context.Context, rec record.Record) ([]record.Record, error) {
		if bytes.HasPrefix(rec.Value, []byte("00000003")) {
			return nil, errors.New("no such customer")
		}
		return []record.Record{rec}, nil
	}))
	must(env.w.RegisterProcessor("panics", func(context.Context, record.Record) ([]record.Record, error) {
		panic("nil table")
	}))
	must(env.w.RegisterProcessor("waits", func(ctx context.Context, rec record.Record) ([]record.Record, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	spec := func(steps ...*sluicev1.Step) *sluicev1.JobSpec { return &sluicev1.JobSpec{Steps: steps} }

	res := env.w.runTask(context.Background(), env.task(spec(processorStep(t, "tag", map[string]any{"prefix": "p-", "copies": 2})), 10))
	if res.GetError() != "" || res.GetRecordsIn() != 10 || res.GetRecordsOut() != 20 {
		t.Fatalf("tag: error %q, in %d, out %d", res.GetError(), res.GetRecordsIn(), res.GetRecordsOut())
	}
	if r := res.GetRecords(); string(r[0].GetKey()) != "0" || string(r[0].GetValue()) != "p-00000000" ||
		string(r[1].GetKey()) != "1" || string(r[19].GetValue()) != "p-00000009" {
		t.Fatalf("tag: records %v ... %v", r[:2], r[19])
	}
	// The factory ran once for the job's spec version, not per task.
	env.w.runTask(context.Background(), env.task(spec(processorStep(t, "tag", map[string]any{"prefix": "p-", "copies": 2})), 10))
	if calls != 1 {
		t.Errorf("factory called %d times for one spec version, want 1", calls)
	}

	tests := []struct {
		name             string
		steps            []*sluicev1.Step
		timeout          time.Duration
		fatal, retryable bool
		want             string
	}{
		{"not registered here", []*sluicev1.Step{processorStep(t, "enrich", nil)}, 0, false, true,
			`compile steps: steps[0].processor.name: processor "enrich" is not registered on this worker`},
		{"bad config", []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "true"}}, processorStep(t, "tag", map[string]any{"prefix": 3})}, 0, true, false,
			`compile steps: steps[1].processor.config: processor "tag": config "prefix" (a string) is required`},
		{"config for a processor without", []*sluicev1.Step{processorStep(t, "plain", map[string]any{"x": 1})}, 0, true, false,
			`steps[0].processor.config: processor "plain": takes no config, got keys ["x"]`},
		{"a record fails", []*sluicev1.Step{processorStep(t, "fails", nil)}, 0, true, false,
			`record in/0 offset 3: steps[0].processor: processor "fails": no such customer`},
		{"a panic", []*sluicev1.Step{processorStep(t, "panics", nil)}, 0, true, false,
			`record in/0 offset 0: steps[0].processor: processor "panics" panicked: nil table at github.com/sluice-stream/sluice/worker.TestRunTaskProcessors.func`},
		{"the task's deadline", []*sluicev1.Step{processorStep(t, "waits", nil)}, 100 * time.Millisecond, false, true,
			"context deadline exceeded"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := env.task(spec(tt.steps...), 10)
			task.SpecVersion = int64(i + 2)
			if tt.timeout > 0 {
				task.Timeout = durationpb.New(tt.timeout)
			}
			res := env.w.runTask(context.Background(), task)
			if res.GetFatal() != tt.fatal || res.GetRetryable() != tt.retryable || !strings.Contains(res.GetError(), tt.want) {
				t.Fatalf("result: fatal %v, retryable %v, error %q; want fatal %v, retryable %v, error with\n%s",
					res.GetFatal(), res.GetRetryable(), res.GetError(), tt.fatal, tt.retryable, tt.want)
			}
		})
	}
}

// A processor that fans out gives its Kafka sink records sluice-src-element,
// their position among their source record's outputs, as a flatMap does.
func TestRunTaskProcessorElementHeader(t *testing.T) {
	env := newTaskEnv(t, nil)
	const n = 300
	var rs []*kgo.Record
	for j := range n {
		rs = append(rs, &kgo.Record{Topic: "in", Value: fmt.Appendf(nil, "%d", j%3)})
	}
	if err := env.kgo.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := env.w.RegisterProcessor("repeat", func(_ context.Context, rec record.Record) ([]record.Record, error) {
		k, err := strconv.Atoi(string(rec.Value))
		if err != nil {
			return nil, err
		}
		out := make([]record.Record, k)
		for i := range out {
			out[i].Value = strconv.AppendInt(nil, int64(i), 10)
		}
		return out, nil
	}); err != nil {
		t.Fatal(err)
	}
	spec := &sluicev1.JobSpec{
		Steps: []*sluicev1.Step{processorStep(t, "repeat", nil)},
		Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
			Topic: "out", TransactionTimeout: durationpb.New(time.Minute),
		}}},
	}
	want := n / 3 * (0 + 1 + 2)
	checkElementHeaders(t, env, spec, n, want)
}
