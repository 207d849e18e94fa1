package coordinator

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/window"
)

// ErrNoState is asked of the state of a job that keeps none.
var ErrNoState = errors.New("the job keeps no aggregate state across batches")

// GetState reads a job's committed aggregate state: what its last commit
// wrote with the offsets, so it never counts a batch that did not commit.
func (s *jobServer) GetState(ctx context.Context, req *sluicev1.GetStateRequest) (*sluicev1.GetStateResponse, error) {
	j, err := s.c.store.Job(ctx, req.GetJob())
	if err != nil {
		return nil, toStatus(err)
	}
	if !window.Stateful(j.Value.GetSpec()) {
		return nil, toStatus(fmt.Errorf("job %q: %w: set aggregate.running or aggregate.window (its batches' results are in GetResults)", req.GetJob(), ErrNoState))
	}
	v, err := s.c.store.State(ctx, req.GetJob())
	if errors.Is(err, offsetstore.ErrNotFound) {
		return &sluicev1.GetStateResponse{}, nil // no batch committed yet
	}
	if err != nil {
		return nil, toStatus(err)
	}
	st := window.Decode(v.Value)
	resp := &sluicev1.GetStateResponse{BatchId: st.BatchID, Totals: st.Totals}
	for _, p := range st.Open {
		resp.OpenWindows = append(resp.OpenWindows, p.Result())
	}
	return resp, nil
}

// checkStateKept refuses an update (old is the stored spec; nil for a new
// job) that changes the aggregate of a job holding state across batches:
// the kept totals and windows would mix the old aggregate with the new.
func (s *jobServer) checkStateKept(ctx context.Context, old, spec *sluicev1.JobSpec) error {
	if old == nil || !window.Stateful(old) || proto.Equal(old.GetAggregate(), spec.GetAggregate()) {
		return nil
	}
	v, err := s.c.store.State(ctx, old.GetName())
	if errors.Is(err, offsetstore.ErrNotFound) {
		return nil // none committed yet, or dropped by a reset
	}
	if err != nil {
		return toStatus(err)
	}
	return toStatus(invalid("aggregate", "the job keeps state across batches (as of batch %d) that a changed aggregate would mix with the new one: stop the job and reset its offsets (which drops the state), or submit the change as a new job",
		v.Value.GetBatchId()))
}
