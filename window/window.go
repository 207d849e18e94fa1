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

// Of returns the job's windows, or ok false when it has none.
func Of(spec *sluicev1.JobSpec) (w Windows, ok bool) {
	aw := spec.GetAggregate().GetWindow()
	if aw == nil {
		return Windows{}, false
	}
	w.Length = aw.GetLength().AsDuration()
	w.Slide = aw.GetSlide().AsDuration()
	if w.Slide <= 0 {
		w.Slide = w.Length
	}
	return w, true
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
}

// Fold adds a batch to the state: to the running totals when running, and
// to every window its batch time falls in. It returns the new state and
// the windows the batch completes, oldest first: those ending at or before
// the end of the batch's interval. A batch at or below the state's batch
// id is refused: it was folded in already.
func (s State) Fold(b Batch, running bool, w Windows, windowed bool) (State, []Pane, error) {
	if b.ID <= s.BatchID {
		return s, nil, fmt.Errorf("window: batch %d is already in the state (as of batch %d)", b.ID, s.BatchID)
	}
	next := State{BatchID: b.ID, Totals: s.Totals}
	if running && len(b.Aggregates) > 0 {
		next.Totals = steps.Merge(s.Totals, b.Aggregates)
	}
	if !windowed {
		return next, nil, nil
	}
	t := b.Time.UnixMilli()
	open := slices.Clone(s.Open)
	if len(b.Aggregates) > 0 {
		for _, p := range w.Assign(t) {
			i, found := slices.BinarySearchFunc(open, p.Start, func(q Pane, start int64) int { return cmpInt(q.Start, start) })
			if found {
				open[i] = Pane{Start: p.Start, End: p.End, Aggregates: steps.Merge(open[i].Aggregates, b.Aggregates)}
				continue
			}
			p.Aggregates = steps.Merge(b.Aggregates)
			open = slices.Insert(open, i, p)
		}
	}
	// The batch covers [t, t+interval): a window ending by then has seen
	// its last batch.
	done := t + b.Interval.Milliseconds()
	var emitted []Pane
	for len(open) > 0 && open[0].End <= done {
		emitted = append(emitted, open[0])
		open = open[1:]
	}
	// Windows are sorted by start and share a length, so by end too.
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
	a := spec.GetAggregate()
	return a.GetRunning() || a.GetWindow() != nil
}

// KeyCap is the job's limits.max_state_keys, or its default.
func KeyCap(spec *sluicev1.JobSpec) int {
	if n := spec.GetLimits().GetMaxStateKeys(); n > 0 {
		return int(min(n, MaxKeys))
	}
	return DefaultMaxKeys
}
