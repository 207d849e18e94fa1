package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/window"
)

// aggState is the aggregate state across batches of a stateful job
// (aggregate.running or aggregate.window) as of its last commit: the
// runner folds each batch into it and commits the new state with the
// batch's offsets, so a batch replayed after a crash folds into the same
// old state and yields the same totals and windows.
type aggState struct {
	state window.State
	// rev is the etcd ModRevision of the stored state (0: none stored).
	rev int64
}

// loadState reads a stateful job's state; nil for a job that keeps none.
func (r *jobRunner) loadState(ctx context.Context) (*aggState, error) {
	if !window.Stateful(r.spec) {
		return nil, nil
	}
	return retry(ctx, r, "load aggregate state", func(ctx context.Context) (*aggState, error) {
		v, err := r.store.State(ctx, r.name)
		if errors.Is(err, offsetstore.ErrNotFound) {
			return &aggState{}, nil
		}
		if err != nil {
			return nil, err
		}
		return &aggState{state: window.Decode(v.Value), rev: v.ModRevision}, nil
	})
}

// foldState folds a batch's merged aggregates (and, for event-time
// windows, its tasks' windows) into the job's state and returns the new
// state and the windows the batch completes. A state past its key cap fails
// the job: committing it would only grow toward etcd's request limit.
func (r *jobRunner) foldState(b *sluicev1.Batch, aggs []*sluicev1.KeyAggregate, results []*sluicev1.TaskResult) (window.State, []*sluicev1.WindowResult, error) {
	wb := window.Batch{ID: b.GetId(), Time: b.GetBatchTime().AsTime(), Interval: r.interval(), Aggregates: aggs}
	for _, res := range results {
		wb.Windows = append(wb.Windows, res.GetWindows()...)
		if res.MaxEventTimeUnixMs != nil && (!wb.SawEvents || res.GetMaxEventTimeUnixMs() > wb.MaxEventTime) {
			wb.MaxEventTime, wb.SawEvents = res.GetMaxEventTimeUnixMs(), true
		}
	}
	next, emitted, err := r.agg.state.Fold(wb, window.Of(r.spec))
	if err != nil {
		// The state read is newer than the offsets: another leader
		// committed meanwhile. Start over from what etcd holds.
		return window.State{}, nil, errors.Join(offsetstore.ErrConflict, err)
	}
	if n, limit := next.Keys(), window.KeyCap(r.spec); n > limit {
		return window.State{}, nil, jobFailure("batch %d: the aggregate state would hold %d keys, above limits.max_state_keys %d: raise limits.max_state_keys (at most %d), aggregate on a key with fewer values, or use shorter windows",
			b.GetId(), n, limit, window.MaxKeys)
	}
	out := make([]*sluicev1.WindowResult, len(emitted))
	for i, p := range emitted {
		out[i] = p.Result()
	}
	return next, out, nil
}

// watermark is the event-time watermark the job's tasks drop late records
// against: the committed one, so that a batch re-run after a crash drops
// exactly the same records. nil: none yet, or no event-time windows.
func (r *jobRunner) watermark() *int64 {
	if r.agg == nil || !r.agg.state.HasWatermark {
		return nil
	}
	wm := r.agg.state.Watermark
	return &wm
}

// revision is the stored state's revision, 0 for none (or no state kept).
func (a *aggState) revision() int64 {
	if a == nil {
		return 0
	}
	return a.rev
}

// windowDue reports whether a batch at bt, even without records, would
// emit a processing-time window: an idle job then runs an empty batch, so
// that its windows are emitted on time rather than with the next record.
func (r *jobRunner) windowDue(bt time.Time) bool {
	if r.agg == nil || len(r.agg.state.Open) == 0 {
		return false
	}
	if c := window.Of(r.spec); !c.Windowed || c.EventTime {
		return false // event-time windows move with the records' times only
	}
	return r.agg.state.Open[0].End <= bt.Add(r.interval()).UnixMilli()
}
