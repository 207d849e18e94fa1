package offsetstore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func stateAt(batchID int64, keys ...string) *sluicev1.AggregateState {
	p := &sluicev1.PackedAggregates{}
	for _, k := range keys {
		p.Keys = append(p.Keys, []byte(k))
		p.Counts = append(p.Counts, batchID)
	}
	return &sluicev1.AggregateState{BatchId: batchID, Totals: p}
}

// The aggregate state is written in the batch's commit transaction, guarded
// by the revision it was folded from; a stale fold changes nothing.
func TestCommitBatchState(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	offsRev := initJob(t, ctx, s, "totals")
	if _, err := s.State(ctx, "totals"); !errors.Is(err, offsetstore.ErrNotFound) {
		t.Fatalf("State before any commit = %v, want ErrNotFound", err)
	}
	commit := func(id, offsRev, stateRev int64) (int64, error) {
		planRev, err := s.LogPlan(ctx, plannedBatch("totals", id), offsRev)
		if err != nil {
			t.Fatalf("LogPlan(%d): %v", id, err)
		}
		return s.CommitBatch(ctx, offsetstore.Commit{
			Batch: committedBatch("totals", id), BatchRevision: planRev,
			Offsets: offsetsAt(id, id*10), OffsetsRevision: offsRev,
			State: stateAt(id, "a", "b"), StateRevision: stateRev,
		})
	}
	rev, err := commit(1, offsRev, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.State(ctx, "totals")
	if err != nil {
		t.Fatal(err)
	}
	if st.Value.GetBatchId() != 1 || st.ModRevision != rev {
		t.Fatalf("state batch %d at revision %d, want batch 1 at the commit's revision %d", st.Value.GetBatchId(), st.ModRevision, rev)
	}
	// A fold from no state (revision 0) while one exists is refused.
	if _, err := commit(2, rev, 0); !errors.Is(err, offsetstore.ErrConflict) {
		t.Fatalf("commit folded from a stale state = %v, want ErrConflict", err)
	}
	if got, _ := s.State(ctx, "totals"); got.Value.GetBatchId() != 1 {
		t.Fatalf("state after the refused commit is of batch %d, want 1", got.Value.GetBatchId())
	}
}

func TestCommitBatchStateTooLarge(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{MaxRequestBytes: 1024})
	ctx := testContext(t)
	offsRev := initJob(t, ctx, s, "big")
	planRev, err := s.LogPlan(ctx, plannedBatch("big", 1), offsRev)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CommitBatch(ctx, offsetstore.Commit{
		Batch: committedBatch("big", 1), BatchRevision: planRev,
		Offsets: offsetsAt(1, 10), OffsetsRevision: offsRev,
		State: stateAt(1, strings.Repeat("k", 2048)),
	})
	if !errors.Is(err, offsetstore.ErrTooLarge) || !strings.Contains(err.Error(), "aggregate state") || !strings.Contains(err.Error(), "limits.max_state_keys") {
		t.Fatalf("CommitBatch(2 KiB state, 1 KiB limit) = %v, want ErrTooLarge naming the aggregate state and limits.max_state_keys", err)
	}
}

// Deleting a job deletes its state; so does resetting its offsets (the
// totals would no longer match the offsets).
func TestStateDeletedWithJobAndReset(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	for _, job := range []string{"deleted", "reset"} {
		if err := s.CreateJob(ctx, newJob(job)); err != nil {
			t.Fatal(err)
		}
		offsRev := initJob(t, ctx, s, job)
		planRev, err := s.LogPlan(ctx, plannedBatch(job, 1), offsRev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CommitBatch(ctx, offsetstore.Commit{
			Batch: committedBatch(job, 1), BatchRevision: planRev,
			Offsets: offsetsAt(1, 10), OffsetsRevision: offsRev, State: stateAt(1, "a"),
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteJob(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.State(ctx, "deleted"); !errors.Is(err, offsetstore.ErrNotFound) {
		t.Fatalf("State of a deleted job = %v, want ErrNotFound", err)
	}
	j, err := s.Job(ctx, "reset")
	if err != nil {
		t.Fatal(err)
	}
	offs, err := s.Offsets(ctx, "reset")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ResetOffsets(ctx, offsetstore.Reset{Job: j.Value, JobRevision: j.ModRevision, Offsets: offsetsAt(1, 0), OffsetsRevision: offs.ModRevision, NextBatchID: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.State(ctx, "reset"); !errors.Is(err, offsetstore.ErrNotFound) {
		t.Fatalf("State after a reset = %v, want ErrNotFound (it starts over)", err)
	}
}
