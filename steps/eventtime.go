package steps

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// eventTime is aggregate.window.event_time: records are aggregated per
// (window, key), windows placed on each record's event time.
type eventTime struct {
	expr          *expr // nil: the Kafka record timestamp
	length, slide int64 // milliseconds
}

// compileEventTime compiles aggregate.window.event_time; nil when the job
// has no event-time windows.
func (p *Program) compileEventTime(e *cel.Env, w *sluicev1.AggregateWindow) (*eventTime, error) {
	et := w.GetEventTime()
	if et == nil {
		return nil, nil
	}
	ev := &eventTime{length: w.GetLength().AsDuration().Milliseconds(), slide: w.GetSlide().AsDuration().Milliseconds()}
	if ev.slide <= 0 {
		ev.slide = ev.length
	}
	if ev.length <= 0 {
		return nil, &FieldError{Field: "aggregate.window.length", Err: errors.New("a positive window length of at least 1ms is required")}
	}
	if src := et.GetTimeExpr(); src != "" {
		var err error
		if ev.expr, err = p.compile(e, "aggregate.window.event_time.time_expr", src, kinds(types.TimestampKind), "a timestamp"); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// WindowStarts calls fn with the start of every window of length holding
// the instant t, oldest first; windows start at the multiples of slide
// since the Unix epoch (all in milliseconds).
func WindowStarts(t, length, slide int64, fn func(start int64)) {
	if length <= 0 || slide <= 0 {
		return
	}
	last := t / slide * slide
	if t%slide != 0 && t < 0 {
		last -= slide
	}
	for start := last - (length-1)/slide*slide; start <= last; start += slide {
		if start <= t && t < start+length {
			fn(start)
		}
	}
}

// eventState is a Runner's event-time aggregation.
type eventState struct {
	// watermark: windows ending at or before it were emitted (hasWM).
	watermark int64
	hasWM     bool
	maxEvent  int64
	seen      bool
	late      int64
	windows   map[int64]map[string]*sluicev1.KeyAggregate // by start, then exact key
	starts    []int64                                     // of the current record's open windows
}

// SetWatermark sets the job's watermark (Unix milliseconds) for an
// event-time windowed program: records whose every window ends at or
// before it are late.
func (r *Runner) SetWatermark(ms int64) {
	r.ev.watermark, r.ev.hasWM = ms, true
}

// eventWindows places the current record: the starts of its windows not
// emitted yet (r.ev.starts), none when it is late.
func (r *Runner) eventWindows(ev *eventTime) *fieldErr {
	var t time.Time
	if ev.expr == nil {
		t = r.act.rec.Timestamp
	} else {
		v, err := r.eval(ev.expr)
		if err != nil {
			return &fieldErr{ev.expr, err}
		}
		ts, ok := v.(types.Timestamp)
		if !ok {
			return &fieldErr{ev.expr, fmt.Errorf("time expression gave %s, want timestamp", typeName(v))}
		}
		t = ts.Time
	}
	ms := t.UnixMilli()
	if !r.ev.seen || ms > r.ev.maxEvent {
		r.ev.maxEvent, r.ev.seen = ms, true
	}
	r.ev.starts = r.ev.starts[:0]
	WindowStarts(ms, ev.length, ev.slide, func(start int64) {
		if !r.ev.hasWM || start+ev.length > r.ev.watermark {
			r.ev.starts = append(r.ev.starts, start)
		}
	})
	return nil
}

// addWindows adds the current record (key, num) to its open windows.
func (r *Runner) addWindows(key string, num float64) {
	if r.ev.windows == nil {
		r.ev.windows = make(map[int64]map[string]*sluicev1.KeyAggregate)
	}
	for _, start := range r.ev.starts {
		m := r.ev.windows[start]
		if m == nil {
			m = make(map[string]*sluicev1.KeyAggregate)
			r.ev.windows[start] = m
		}
		ka := m[key]
		if ka == nil {
			exact := string([]byte(key)) // key may alias the record or a buffer
			ka = newKeyAggregate(exact)
			ka.Min, ka.Max = num, num
			m[exact] = ka
			r.bytes += int64(len(ka.Key)+len(ka.KeyBytes)) + aggregateOverhead
		}
		ka.Count++
		ka.Sum += num
		ka.Min = min(ka.Min, num)
		ka.Max = max(ka.Max, num)
	}
}

// EventResult is what an event-time windowed Runner saw.
type EventResult struct {
	// Windows are the per-key aggregates per window, oldest first.
	Windows []*sluicev1.WindowResult
	// MaxEventTime is the greatest event time seen (Unix ms); Seen is false
	// when no record reached the aggregation.
	MaxEventTime int64
	Seen         bool
	// Late counts the records dropped as late.
	Late int64
}

// EventResult returns the event-time windows so far; zero for a program
// without them.
func (r *Runner) EventResult() EventResult {
	ev := r.p.agg.eventTimeOrNil()
	if ev == nil {
		return EventResult{}
	}
	out := EventResult{MaxEventTime: r.ev.maxEvent, Seen: r.ev.seen, Late: r.ev.late}
	starts := make([]int64, 0, len(r.ev.windows))
	for s := range r.ev.windows {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	for _, s := range starts {
		w := &sluicev1.WindowResult{Start: timestamppb.New(time.UnixMilli(s)), End: timestamppb.New(time.UnixMilli(s + ev.length))}
		for _, ka := range r.ev.windows[s] {
			w.Aggregates = append(w.Aggregates, &sluicev1.KeyAggregate{
				Key: ka.Key, KeyBytes: ka.KeyBytes, Count: ka.Count, Sum: ka.Sum, Min: ka.Min, Max: ka.Max,
				Avg: ka.Sum / float64(ka.Count),
			})
		}
		sortAggregates(w.Aggregates)
		out.Windows = append(out.Windows, w)
	}
	return out
}

func (a *aggregate) eventTimeOrNil() *eventTime {
	if a == nil {
		return nil
	}
	return a.event
}

// checkUpdateStream checks a Kafka sink that receives an aggregate's
// updates (running totals, emitted windows): they are written to one
// topic, partitioned by key, with Sluice's headers, exactly once.
func checkUpdateStream(ks *sluicev1.KafkaSink) error {
	switch {
	case ks.GetTopic() == "":
		return &FieldError{Field: "sink.kafka.topic", Err: errors.New("an update stream (aggregate.running or aggregate.window) needs a fixed topic")}
	case ks.GetTopicExpr() != "":
		return &FieldError{Field: "sink.kafka.topic_expr", Err: errors.New("not with an update stream (aggregate.running or aggregate.window): updates go to sink.kafka.topic")}
	case ks.GetPartitionExpr() != "":
		return &FieldError{Field: "sink.kafka.partition_expr", Err: errors.New("not with an update stream (aggregate.running or aggregate.window): updates are partitioned by key")}
	case len(ks.GetHeaders()) > 0:
		return &FieldError{Field: "sink.kafka.headers", Err: errors.New("not with an update stream (aggregate.running or aggregate.window): updates carry Sluice's headers only")}
	case ks.GetMode() == sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT:
		return &FieldError{Field: "sink.kafka.mode", Err: errors.New("an update stream is written exactly once, in transactions: omit mode or use KAFKA_SINK_MODE_TRANSACTIONAL")}
	}
	return nil
}
