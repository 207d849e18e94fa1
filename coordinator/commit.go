package coordinator

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/window"
)

// finished is a batch whose tasks are done: what its commit writes.
type finished struct {
	b, committed *sluicev1.Batch
	result       *sluicev1.BatchResult
	state        *sluicev1.AggregateState
	nextState    window.State
	// next are the offsets after the batch.
	next   *sluicev1.CommittedOffsets
	tasks  int
	logged func() (int64, error)
	// For the batch's log line.
	planTook, listTook, offsetsTook time.Duration
	reused                          bool
}

// offsets is the committed offsets of a job and their etcd revision.
type offsets = offsetstore.Versioned[*sluicev1.CommittedOffsets]

// commit writes a finished batch's results and offsets in one etcd
// transaction, then what follows it: the aggregate state, the update
// stream, the estimator, metrics and the offsets' mirror.
func (r *jobRunner) commit(ctx context.Context, f *finished, offs offsets) (offsets, error) {
	next, err := r.commitEtcd(ctx, f, offs)
	if err != nil {
		return offs, err
	}
	if r.agg != nil {
		r.agg.state, r.agg.rev = f.nextState, next.ModRevision
	}
	if jobspec.UpdateStream(r.spec) {
		if err := r.writeUpdates(ctx, f.b.GetId(), f.result); err != nil {
			// Committed in etcd: the next runner writes them first.
			return next, err
		}
	}
	r.observe(f.committed)
	if err := r.published(f); err != nil {
		return offs, err
	}
	if r.message != "" {
		r.setMessage(ctx, "")
	}
	return next, nil
}

// commitEtcd is the commit's etcd transaction: f's batch, result, state and
// offsets, provided the plan log and the offsets are still the ones f was
// run from.
func (r *jobRunner) commitEtcd(ctx context.Context, f *finished, offs offsets) (offsets, error) {
	b := f.b
	logWait := time.Now()
	batchRev, err := f.logged()
	if err != nil {
		// Its plan log may have reached etcd or not: a next leader finds
		// the batch planned, or plans it again.
		r.logger.Warn("commit abandoned: logging the batch's plan failed", "batch", b.GetId(), "error", err)
		return offs, err
	}
	commitStart := time.Now()
	// A commit that started runs to its end even if leadership is being lost
	// meanwhile: the fence in the transaction, not a cancelled context,
	// decides whether it counts.
	if ctx.Err() != nil {
		r.logger.Warn("committing after leadership was lost: the fence decides", "batch", b.GetId())
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	rev, err := r.store.CommitBatch(cctx, offsetstore.Commit{
		Batch: f.committed, BatchRevision: batchRev, Result: f.result,
		Offsets: f.next, OffsetsRevision: offs.ModRevision, Keep: r.keep, KeepBytes: r.keepBytes,
		State: f.state, StateRevision: r.agg.revision(),
	})
	r.metrics.commitTook(time.Since(commitStart))
	if errors.Is(err, offsetstore.ErrTooLarge) {
		return offs, jobFailure("%v", err)
	}
	switch {
	case err == nil && ctx.Err() != nil:
		// The fence held when etcd applied it: the commit landed while this
		// coordinator still led, and leadership was lost only afterwards.
		r.logger.Info("batch committed just before leadership was lost", "batch", b.GetId())
	case errors.Is(err, offsetstore.ErrConflict):
		r.logger.Warn("commit refused: this coordinator lost leadership or the batch changed under it", "batch", b.GetId())
	case err != nil:
		// Not applied, or not known to be: the runner restarts and recovers
		// from what etcd holds, as a new leader would.
		r.logger.Warn("commit failed", "batch", b.GetId(), "error", err)
	}
	if err != nil {
		return offs, err
	}
	m := f.committed.GetMetrics()
	r.logger.Debug("batch committed", "batch", b.GetId(), "records_in", m.GetRecordsIn(), "tasks", f.tasks,
		"plan_ms", ms(f.planTook), "list_ms", ms(f.listTook), "offsets_ms", ms(f.offsetsTook), "listing_reused", f.reused,
		"processing_ms", ms(m.GetProcessingTime().AsDuration()),
		"plan_log_wait_ms", ms(commitStart.Sub(logWait)), "commit_ms", ms(time.Since(commitStart)))
	return offsets{Value: f.next, ModRevision: rev}, nil
}

// published tells of a committed batch: metrics, the AfterCommit hook and
// the offsets' mirror. It touches no state of the runner's loop, so that a
// pipelined commit runs it beside the loop.
func (r *jobRunner) published(f *finished) error {
	r.metrics.committed(f.committed)
	if h := r.hooks.AfterCommit; h != nil {
		if err := h(f.committed); err != nil {
			return err
		}
	}
	if r.mirror != nil {
		// Only the newest offsets matter: replace any not mirrored yet.
		// Commits mirror one at a time (pipelined ones included).
		select {
		case <-r.mirror:
		default:
		}
		r.mirror <- f.next
	}
	return nil
}

// pipelineResultBytes bounds the result of a batch whose commit runs
// beside the next batch (pipelined): the coordinator then holds that result
// besides the next batch's.
const pipelineResultBytes = 1 << 20

// pipelined reports whether f's commit may run while the next batch is
// planned and its tasks run. Commits stay in order, one at a time: the next
// batch's plan log waits for this commit's offsets revision, and its own
// commit for that log. What a batch's commit leads to outside etcd keeps it
// in the loop: a Kafka sink (its plan is logged before its tasks run), an
// update stream (written after the commit), aggregate state (the next
// batch folds onto it), dead letters (transactions per partition).
func (r *jobRunner) pipelined(f *finished) bool {
	return r.spec.GetSink().GetKafka() == nil && !jobspec.PerPartitionTasks(r.spec) && !jobspec.UpdateStream(r.spec) &&
		r.agg == nil && proto.Size(f.result) <= pipelineResultBytes
}

// pendingCommit is a pipelined commit in flight.
type pendingCommit struct {
	done chan struct{}
	offs offsets
	err  error
}

// commitAsync starts f's commit (commitEtcd, then published) beside the loop,
// which owns it and waits for it (landed) before the next commit.
func (r *jobRunner) commitAsync(ctx context.Context, f *finished, offs offsets) *pendingCommit {
	p := &pendingCommit{done: make(chan struct{})}
	go func() { // ends with the commit, bounded by its timeout
		defer close(p.done)
		next, err := r.commitEtcd(ctx, f, offs)
		if err == nil {
			err = r.published(f)
		}
		p.offs, p.err = next, err
	}()
	return p
}

// wait returns the committed offsets once the commit is done.
func (p *pendingCommit) wait() (offsets, error) {
	<-p.done
	return p.offs, p.err
}

// revision returns how the next batch's plan log gets the offsets revision
// it is conditioned on: offsRev, or the pending commit's once it lands.
func (p *pendingCommit) revision(offsRev int64) func() (int64, error) {
	if p == nil {
		return func() (int64, error) { return offsRev, nil }
	}
	return func() (int64, error) {
		o, err := p.wait()
		return o.ModRevision, err
	}
}

// landed waits for the commit in flight p, if any, and returns the offsets
// it committed (offs when there is none).
func (r *jobRunner) landed(ctx context.Context, p *pendingCommit, offs offsets) (offsets, error) {
	if p == nil {
		return offs, nil
	}
	o, err := p.wait()
	if err != nil {
		return offs, err
	}
	if r.message != "" {
		r.setMessage(ctx, "")
	}
	return o, nil
}
