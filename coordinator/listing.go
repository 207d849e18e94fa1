package coordinator

import (
	"context"
	"time"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// listing is what planning a batch asks Kafka: the job's partitions, when
// they are listed afresh (see metadataMaxAge), and the earliest and latest
// offsets of the partitions the job has read.
type listing struct {
	// tps are the partitions listed at tpsAt; nil when they were not
	// listed (the runner's list stands) or listing them failed (tpsErr).
	tps    []kafkasrc.TopicPartition
	tpsAt  time.Time
	tpsErr error
	// earliest and latest are the offsets of the known partitions, or
	// offsetsErr (a topic deleted since, for one).
	earliest, latest map[kafkasrc.TopicPartition]int64
	offsetsErr       error
	// listTook and offsetsTook are the two requests' times, for the logs.
	listTook, offsetsTook time.Duration
	// reused: an earlier batch's listing, planned with again (nextListing).
	reused bool
}

// list asks Kafka for a batch's listing: the offsets of the partitions in
// committed and, when fresh, the partitions of the job's topics, both at
// once, so that planning waits for one round trip.
func (r *jobRunner) list(ctx context.Context, admin *kafkasrc.Admin, committed *sluicev1.CommittedOffsets, fresh bool) listing {
	var l listing
	known := make([]kafkasrc.TopicPartition, 0, len(committed.GetOffsets()))
	for _, po := range committed.GetOffsets() {
		known = append(known, kafkasrc.TopicPartition{Topic: po.GetTopic(), Partition: po.GetPartition()})
	}
	listed := make(chan struct{})
	if fresh {
		listedAt := time.Now()
		go func() { // ends with the request, bounded by ctx
			defer close(listed)
			l.tps, l.tpsErr = r.partitions(ctx, admin, committed)
			l.tpsAt, l.listTook = listedAt, time.Since(listedAt)
		}()
	} else {
		close(listed)
	}
	offsetsAt := time.Now()
	l.earliest, l.latest, l.offsetsErr = offsetsOf(ctx, admin, known)
	l.offsetsTook = time.Since(offsetsAt)
	<-listed
	return l
}

// listingAhead is the next batch's listing, asked while the current batch
// runs: a job behind its schedule (each batch takes longer than the
// interval) then plans its next batch without waiting for Kafka after the
// commit. As in Spark's direct stream, a batch's ranges end at the latest
// offsets seen at its batch time or later, not at its start.
type listingAhead struct {
	cancel context.CancelFunc
	done   chan struct{}
	l      listing
}

// listAhead starts listing, at the batch time after bt (now when that batch
// starts early, see startsEarly), for the batch after b, whose offsets b's
// commit will make next.
func (r *jobRunner) listAhead(ctx context.Context, bt time.Time, b *sluicev1.Batch, offs *sluicev1.CommittedOffsets) *listingAhead {
	admin, err := r.admins.Get(r.cluster())
	if err != nil {
		return nil // planning meets the error again
	}
	ctx, cancel := context.WithCancel(ctx)
	a := &listingAhead{cancel: cancel, done: make(chan struct{})}
	at := bt.Add(r.interval())
	if startsEarly(r.lastLimited, r.spec) {
		at = r.now() // the next batch starts when b is done
	}
	tpsKnown, tpsAt := r.tps != nil, r.tpsAt
	// Taken now: a batch whose task met deleted offsets gets new ranges
	// while it runs (deletedUnder); the slices themselves are not modified.
	ranges, losses, id := b.GetRanges(), b.GetDataLoss(), b.GetId()
	go func() { // owned by the runner's loop, which waits for it (wait)
		defer close(a.done)
		if wait := at.Sub(r.now()); wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-ctx.Done():
				a.l.offsetsErr = ctx.Err()
				return
			case <-t.C:
			}
		}
		next := advanceOffsets(offs, losses, ranges, id)
		a.l = r.list(ctx, admin, next, !tpsKnown || time.Since(tpsAt) >= metadataMaxAge)
	}()
	return a
}

// nextListing returns the listing to plan the next batch with, and whether
// a, the listing asked ahead for it, is still running (and should be kept
// for a later batch). That is a once it is done. While a is running, a job
// whose last batch a cap cut (it is behind: the cap, not the latest
// offsets, decides where its ranges end) plans with the offsets its last
// plan used instead of waiting: with thousands of partitions a busy broker
// answers in tens of milliseconds, which the workers would spend idle. Its
// ranges stay below offsets Kafka had, and the next plan uses a once done,
// so at most one listing is in flight.
func (r *jobRunner) nextListing(a *listingAhead) (l *listing, running bool) {
	if a != nil && !a.ready() && r.lastLimited && r.lastListing != nil {
		reused := *r.lastListing
		reused.reused = true
		return &reused, true
	}
	return a.wait(), false
}

// ready reports whether the listing is done.
func (a *listingAhead) ready() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// wait returns the listing once it is done; a listing that failed is not
// used (nil): planning lists again, and meets or handles the error there.
func (a *listingAhead) wait() *listing {
	if a == nil {
		return nil
	}
	<-a.done
	a.cancel()
	if a.l.tpsErr != nil || a.l.offsetsErr != nil {
		return nil
	}
	return &a.l
}

// stop abandons the listing and waits for its goroutine.
func (a *listingAhead) stop() {
	if a != nil {
		a.cancel()
		<-a.done
	}
}
