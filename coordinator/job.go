package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
	"github.com/sluice-stream/sluice/window"
)

// errJobFailed wraps the reason a job can not go on; the runner records it
// in the job and stops.
var errJobFailed = errors.New("job failed")

func jobFailure(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errJobFailed, fmt.Sprintf(format, args...))
}

// jobRunner runs one job's batches, one at a time, while this coordinator
// leads. It is owned by the leader loop, which cancels its ctx to stop it.
type jobRunner struct {
	// planTook is how long the last batch's planning took, and listTook and
	// offsetsTook its Kafka requests (0 when not sent), for the logs.
	planTook, listTook, offsetsTook time.Duration
	// tps are the job's partitions as listed at tpsAt (see metadataMaxAge).
	tps   []kafkasrc.TopicPartition
	tpsAt time.Time
	// lastListing is the offsets the last plan used, lastLimited whether a
	// cap cut that plan's ranges, and reused whether it was planned with the
	// listing before it (nextListing).
	lastListing         *listing
	lastLimited, reused bool
	name                string
	spec                *sluicev1.JobSpec
	specVersion         int64
	incarnation         string             // of the job: names its Kafka sink identities
	store               *offsetstore.Store // fenced by leadership
	dispatcher          *dispatcher
	admins              *kafkasrc.AdminPool
	policy              kafkasrc.Policy // the operator's, checked before the job runs
	keep                int64
	keepBytes           int64
	logger              hclog.Logger
	hooks               Hooks
	message             string // last message written to the job record
	now                 func() time.Time
	// estimator is the backpressure estimator (nil when off) and rate its
	// latest estimate in records per second over the job (0: none yet).
	estimator *pidEstimator
	rate      float64
	// mirror hands committed offsets to the goroutine that copies them to
	// the job's Kafka consumer group (nil for the transactional sink, which
	// commits them in its transactions).
	mirror chan *sluicev1.CommittedOffsets
	// metrics are the job's series (nil: none, in tests).
	metrics *jobMetrics
	// agg is the aggregate state across batches (nil: the job keeps none).
	agg *aggState
	// updates writes the update stream (jobspec.UpdateStream), made on
	// first use; fenced once its first transaction committed.
	updates *kafkasrc.Sinks
	fenced  bool
}

// Hooks let tests stop the lifecycle at its failure points. Each hook may
// return an error to abort the batch there, as a crash would.
type Hooks struct {
	BeforePlanLog   func(b *sluicev1.Batch) error
	AfterPlanLogged func(b *sluicev1.Batch) error
	// AfterDispatch runs once every task of the batch was sent to a worker.
	AfterDispatch func(b *sluicev1.Batch) error
	BeforeCommit  func(b *sluicev1.Batch) error
	AfterCommit   func(b *sluicev1.Batch) error
	// BeforeUpdateCommit runs before a batch's update stream transaction
	// commits (a failpoint).
	BeforeUpdateCommit func(batchID int64)
}

func (r *jobRunner) interval() time.Duration {
	if d := r.spec.GetBatchInterval().AsDuration(); d > 0 {
		return d
	}
	return time.Second
}

func (r *jobRunner) cluster() kafkasrc.Cluster { return jobspec.Source(r.spec) }

// run executes batches until ctx ends or the job fails. A failed job is
// recorded as FAILED; losing leadership returns the store's ErrConflict.
func (r *jobRunner) run(ctx context.Context) error {
	err := r.loop(ctx)
	if errors.Is(err, errJobFailed) {
		r.logger.Error("job failed", "error", err)
		if uerr := r.updateJob(ctx, func(j *sluicev1.Job) {
			j.State = sluicev1.JobState_JOB_STATE_FAILED
			j.Message = err.Error()
		}); uerr != nil {
			return uerr
		}
		return nil
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (r *jobRunner) loop(ctx context.Context) error {
	// A job stored before the policy, or under a looser one, fails here
	// alone, before any Kafka client is made for it.
	if err := CheckPolicy(r.spec, r.policy); err != nil {
		return jobFailure("%v", err)
	}
	var prevTime time.Time
	nextID := int64(1)
	if !jobspec.Transactional(r.spec) || jobspec.UpdateStream(r.spec) {
		// Mirroring runs beside the batches: a thousand partitions' group
		// commit would otherwise delay every next batch.
		mctx, stop := context.WithCancel(ctx)
		r.mirror = make(chan *sluicev1.CommittedOffsets, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.runMirror(mctx)
		}()
		defer func() {
			stop()
			<-done
		}()
	}

	// Recover: a PLANNED batch is re-run with its logged ranges.
	last, err := retry(ctx, r, "read last batch", func(ctx context.Context) (offsetstore.Versioned[*sluicev1.Batch], error) {
		v, err := r.store.LastBatch(ctx, r.name)
		if errors.Is(err, offsetstore.ErrNotFound) {
			return v, nil
		}
		return v, err
	})
	if err != nil {
		return err
	}
	offs, err := r.loadOffsets(ctx)
	if err != nil {
		return err
	}
	if r.agg, err = r.loadState(ctx); err != nil {
		return err
	}
	defer r.closeUpdates()
	if err := r.catchUpUpdates(ctx, offs.Value.GetBatchId()); err != nil {
		return err
	}
	r.estimator = estimatorFor(r.spec, r.interval())
	if b := last.Value; b != nil {
		nextID = b.GetId() + 1
		prevTime = b.GetBatchTime().AsTime()
		if b.GetState() == sluicev1.BatchState_BATCH_STATE_COMMITTED {
			// A new leader goes on at the speed the job last had, not at
			// the initial rate.
			r.observe(b)
		}
		if b.GetState() == sluicev1.BatchState_BATCH_STATE_PLANNED {
			r.logger.Info("re-running planned batch", "batch", b.GetId(), "ranges", len(b.GetRanges()))
			rev, err := retry(ctx, r, "check planned batch", func(ctx context.Context) (int64, error) {
				return r.recheckPlanned(ctx, b, last.ModRevision)
			})
			if err != nil {
				return err
			}
			if offs, err = r.execute(ctx, b, func() (int64, error) { return rev, nil }, offs); err != nil {
				return err
			}
		}
	}

	// The next batch's listing, asked while a batch runs, and the last
	// batch's commit when it runs beside the next batch (pipelined); the
	// loop owns both.
	var ahead *listingAhead
	var pending *pendingCommit
	defer func() {
		ahead.stop()
		if pending != nil {
			_, _ = pending.wait()
		}
	}()
	for {
		now := r.now()
		bt := nextBatchTime(prevTime, r.interval(), now)
		if bt.After(now) && startsEarly(r.lastLimited, r.spec) {
			bt = now
		}
		if bt.After(now) {
			// On schedule: nothing to overlap the commit with.
			offs, err = r.landed(ctx, pending, offs)
			if pending = nil; err != nil {
				return err
			}
		}
		if wait := bt.Sub(r.now()); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		prevTime = bt
		planStart := time.Now()
		listed, running := r.nextListing(ahead)
		if !running {
			ahead = nil
		}
		p, err := retry(ctx, r, "plan", func(ctx context.Context) (planned, error) {
			l := listed
			listed = nil // a retry asks Kafka again
			return r.plan(ctx, offs.Value, l)
		})
		r.planTook = time.Since(planStart)
		if err != nil {
			return err
		}
		if len(p.ranges) == 0 && len(p.losses) == 0 && !r.windowDue(bt) {
			continue
		}
		b := &sluicev1.Batch{
			Job: r.name, Id: nextID, BatchTime: timestamppb.New(bt),
			State: sluicev1.BatchState_BATCH_STATE_PLANNED, Ranges: p.ranges, DataLoss: p.losses, Cap: p.cap,
		}
		if h := r.hooks.BeforePlanLog; h != nil {
			if err := h(b); err != nil {
				return err
			}
		}
		logged, err := r.logPlan(ctx, b, pending.revision(offs.ModRevision))
		if err != nil {
			return err
		}
		if ahead == nil {
			ahead = r.listAhead(ctx, bt, b, offs.Value)
		}
		f, err := r.runBatch(ctx, b, logged, offs.Value)
		if err == nil {
			offs, err = r.landed(ctx, pending, offs)
			pending = nil
		}
		if err != nil {
			_, _ = logged() // the log's goroutine ends before the runner does
			return err
		}
		if r.pipelined(f) {
			// The next batch is planned and run while this one commits.
			r.observe(f.committed)
			pending = r.commitAsync(ctx, f, offs)
			offs = offsets{Value: f.next} // its revision: pending's
		} else if offs, err = r.commit(ctx, f, offs); err != nil {
			return err
		}
		nextID++
	}
}

// recheckPlanned applies the data loss policy to a planned batch about to
// be re-run: Kafka may have deleted part of its ranges since it was planned
// (the job was stopped, or down, past the retention). The same ranges are
// re-run unless that happened; then the job fails, or (fail_on_data_loss
// false) the ranges start at the log start and the skipped offsets are
// recorded in the batch, which is written back before it runs.
func (r *jobRunner) recheckPlanned(ctx context.Context, b *sluicev1.Batch, rev int64) (int64, error) {
	admin, err := r.admins.Get(r.cluster())
	if err != nil {
		return 0, err
	}
	tps := make([]kafkasrc.TopicPartition, 0, len(b.GetRanges()))
	for _, rg := range b.GetRanges() {
		tps = append(tps, kafkasrc.TopicPartition{Topic: rg.GetTopic(), Partition: rg.GetPartition()})
	}
	earliest, err := admin.EarliestOffsets(ctx, tps)
	if err != nil {
		return 0, err
	}
	kept, losses := cutDeleted(b, toKeyMap(earliest))
	if len(losses) == 0 {
		return rev, nil
	}
	if r.failOnDataLoss() {
		l := losses[0]
		return 0, jobFailure("data loss on %s/%d: %s (set source.fail_on_data_loss false to skip lost offsets)", l.GetTopic(), l.GetPartition(), l.GetReason())
	}
	b.Ranges = kept
	b.DataLoss = mergeLosses(append(b.DataLoss, losses...))
	r.logger.Warn("planned batch lost offsets to retention; skipping them", "batch", b.GetId(), "losses", len(losses))
	return r.store.UpdatePlan(ctx, b, rev)
}

// deletedUnder looks, once a task of b failed for good, for offsets Kafka
// deleted under the batch since it was planned (retention ran between the
// plan and the read, and the task met offset out of range). Then the data
// loss policy applies as to a re-run (recheckPlanned): the job fails naming
// the loss, or the batch, its ranges cut at the log start and the loss
// recorded, is logged again, and rerun says to run it again (logged then
// returns its new plan revision).
func (r *jobRunner) deletedUnder(ctx context.Context, b *sluicev1.Batch, logged *func() (int64, error)) (rerun bool, err error) {
	rev, err := (*logged)()
	if err != nil {
		return false, err
	}
	next, err := retry(ctx, r, "check the failed batch's offsets", func(ctx context.Context) (int64, error) {
		return r.recheckPlanned(ctx, b, rev)
	})
	if err != nil || next == rev {
		return false, err
	}
	*logged = func() (int64, error) { return next, nil }
	return true, nil
}

// loadOffsets reads the committed offsets, resolving and recording the
// starting offsets of a new job first.
func (r *jobRunner) loadOffsets(ctx context.Context) (offsetstore.Versioned[*sluicev1.CommittedOffsets], error) {
	return retry(ctx, r, "load offsets", func(ctx context.Context) (offsetstore.Versioned[*sluicev1.CommittedOffsets], error) {
		v, err := r.store.Offsets(ctx, r.name)
		if !errors.Is(err, offsetstore.ErrNotFound) {
			return v, err
		}
		admin, err := r.admins.Get(r.cluster())
		if err != nil {
			return v, err
		}
		tps, err := r.partitions(ctx, admin, nil)
		if err != nil {
			return v, err
		}
		offs, err := resolveStart(ctx, admin, r.spec.GetSource().GetStartingOffsets(), tps)
		if err != nil {
			return v, err
		}
		if err := r.store.InitOffsets(ctx, r.name, offs); err != nil {
			return v, err
		}
		r.logger.Info("starting offsets resolved", "partitions", len(offs.Offsets))
		return r.store.Offsets(ctx, r.name)
	})
}

func toKeyMap(m map[kafkasrc.TopicPartition]int64) map[partitionKey]int64 {
	out := make(map[partitionKey]int64, len(m))
	for tp, off := range m {
		out[partitionKey{tp.Topic, tp.Partition}] = off
	}
	return out
}

// partitions lists the partitions of the job's topics. A topic that does
// not exist is waited for (retried) unless the job has read it before
// (committed holds offsets of it): then it was deleted, which is data loss.
func (r *jobRunner) partitions(ctx context.Context, admin *kafkasrc.Admin, committed *sluicev1.CommittedOffsets) ([]kafkasrc.TopicPartition, error) {
	seen := map[string]bool{}
	for _, po := range committed.GetOffsets() {
		seen[po.GetTopic()] = true
	}
	// One metadata request for every topic; only when one of them is
	// unknown are they asked one by one, to tell which.
	topics := r.spec.GetSource().GetTopics()
	if all, err := admin.Partitions(ctx, topics); err == nil {
		var tps []kafkasrc.TopicPartition
		for _, topic := range topics {
			for _, p := range all[topic] {
				tps = append(tps, kafkasrc.TopicPartition{Topic: topic, Partition: p})
			}
		}
		return tps, nil
	} else if !errors.Is(err, kafkasrc.ErrUnknownTopic) {
		return nil, err
	}
	var tps []kafkasrc.TopicPartition
	for _, topic := range topics {
		parts, err := admin.Partitions(ctx, []string{topic})
		if errors.Is(err, kafkasrc.ErrUnknownTopic) && seen[topic] {
			if r.failOnDataLoss() {
				return nil, jobFailure("data loss: topic %q was deleted after the job read it (set source.fail_on_data_loss false to go on without it)", topic)
			}
			r.logger.Warn("topic deleted, skipping it", "topic", topic)
			continue
		}
		if errors.Is(err, kafkasrc.ErrUnknownTopic) {
			return nil, fmt.Errorf("topic %q does not exist (yet): %w", topic, err)
		}
		if err != nil {
			return nil, err
		}
		for _, p := range parts[topic] {
			tps = append(tps, kafkasrc.TopicPartition{Topic: topic, Partition: p})
		}
	}
	return tps, nil
}

func (r *jobRunner) failOnDataLoss() bool {
	f := r.spec.GetSource().FailOnDataLoss
	return f == nil || *f
}

// resolveStart resolves starting offsets (a new job's, or a reset's) on every partition.
func resolveStart(ctx context.Context, admin *kafkasrc.Admin, so *sluicev1.StartingOffsets, tps []kafkasrc.TopicPartition) (*sluicev1.CommittedOffsets, error) {
	var start map[partitionKey]int64
	if ts := so.GetTimestamp(); ts != nil {
		byTime, err := admin.OffsetsForTimes(ctx, tps, ts.AsTime())
		if err != nil {
			return nil, err
		}
		start = toKeyMap(byTime)
	} else {
		earliest, latest, err := offsetsOf(ctx, admin, tps)
		if err != nil {
			return nil, err
		}
		start = startingOffsets(so, toKeyMap(earliest), toKeyMap(latest))
	}
	offs := &sluicev1.CommittedOffsets{}
	for pk, off := range start {
		offs.Offsets = append(offs.Offsets, &sluicev1.PartitionOffset{Topic: pk.Topic, Partition: pk.Partition, Offset: off})
	}
	sortOffsets(offs.Offsets)
	return offs, nil
}

// planned is one batch's plan.
type planned struct {
	ranges []*sluicev1.OffsetRange
	losses []*sluicev1.DataLoss
	cap    *sluicev1.BatchCap
}

// plan asks Kafka for the earliest and latest offsets of every partition,
// discovering new ones (which start at their earliest offset), applies the
// data loss policy, and cuts the batch's ranges. ahead, when not nil, is
// that listing, asked while the previous batch ran (listAhead).
func (r *jobRunner) plan(ctx context.Context, offs *sluicev1.CommittedOffsets, ahead *listing) (planned, error) {
	admin, err := r.admins.Get(r.cluster())
	if err != nil {
		return planned{}, err
	}
	// The partitions are listed at most every metadataMaxAge, and then
	// with the offsets of those the job knows, at once: planning waits for
	// one round trip, and for a second only when partitions were added or
	// a topic went away.
	l := ahead
	if l == nil {
		fresh := r.tps == nil || time.Since(r.tpsAt) >= metadataMaxAge
		listed := r.list(ctx, admin, offs, fresh)
		l = &listed
	}
	r.listTook, r.offsetsTook = l.listTook, l.offsetsTook
	if l.tpsErr != nil {
		return planned{}, l.tpsErr
	}
	fresh := l.tps != nil
	if fresh {
		r.tps, r.tpsAt = l.tps, l.tpsAt
	}
	tps, earliest, latest := r.tps, l.earliest, l.latest
	if err := l.offsetsErr; err != nil {
		// A topic deleted since: ask for the partitions there are.
		if !fresh {
			listedAt := time.Now()
			if tps, err = r.partitions(ctx, admin, offs); err != nil {
				return planned{}, err
			}
			r.tps, r.tpsAt = tps, listedAt
		}
		if earliest, latest, err = offsetsOf(ctx, admin, tps); err != nil {
			return planned{}, err
		}
	}
	var added []kafkasrc.TopicPartition
	for _, tp := range tps {
		if _, ok := latest[tp]; !ok {
			added = append(added, tp)
		}
	}
	if len(added) > 0 {
		e, l, err := offsetsOf(ctx, admin, added)
		if err != nil {
			return planned{}, err
		}
		maps.Copy(earliest, e)
		maps.Copy(latest, l)
	}
	committed := committedLookup(offs)
	states := make([]partitionState, 0, len(tps))
	for _, tp := range tps {
		pk := partitionKey{tp.Topic, tp.Partition}
		from, ok := committed(pk)
		if !ok {
			from = earliest[tp]
			r.logger.Info("new partition", "topic", tp.Topic, "partition", tp.Partition, "from", from)
		}
		states = append(states, partitionState{partitionKey: pk, From: from, Earliest: earliest[tp], Latest: latest[tp]})
	}
	states, losses := findDataLoss(states)
	if len(losses) > 0 && r.failOnDataLoss() {
		l := losses[0]
		return planned{}, jobFailure("data loss on %s/%d: %s (set source.fail_on_data_loss false to skip lost offsets)",
			l.GetTopic(), l.GetPartition(), l.GetReason())
	}
	ranges, bc, err := planRanges(states, r.limits())
	if err != nil {
		return planned{}, jobFailure("%v", err)
	}
	// Without tps: planning with it again (nextListing) leaves the
	// partitions as listed.
	r.lastListing, r.lastLimited, r.reused = &listing{earliest: earliest, latest: latest}, bc.GetLimited(), ahead != nil && ahead.reused
	r.metrics.planned(states, bc)
	return planned{ranges: ranges, losses: losses, cap: bc}, nil
}

// metadataMaxAge is how often planning lists the job's partitions: a
// partition added to a topic is read within it. Between listings a batch
// asks only for the offsets of the partitions it knows (as Spark's direct
// stream, which sees new partitions when its consumer's metadata refreshes).
const metadataMaxAge = time.Second

// offsetsOf asks for the earliest and latest offsets of tps, both at once.
func offsetsOf(ctx context.Context, admin *kafkasrc.Admin, tps []kafkasrc.TopicPartition) (earliest, latest map[kafkasrc.TopicPartition]int64, err error) {
	var earliestErr error
	got := make(chan struct{})
	go func() {
		defer close(got)
		earliest, earliestErr = admin.EarliestOffsets(ctx, tps)
	}()
	latest, err = admin.LatestOffsets(ctx, tps)
	<-got
	if err != nil {
		return nil, nil, err
	}
	if earliestErr != nil {
		return nil, nil, earliestErr
	}
	return earliest, latest, nil
}

// limits are the caps of the next batch: the static ones, and the
// backpressure estimate or, before there is one, the initial rate.
func (r *jobRunner) limits() limits {
	lim := r.spec.GetLimits()
	out := limits{
		Interval:            r.interval(),
		MaxRatePerPartition: lim.GetMaxRatePerPartition(),
		MaxRecordsPerBatch:  lim.GetMaxRecordsPerBatch(),
		MinRatePerPartition: lim.GetMinRatePerPartition(),
	}
	switch initial := lim.GetInitialRate(); {
	case r.estimator != nil && r.rate > 0:
		out.Rate, out.RateSource = r.rate, sluicev1.CapSource_CAP_SOURCE_ESTIMATE
	case r.estimator != nil && initial == 0:
		out.Rate, out.RateSource = defaultInitialRate, sluicev1.CapSource_CAP_SOURCE_INITIAL
	case initial > 0 && r.rate == 0:
		// Without backpressure an explicit initial rate still caps the
		// first batch, as its name says.
		out.Rate, out.RateSource = float64(initial), sluicev1.CapSource_CAP_SOURCE_INITIAL
	}
	return out
}

// observe feeds a committed batch to the backpressure estimator. Without
// backpressure the first batch still ends the initial rate.
func (r *jobRunner) observe(b *sluicev1.Batch) {
	m := b.GetMetrics()
	if r.estimator == nil {
		r.rate = -1
		return
	}
	end := b.GetCommitTime().AsTime().UnixMilli()
	rate, ok := r.estimator.compute(end, m.GetRecordsIn(),
		m.GetProcessingTime().AsDuration().Milliseconds(), m.GetSchedulingDelay().AsDuration().Milliseconds())
	if !ok && r.rate <= 0 {
		rate, ok = r.estimator.measured()
	}
	if ok {
		r.rate = rate
		r.logger.Debug("backpressure rate", "batch", b.GetId(), "records_per_second", int64(rate))
	}
}

// logPlan logs b's plan in etcd and returns how to wait for its revision.
// A job with a Kafka sink logs it before any task runs: what its tasks
// write may commit in Kafka, so a re-run after a crash must read the same
// ranges. Other jobs commit their results with their offsets in one etcd
// transaction, so their tasks run while the plan is logged (a re-planned
// batch is as good as the logged one) and only the commit waits for it.
func (r *jobRunner) logPlan(ctx context.Context, b *sluicev1.Batch, offsetsRev func() (int64, error)) (func() (int64, error), error) {
	log := func() (int64, error) {
		offsRev, err := offsetsRev()
		if err != nil {
			return 0, err
		}
		rev, err := r.store.LogPlan(ctx, b, offsRev)
		if err != nil {
			return 0, fmt.Errorf("batch %d: %w", b.GetId(), err)
		}
		if h := r.hooks.AfterPlanLogged; h != nil {
			if err := h(b); err != nil {
				return 0, err
			}
		}
		return rev, nil
	}
	if r.spec.GetSink().GetKafka() != nil {
		rev, err := log()
		if err != nil {
			return nil, err
		}
		return func() (int64, error) { return rev, nil }, nil
	}
	type result struct {
		rev int64
		err error
	}
	done := make(chan result, 1)
	go func() { // ends with LogPlan, bounded by ctx
		rev, err := log()
		done <- result{rev, err}
	}()
	var once sync.Once
	var res result
	return func() (int64, error) {
		once.Do(func() { res = <-done })
		return res.rev, res.err
	}, nil
}

// execute runs a logged batch's tasks and commits it.
func (r *jobRunner) execute(ctx context.Context, b *sluicev1.Batch, logged func() (int64, error), offs offsets) (offsets, error) {
	f, err := r.runBatch(ctx, b, logged, offs.Value)
	if err != nil {
		return offs, err
	}
	return r.commit(ctx, f, offs)
}

// runBatch runs a logged batch's tasks and gathers what its commit writes:
// its results, and the offsets after it (from prev, those before it).
func (r *jobRunner) runBatch(ctx context.Context, b *sluicev1.Batch, logged func() (int64, error), prev *sluicev1.CommittedOffsets) (*finished, error) {
	start := r.now()
	lim := r.spec.GetLimits()
	timeout := lim.GetTaskTimeout().AsDuration()
	if timeout <= 0 {
		timeout = time.Minute
	}
	tl := taskLimits{maxAttempts: int(lim.GetMaxTaskAttempts()), maxRetries: int(lim.GetMaxTaskRetries())}
	if tl.maxAttempts <= 0 {
		tl.maxAttempts = 4
	}
	if tl.maxRetries <= 0 {
		tl.maxRetries = defaultTaskRetries
	}
	// Splitting is decided again when a planned batch is re-run: the
	// batch's ranges, not its tasks, are what is logged and committed.
	// Packing small ranges follows consistent placement only: fixed and
	// brokers placement choose a worker per partition. Only the workers
	// with the job's Go processors count: no other runs its tasks.
	workers, transactional := r.dispatcher.liveWorkersWith(jobspec.Processors(r.spec)), jobspec.PerPartitionTasks(r.spec)
	mode := r.spec.GetPlacement().GetMode()
	consistent := mode == sluicev1.PlacementMode_PLACEMENT_MODE_UNSPECIFIED || mode == sluicev1.PlacementMode_PLACEMENT_MODE_CONSISTENT
	pieces := packRanges(splitRanges(b.GetRanges(), lim.GetMaxRecordsPerTask(), totalSlots(workers), !transactional), workers, consistent && !transactional)
	tasks := make([]*sluicev1.Task, len(pieces))
	for i, rg := range pieces {
		tasks[i] = &sluicev1.Task{
			Key:             &sluicev1.TaskKey{Job: r.name, BatchId: b.GetId(), Index: int32(i)},
			Range:           rg.OffsetRange,
			Ranges:          rg.ranges,
			Piece:           rg.piece,
			Spec:            r.spec,
			SpecVersion:     r.specVersion,
			Timeout:         durationpb.New(timeout),
			Incarnation:     r.incarnation,
			WatermarkUnixMs: r.watermark(),
		}
	}
	dispatched := func() {
		if h := r.hooks.AfterDispatch; h != nil {
			_ = h(b)
		}
	}
	out, err := r.dispatcher.runTasks(ctx, tasks, tl, r.taskPolicy(ctx, tasks), func(msg string) { r.setMessage(ctx, msg) }, dispatched)
	var tf *taskFailure
	if errors.As(err, &tf) {
		rerun, rerr := r.deletedUnder(ctx, b, &logged)
		if rerr != nil {
			return nil, rerr
		}
		if rerun {
			return r.runBatch(ctx, b, logged, prev)
		}
		return nil, jobFailure("batch %d: %v", b.GetId(), tf)
	}
	if err != nil {
		return nil, err
	}

	m := &sluicev1.BatchMetrics{Tasks: int32(len(tasks)), TaskAttempts: int32(out.attempts), SpeculativeTasks: int32(out.speculative)}
	var aggs [][]*sluicev1.KeyAggregate
	var records []*sluicev1.OutputRecord
	for _, res := range out.results {
		m.RecordsIn += res.GetRecordsIn()
		m.RecordsOut += res.GetRecordsOut()
		m.RecordsFailed += res.GetRecordsFailed()
		m.RecordsDeadLettered += res.GetRecordsDeadLettered()
		m.RecordsLate += res.GetRecordsLate()
		aggs = append(aggs, res.GetAggregates())
		records = append(records, res.GetRecords()...)
	}
	var result *sluicev1.BatchResult
	var commitState *sluicev1.AggregateState
	var nextState window.State
	if r.spec.GetAggregate() != nil {
		result = &sluicev1.BatchResult{Job: r.name, BatchId: b.GetId(), Aggregates: steps.Merge(aggs...)}
		if r.agg != nil {
			if nextState, result.Windows, err = r.foldState(b, result.Aggregates, out.results); err != nil {
				return nil, err
			}
			commitState = nextState.Encode()
			if r.spec.GetAggregate().GetRunning() {
				result.Totals = changedTotals(nextState.Totals, result.Aggregates)
			}
		}
	} else if len(records) > 0 {
		result = &sluicev1.BatchResult{Job: r.name, BatchId: b.GetId(), Records: records}
	}

	done := r.now()
	batchTime := b.GetBatchTime().AsTime()
	m.ProcessingTime = durationpb.New(done.Sub(start))
	m.SchedulingDelay = durationpb.New(max(start.Sub(batchTime), 0))
	m.TotalDelay = durationpb.New(max(done.Sub(batchTime), 0))
	committed := &sluicev1.Batch{
		Job: b.GetJob(), Id: b.GetId(), BatchTime: b.GetBatchTime(), Ranges: b.GetRanges(),
		State: sluicev1.BatchState_BATCH_STATE_COMMITTED, Metrics: m, CommitTime: timestamppb.New(done),
		DataLoss: b.GetDataLoss(), Cap: b.GetCap(),
	}
	if h := r.hooks.BeforeCommit; h != nil {
		if err := h(committed); err != nil {
			return nil, err
		}
	}
	return &finished{
		b: b, committed: committed, result: result, state: commitState, nextState: nextState, tasks: len(tasks),
		logged: logged, next: advanceOffsets(prev, b.GetDataLoss(), b.GetRanges(), b.GetId()),
		planTook: r.planTook, listTook: r.listTook, offsetsTook: r.offsetsTook, reused: r.reused,
	}, nil
}

// ms is d in milliseconds with a fraction, for the logs.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// mirrorInterval is the least time between two commits of a job's offsets
// to its Kafka consumer group. A consumer's auto-commit runs every 5s by
// default; committing every batch of a fast job on many partitions costs
// the brokers an offset write per partition and batch (at 1,024 partitions
// and 50 batches a second, 51,200 a second) for lag figures nobody reads
// that often.
const mirrorInterval = time.Second

// runMirror mirrors the offsets the loop hands over until ctx ends, at most
// once per mirrorInterval, the newest offsets at each time.
func (r *jobRunner) runMirror(ctx context.Context) {
	var last map[kafkasrc.TopicPartition]int64
	for {
		select {
		case <-ctx.Done():
			return
		case offs := <-r.mirror:
			started := time.Now()
			last = r.mirrorOffsets(ctx, offs, last)
			t := time.NewTimer(mirrorInterval - time.Since(started))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// mirrorOffsets commits to the job's Kafka consumer group the offsets that
// differ from last (what the previous call mirrored), so that
// kafka-consumer-groups, kcat and lag exporters see the job's progress, and
// returns what the group now holds. etcd stays the truth; this is best
// effort. (A transactional Kafka sink commits the group offsets inside its
// transactions instead.)
func (r *jobRunner) mirrorOffsets(ctx context.Context, offs *sluicev1.CommittedOffsets, last map[kafkasrc.TopicPartition]int64) map[kafkasrc.TopicPartition]int64 {
	admin, err := r.admins.Get(r.cluster())
	if err != nil {
		return last
	}
	all, changed := changedOffsets(offs, last)
	if len(changed) == 0 {
		return last
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	group := jobspec.GroupID(r.name, r.incarnation)
	if err := admin.CommitGroupOffsets(ctx, group, changed); err != nil {
		if ctx.Err() == nil {
			r.logger.Warn("could not mirror offsets to the Kafka consumer group", "group", group, "error", err)
		}
		return nil // commit them all next time
	}
	return all
}

// changedOffsets returns offs as a map, and the offsets in it that last
// does not hold.
func changedOffsets(offs *sluicev1.CommittedOffsets, last map[kafkasrc.TopicPartition]int64) (all, changed map[kafkasrc.TopicPartition]int64) {
	all = make(map[kafkasrc.TopicPartition]int64, len(offs.GetOffsets()))
	changed = make(map[kafkasrc.TopicPartition]int64)
	for _, po := range offs.GetOffsets() {
		tp := kafkasrc.TopicPartition{Topic: po.GetTopic(), Partition: po.GetPartition()}
		all[tp] = po.GetOffset()
		if at, ok := last[tp]; !ok || at != po.GetOffset() {
			changed[tp] = po.GetOffset()
		}
	}
	return all, changed
}

// attemptTimeout bounds one attempt of a planning step.
const attemptTimeout = 3 * time.Second

// retry runs fn until it succeeds, backing off on transient errors (Kafka
// or etcd unreachable) and showing them in the job's message meanwhile.
// Failures of the job itself and lost leadership end the retries.
func retry[T any](ctx context.Context, r *jobRunner, what string, fn func(ctx context.Context) (T, error)) (T, error) {
	backoff := 100 * time.Millisecond
	for {
		// Each attempt has its own deadline, so that an unreachable Kafka
		// shows in the job's message within seconds, not after the client's
		// own timeouts.
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := fn(actx)
		cancel()
		if err == nil {
			return v, nil
		}
		if errors.Is(err, errJobFailed) || errors.Is(err, offsetstore.ErrConflict) || ctx.Err() != nil {
			return v, err
		}
		if errors.Is(err, kafkasrc.ErrPermanent) { // e.g. wrong SASL credentials
			return v, fmt.Errorf("%w: %s: %w", errJobFailed, what, err)
		}
		r.logger.Warn("retrying", "step", what, "error", err, "backoff", backoff)
		r.setMessage(ctx, fmt.Sprintf("%s: %v (retrying)", what, err))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// updateJob applies fn to the stored job record, retrying on concurrent edits.
func (r *jobRunner) updateJob(ctx context.Context, fn func(*sluicev1.Job)) error {
	for range 5 {
		v, err := r.store.Job(ctx, r.name)
		if err != nil {
			return err
		}
		fn(v.Value)
		v.Value.UpdateTime = timestamppb.New(r.now())
		err = r.store.UpdateJob(ctx, v.Value, v.ModRevision)
		if !errors.Is(err, offsetstore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("update job %s: %w", r.name, offsetstore.ErrConflict)
}

// setMessage records a condition holding the job back (or clears it); it is
// best effort, since it only informs.
func (r *jobRunner) setMessage(ctx context.Context, msg string) {
	if msg == r.message {
		return
	}
	r.message = msg
	if err := r.updateJob(ctx, func(j *sluicev1.Job) { j.Message = msg }); err != nil && ctx.Err() == nil {
		r.logger.Warn("could not record job message", "error", err)
	}
}
