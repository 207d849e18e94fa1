// Package window keeps a job's aggregate state across batches: running
// per-key totals (aggregate.running) and processing-time windows over
// batches (aggregate.window). It is pure: the coordinator folds each batch
// into the state it read with the offsets and commits the new state with
// the batch, so a batch replayed after a crash is folded into the same old
// state again, and the result is identical.
package window

import (
	"fmt"
	"slices"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// Windows are sliding (or, slide = length, tumbling) windows: they start at
// the multiples of Slide since the Unix epoch and span Length.
type Windows struct {
	Length, Slide time.Duration
}

// Config is what a job keeps across batches.
type Config struct {
	// Running keeps per-key totals since the job started.
	Running bool
	// Windowed: Windows are kept, on batch times, or on event times when
	// EventTime (with the watermark Delay behind the greatest one seen).
	Windowed  bool
	Windows   Windows
	EventTime bool
	Delay     time.Duration
}

// Of returns the job's configuration.
func Of(spec *sluicev1.JobSpec) Config {
	a := spec.GetAggregate()
	c := Config{Running: a.GetRunning()}
	aw := a.GetWindow()
	if aw == nil {
		return c
	}
	c.Windowed = true
	c.Windows.Length = aw.GetLength().AsDuration()
	c.Windows.Slide = aw.GetSlide().AsDuration()
	if c.Windows.Slide <= 0 {
		c.Windows.Slide = c.Windows.Length
	}
	if et := aw.GetEventTime(); et != nil {
		c.EventTime = true
		c.Delay = et.GetWatermarkDelay().AsDuration()
	}
	return c
}

// Assign returns the windows [start, end) holding the instant t (Unix
// milliseconds), oldest first.
func (w Windows) Assign(t int64) []Pane {
	length := w.Length.Milliseconds()
	var out []Pane
	steps.WindowStarts(t, length, w.Slide.Milliseconds(), func(start int64) {
		out = append(out, Pane{Start: start, End: start + length})
	})
	return out
}

// Pane is one window: [Start, End) in Unix milliseconds, with the per-key
// aggregates folded into it so far, sorted by key.
type Pane struct {
	Start, End int64
	Aggregates []*sluicev1.KeyAggregate
}

// Result is the pane as the API shows it.
func (p Pane) Result() *sluicev1.WindowResult {
	return &sluicev1.WindowResult{
		Start:      timestampMs(p.Start),
		End:        timestampMs(p.End),
		Aggregates: p.Aggregates,
	}
}

// State is a job's aggregate state as of a committed batch. A State is
// never modified: Fold returns a new one.
type State struct {
	BatchID int64
	// Totals are the running totals, sorted by key.
	Totals []*sluicev1.KeyAggregate
	// Open are the windows not emitted yet, oldest first.
	Open []Pane
	// Watermark (event time, Unix ms; HasWatermark false before any event
	// time was seen): windows ending at or before it were emitted.
	Watermark    int64
	HasWatermark bool
}

// Keys is how many keys the state holds: the totals' and every open
// window's (a key in two windows counts twice).
func (s State) Keys() int {
	n := len(s.Totals)
	for _, p := range s.Open {
		n += len(p.Aggregates)
	}
	return n
}

// Batch is what one committed batch adds to the state.
type Batch struct {
	ID int64
	// Time is the batch time (aligned on the batch interval).
	Time time.Time
	// Interval is the job's batch interval.
	Interval   time.Duration
	Aggregates []*sluicev1.KeyAggregate
	// Event time: the tasks' windows (a window may come from several
	// tasks), and the greatest event time they saw (SawEvents).
	Windows      []*sluicev1.WindowResult
	MaxEventTime int64
	SawEvents    bool
}

// Fold adds a batch to the state: to the running totals, and to the
// windows: on batch times, to every window the batch time falls in; on
// event time, the tasks' windows. It returns the new state and the windows
// the batch completes, oldest first: on batch times, those ending by the
// end of the batch's interval; on event time, those ending at or before the
// new watermark, which is the greatest event time seen minus the delay and
// never goes back. A batch at or below the state's batch id is refused: it
// was folded in already.
func (s State) Fold(b Batch, c Config) (State, []Pane, error) {
	if b.ID <= s.BatchID {
		return s, nil, fmt.Errorf("window: batch %d is already in the state (as of batch %d)", b.ID, s.BatchID)
	}
	next := State{BatchID: b.ID, Totals: s.Totals, Watermark: s.Watermark, HasWatermark: s.HasWatermark}
	if c.Running && len(b.Aggregates) > 0 {
		next.Totals = steps.Merge(s.Totals, b.Aggregates)
	}
	if !c.Windowed {
		return next, nil, nil
	}
	open := slices.Clone(s.Open)
	add := func(p Pane, aggs ...[]*sluicev1.KeyAggregate) {
		i, found := slices.BinarySearchFunc(open, p.Start, func(q Pane, start int64) int { return cmpInt(q.Start, start) })
		if found {
			open[i] = Pane{Start: p.Start, End: p.End, Aggregates: steps.Merge(append([][]*sluicev1.KeyAggregate{open[i].Aggregates}, aggs...)...)}
			return
		}
		p.Aggregates = steps.Merge(aggs...)
		open = slices.Insert(open, i, p)
	}
	var done int64
	if c.EventTime {
		for _, w := range b.Windows {
			p := Pane{Start: w.GetStart().AsTime().UnixMilli(), End: w.GetEnd().AsTime().UnixMilli()}
			// Workers drop what falls in emitted windows, against this
			// same watermark; a window emitted already is never reopened.
			if s.HasWatermark && p.End <= s.Watermark {
				continue
			}
			add(p, w.GetAggregates())
		}
		if b.SawEvents {
			if wm := b.MaxEventTime - c.Delay.Milliseconds(); !next.HasWatermark || wm > next.Watermark {
				next.Watermark, next.HasWatermark = wm, true
			}
		}
		if !next.HasWatermark {
			next.Open = open
			return next, nil, nil
		}
		done = next.Watermark
	} else {
		t := b.Time.UnixMilli()
		if len(b.Aggregates) > 0 {
			for _, p := range c.Windows.Assign(t) {
				add(p, b.Aggregates)
			}
		}
		// The batch covers [t, t+interval): a window ending by then has
		// seen its last batch.
		done = t + b.Interval.Milliseconds()
	}
	// Windows share a length: sorted by start, they are sorted by end.
	var emitted []Pane
	for len(open) > 0 && open[0].End <= done {
		emitted = append(emitted, open[0])
		open = open[1:]
	}
	next.Open = open
	return next, emitted, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Bounds of the state's key count (limits.max_state_keys). The state is
// written with every batch commit, in one etcd request with the batch's
// own result: 20000 keys of up to about 30 bytes stay well under etcd's
// 1.5 MiB request limit even with every column present.
const (
	DefaultMaxKeys = 10_000
	MaxKeys        = 20_000
)

// Stateful reports whether the job keeps aggregate state across batches.
func Stateful(spec *sluicev1.JobSpec) bool {
	c := Of(spec)
	return c.Running || c.Windowed
}

// KeyCap is the job's limits.max_state_keys, or its default.
func KeyCap(spec *sluicev1.JobSpec) int {
	if n := spec.GetLimits().GetMaxStateKeys(); n > 0 {
		return int(min(n, MaxKeys))
	}
	return DefaultMaxKeys
}
