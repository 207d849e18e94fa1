package coordinator

import (
	"slices"
	"strings"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// JobService returns the coordinator's user API for callers in the same
// process (the web UI). It is what the gRPC server serves, without the
// server's interceptors: such a caller authorizes its own requests.
func (c *Coordinator) JobService() sluicev1.JobServiceServer {
	return &jobServer{c: c}
}

// WorkerStatus is a connected worker as the dispatcher sees it.
type WorkerStatus struct {
	ID     string
	Host   string
	Labels []string
	// Processors are the Go processors the worker registered, sorted.
	Processors []string
	Slots      int
	// Running is the number of task attempts sent to the worker and not yet
	// finished.
	Running int
	// LastHeartbeat is when the worker last sent anything on its stream.
	LastHeartbeat time.Time
}

// Workers lists the workers connected to this coordinator, by id. Only the
// leader has workers; a standby's list is empty.
func (c *Coordinator) Workers() []WorkerStatus {
	d := c.dispatcher
	d.mu.Lock()
	out := make([]WorkerStatus, 0, len(d.workers))
	for _, w := range d.workers {
		out = append(out, WorkerStatus{
			ID:            w.id,
			Host:          w.host,
			Labels:        slices.Clone(w.labels),
			Processors:    slices.Clone(w.processors),
			Slots:         w.slots,
			Running:       w.inflight,
			LastHeartbeat: time.Unix(0, w.lastSeen.Load()),
		})
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b WorkerStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}
