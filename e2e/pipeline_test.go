package e2e

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/coordinator"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// overlapProbe holds a job's batch 3 in its AfterCommit hook until batch 4
// is dispatched (or a timeout), and makes batch 3 late: its AfterDispatch
// sleeps past the batch interval, as a batch slower than the interval.
type overlapProbe struct {
	job       string
	interval  time.Duration
	mu        sync.Mutex
	next      chan struct{} // closed when batch 4 is dispatched
	overlap   bool          // batch 4 was dispatched while batch 3 committed
	committed bool          // batch 3's AfterCommit ran
}

func (p *overlapProbe) hooks(c *coordinator.Config) {
	c.Hooks.AfterDispatch = func(b *sluicev1.Batch) error {
		if b.GetJob() != p.job {
			return nil
		}
		switch b.GetId() {
		case 3:
			time.Sleep(2 * p.interval)
		case 4:
			close(p.next)
		}
		return nil
	}
	c.Hooks.AfterCommit = func(b *sluicev1.Batch) error {
		if b.GetJob() != p.job || b.GetId() != 3 {
			return nil
		}
		select {
		case <-p.next:
			p.mu.Lock()
			p.overlap = true
			p.mu.Unlock()
		case <-time.After(3 * time.Second):
		}
		p.mu.Lock()
		p.committed = true
		p.mu.Unlock()
		return nil
	}
}

func (p *overlapProbe) result() (overlap, committed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.overlap, p.committed
}

// TestCommitOverlapsNextBatch: a late batch of a job that collects its
// results commits while the next batch is planned and dispatched (batch 4
// reaches its workers while batch 3's commit is held after etcd applied
// it), and the counts stay exact and the ranges tile every partition. A
// job with running totals, whose next batch folds onto the state the
// commit writes, does not overlap.
func TestCommitOverlapsNextBatch(t *testing.T) {
	const topic, parts, interval = "pipe", 4, 50 * time.Millisecond
	pipelined := &overlapProbe{job: "pipelined", interval: interval, next: make(chan struct{})}
	stateful := &overlapProbe{job: "stateful", interval: interval, next: make(chan struct{})}
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}, coord: func(c *coordinator.Config) {
		pipelined.hooks(c)
		after, dispatch := c.Hooks.AfterCommit, c.Hooks.AfterDispatch
		stateful.hooks(c)
		sc, sd := c.Hooks.AfterCommit, c.Hooks.AfterDispatch
		c.Hooks.AfterCommit = func(b *sluicev1.Batch) error { _ = after(b); return sc(b) }
		c.Hooks.AfterDispatch = func(b *sluicev1.Batch) error { _ = dispatch(b); return sd(b) }
	}})
	l := newLedger(topic, parts)
	l.produce(t, tc.producer(), 8000, nil)
	limited := func(s *sluicev1.JobSpec) *sluicev1.JobSpec {
		s.BatchInterval = durationpb.New(interval)
		s.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 500}
		return s
	}
	specs := []*sluicev1.JobSpec{limited(countJob("pipelined", tc.Brokers, topic)), limited(countJob("stateful", tc.Brokers, topic))}
	specs[1].Aggregate.Running = true
	for _, s := range specs {
		if _, err := tc.Client.Submit(context.Background(), s); err != nil {
			t.Fatalf("submit %s: %v", s.GetName(), err)
		}
	}
	for _, s := range specs {
		tc.waitOffsets(s.GetName(), l.ends(), 60*time.Second)
	}
	if overlap, committed := pipelined.result(); !overlap || !committed {
		t.Errorf("collecting job: batch 4 dispatched during batch 3's commit: %v (batch 3 committed: %v); want the commit to overlap the next batch", overlap, committed)
	}
	if overlap, committed := stateful.result(); overlap || !committed {
		t.Errorf("running totals: batch 4 dispatched during batch 3's commit: %v (batch 3 committed: %v); want no overlap", overlap, committed)
	}
	want := l.counts(nil)
	if got := tc.mergedCounts("pipelined"); !maps.Equal(got, want) {
		t.Errorf("counts of the pipelined job differ from the ground truth:\n got %v\nwant %v", got, want)
	}
	batches := batchesAsc(t, tc.Client, "pipelined")
	checkTiles(t, batches, l.uniform(0), l.ends())
	for i, b := range batches {
		if b.GetId() != int64(i+1) || b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED {
			t.Fatalf("batch %d of the pipelined job: id %d, %v; want ids 1..%d all committed", i, b.GetId(), b.GetState(), len(batches))
		}
	}
	t.Logf("pipelined job: %d batches", len(batches))
}
