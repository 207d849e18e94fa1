package steps_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
	"github.com/sluice-stream/sluice/steps"
)

func eventSpec(length, slide time.Duration, timeExpr string) *sluicev1.JobSpec {
	return &sluicev1.JobSpec{Aggregate: &sluicev1.Aggregate{Window: &sluicev1.AggregateWindow{
		Length: durationpb.New(length), Slide: durationpb.New(slide),
		EventTime: &sluicev1.EventTime{TimeExpr: timeExpr},
	}}}
}

// renderWindows is "start-end:key=count,...;" per window.
func renderWindows(ws []*sluicev1.WindowResult) string {
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "%d-%d:", w.GetStart().AsTime().UnixMilli(), w.GetEnd().AsTime().UnixMilli())
		for i, a := range w.GetAggregates() {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "%s=%d", a.GetKey(), a.GetCount())
		}
		b.WriteString(";")
	}
	return b.String()
}

func TestEventTimeWindows(t *testing.T) {
	type rec struct {
		key   string
		ts    int64 // ms
		value string
	}
	tests := []struct {
		name          string
		spec          *sluicev1.JobSpec
		watermark     *int64
		recs          []rec
		wantWindows   string
		wantLate      int64
		wantMax       int64
		wantOut       int64
		wantBatchAggs string
	}{
		{
			name:        "tumbling on the record timestamp",
			spec:        eventSpec(10*time.Second, 0, ""),
			recs:        []rec{{"a", 1000, ""}, {"b", 9999, ""}, {"a", 10000, ""}, {"a", 3000, ""}},
			wantWindows: "0-10000:a=2,b=1;10000-20000:a=1;",
			wantMax:     10000, wantOut: 4,
		},
		{
			name:        "sliding: a record in every window holding it",
			spec:        eventSpec(10*time.Second, 5*time.Second, ""),
			recs:        []rec{{"a", 7000, ""}},
			wantWindows: "0-10000:a=1;5000-15000:a=1;",
			wantMax:     7000, wantOut: 1,
		},
		{
			name:        "late records are counted and dropped",
			spec:        eventSpec(10*time.Second, 0, ""),
			watermark:   ptr(int64(10000)),
			recs:        []rec{{"a", 9999, ""}, {"a", 10000, ""}, {"b", 2000, ""}},
			wantWindows: "10000-20000:a=1;",
			wantLate:    2, wantMax: 10000, wantOut: 1,
		},
		{
			name:        "sliding: late only when every window was emitted",
			spec:        eventSpec(10*time.Second, 5*time.Second, ""),
			watermark:   ptr(int64(10000)),
			recs:        []rec{{"a", 7000, ""}, {"a", 4000, ""}},
			wantWindows: "5000-15000:a=1;",
			wantLate:    1, wantMax: 7000, wantOut: 1,
		},
		{
			name:        "a CEL time expression",
			spec:        eventSpec(time.Minute, 0, `timestamp(json.ts)`),
			recs:        []rec{{"a", 0, `{"ts":"2026-01-01T00:00:30Z"}`}, {"a", 0, `{"ts":"2026-01-01T00:01:00Z"}`}},
			wantWindows: "1767225600000-1767225660000:a=1;1767225660000-1767225720000:a=1;",
			wantMax:     1767225660000, wantOut: 2,
		},
		{
			name:        "flatMap: each element in the windows of its own time",
			spec:        withSteps(eventSpec(time.Minute, 0, `timestamp(json.ts)`), &sluicev1.Step{Kind: &sluicev1.Step_FlatMap{FlatMap: "json.events"}}),
			recs:        []rec{{"a", 0, `{"events":[{"ts":"2026-01-01T00:00:30Z"},{"ts":"2026-01-01T00:01:10Z"},{"ts":"2026-01-01T00:01:20Z"}]}`}},
			wantWindows: "1767225600000-1767225660000:a=1;1767225660000-1767225720000:a=2;",
			wantMax:     1767225680000, wantOut: 3,
		},
		{
			name:        "flatMap: a late element is dropped alone",
			spec:        withSteps(eventSpec(time.Minute, 0, `timestamp(json.ts)`), &sluicev1.Step{Kind: &sluicev1.Step_FlatMap{FlatMap: "json.events"}}),
			watermark:   ptr(int64(1767225660000)),
			recs:        []rec{{"a", 0, `{"events":[{"ts":"2026-01-01T00:00:30Z"},{"ts":"2026-01-01T00:01:10Z"}]}`}},
			wantWindows: "1767225660000-1767225720000:a=1;",
			wantLate:    1, wantMax: 1767225670000, wantOut: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := steps.Compile(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			r := p.NewRunner()
			if tt.watermark != nil {
				r.SetWatermark(*tt.watermark)
			}
			for i, rc := range tt.recs {
				if err := r.Process(&record.Record{Topic: "t", Offset: int64(i), Key: []byte(rc.key), Value: []byte(rc.value), Timestamp: time.UnixMilli(rc.ts)}); err != nil {
					t.Fatal(err)
				}
			}
			ev := r.EventResult()
			if got := renderWindows(ev.Windows); got != tt.wantWindows {
				t.Errorf("windows %s, want %s", got, tt.wantWindows)
			}
			if ev.Late != tt.wantLate || ev.MaxEventTime != tt.wantMax || !ev.Seen {
				t.Errorf("late %d, max event time %d (seen %v); want %d, %d", ev.Late, ev.MaxEventTime, ev.Seen, tt.wantLate, tt.wantMax)
			}
			if res := r.Result(); res.Out != tt.wantOut {
				t.Errorf("out %d, want %d (late records are not output)", res.Out, tt.wantOut)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func withSteps(spec *sluicev1.JobSpec, s ...*sluicev1.Step) *sluicev1.JobSpec {
	spec.Steps = s
	return spec
}

func TestEventTimeCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, field, want string
		spec              *sluicev1.JobSpec
	}{
		{"time expression not a timestamp", "aggregate.window.event_time.time_expr", "want a timestamp", eventSpec(time.Minute, 0, `size(value)`)},
		{"time expression that does not compile", "aggregate.window.event_time.time_expr", "", eventSpec(time.Minute, 0, `timestamp(`)},
		{"no length", "aggregate.window.length", "positive window length", eventSpec(0, 0, "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := steps.Compile(tc.spec)
			fe, ok := err.(*steps.FieldError)
			if !ok || fe.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compile = %v, want a FieldError for %s containing %q", err, tc.field, tc.want)
			}
		})
	}
}

func TestEventTimeBadTimeValue(t *testing.T) {
	p, err := steps.Compile(eventSpec(time.Minute, 0, `timestamp(json.ts)`))
	if err != nil {
		t.Fatal(err)
	}
	r := p.NewRunner()
	err = r.Process(&record.Record{Topic: "t", Value: []byte(`{"ts":"yesterday"}`)})
	if err == nil || !strings.Contains(err.Error(), "aggregate.window.event_time.time_expr") {
		t.Fatalf("Process(bad time) = %v, want a record error naming aggregate.window.event_time.time_expr", err)
	}
}
