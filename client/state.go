package client

import (
	"context"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// State reads a job's committed aggregate state across batches: its running
// totals (aggregate.running) and its open windows (aggregate.window), as of
// its last committed batch. Emitted windows are in the batches' results
// (Results: BatchResult.windows). A job that keeps no state is
// FailedPrecondition.
func (c *Client) State(ctx context.Context, job string) (*sluicev1.GetStateResponse, error) {
	return c.jobs.GetState(ctx, &sluicev1.GetStateRequest{Job: job})
}
