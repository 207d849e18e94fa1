package kafkasrc

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/record"
)

// Pool lends consumers that read the ranges of many partitions at once:
// the read path of a task carrying several small ranges, whose cost grows
// with the records read, not with the partitions.
//
// A pool consumer is sticky: it keeps its partitions assigned between
// reads, and the records it polled past a range's end (a fetch returns what
// the partition has, not what the range asks for) are kept for the read
// that continues there. A batch's tasks of a worker carry the same
// partitions batch after batch (the coordinator packs them by the worker
// they hash to), so the next read of a partition usually finds its records
// already fetched: it costs no seek and no round trip to the broker. A
// partition no read asked for lately is unassigned.
//
// Idle consumers are kept per (cluster, consumer group), at most maxIdle in
// all; a read takes the idle one of its key that has most of its
// partitions. It is
// safe for concurrent use.
type Pool struct {
	maxIdle int
	logger  hclog.Logger
	stats   StatsSink // nil: statistics off
	// librdkafka makes every consumer on librdkafka (tests of both kinds).
	librdkafka bool

	mu     sync.Mutex
	idle   map[poolKey][]*pooled
	closed bool
	// settling holds per key the consumers topping up after a read
	// (topUp), and settled signals (with mu) when one is done: a read
	// waits for one that has more of its partitions than any idle one.
	settling map[poolKey][]*pooled
	settled  *sync.Cond
	// closing counts consumers being closed in the background; Close waits.
	closing sync.WaitGroup
}

// rangeConsumer is a consumer of the pool: it reads the ranges of one read
// at a time and keeps its partitions, and what it fetched of them past the
// ranges, for the reads after.
type rangeConsumer interface {
	// assigned reports whether the consumer has tp assigned.
	assigned(tp TopicPartition) bool
	read(ctx context.Context, ranges []Range, fn func(*record.Record) error) (ReadStats, error)
	// smallRead reports whether the last read, of parts partitions, was
	// small against what the consumer keeps of a partition: only then is
	// it topped up after the read.
	smallRead(parts int) bool
	// topUp moves what the consumer has fetched to its stashes, without
	// waiting, after a read that delivered read records.
	topUp(read int64) error
	close()
}

// pooled is a consumer of the pool with the time it was put back.
type pooled struct {
	rangeConsumer
	idleSince time.Time // guarded by Pool.mu
}

type poolKey struct {
	cluster string
	group   string
}

// NewPool returns an empty pool keeping at most maxIdle idle consumers (at
// least 1), sending their statistics to WithStats (the only option it uses).
func NewPool(maxIdle int, logger hclog.Logger, opts ...Option) *Pool {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	var o options
	for _, f := range opts {
		f(&o)
	}
	p := &Pool{maxIdle: max(maxIdle, 1), logger: logger, stats: o.stats, idle: map[poolKey][]*pooled{}, settling: map[poolKey][]*pooled{}}
	p.settled = sync.NewCond(&p.mu)
	return p
}

// poolIdleTimeout: an idle consumer no read took for this long is closed
// by Run. The job it read for may be gone, and a sticky consumer keeps
// fetching its partitions.
const poolIdleTimeout = time.Minute

// Run closes the consumers left idle for poolIdleTimeout until ctx ends.
func (p *Pool) Run(ctx context.Context) error {
	sweepIdle(ctx, poolIdleTimeout, 4, p.closeIdle, p.logger, "pooled consumers")
	return nil
}

// closeIdle closes the idle consumers put back before t and returns how
// many.
func (p *Pool) closeIdle(t time.Time) int {
	p.mu.Lock()
	var old []*pooled
	for key, cs := range p.idle {
		kept := cs[:0]
		for _, c := range cs {
			if c.idleSince.Before(t) {
				old = append(old, c)
			} else {
				kept = append(kept, c)
			}
		}
		clear(cs[len(kept):])
		if len(kept) == 0 {
			delete(p.idle, key)
		} else {
			p.idle[key] = kept
		}
	}
	p.mu.Unlock()
	for _, c := range old {
		c.close()
	}
	return len(old)
}

// Idle returns the number of idle consumers, once those topping up after
// a read are back.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.settling) > 0 {
		p.settled.Wait()
	}
	n := 0
	for _, cs := range p.idle {
		n += len(cs)
	}
	return n
}

// Close closes the idle consumers; a consumer in use is closed when its
// read returns. ReadRanges fails with ErrClosed after Close.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.settled.Broadcast()
	var all []*pooled
	for _, cs := range p.idle {
		all = append(all, cs...)
	}
	p.idle = map[poolKey][]*pooled{}
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
	p.closing.Wait()
}

// ReadRanges delivers every data record of the ranges (of distinct
// partitions of cl) to fn: in offset order within a partition, partitions
// interleaved. It returns when every partition's position reaches its
// range's Until, with the same gap rules as Cache.Read. An error names the
// range it happened in.
func (p *Pool) ReadRanges(ctx context.Context, cl Cluster, groupID string, ranges []Range, fn func(*record.Record) error) (st ReadStats, err error) {
	var todo []Range
	seen := map[TopicPartition]bool{}
	for _, r := range ranges {
		if r.Topic == "" || r.From < 0 || r.From > r.Until || r.Partition < 0 {
			return ReadStats{}, fmt.Errorf("read %s: %w", r, ErrInvalidRange)
		}
		tp := TopicPartition{r.Topic, r.Partition}
		if seen[tp] {
			return ReadStats{}, fmt.Errorf("read %s: partition listed twice: %w", r, ErrInvalidRange)
		}
		seen[tp] = true
		if r.From < r.Until {
			todo = append(todo, r)
		}
	}
	if groupID == "" {
		return ReadStats{}, fmt.Errorf("read %d ranges: empty group id: %w", len(ranges), ErrInvalidRange)
	}
	if len(todo) == 0 {
		return ReadStats{}, nil
	}
	if err := ctx.Err(); err != nil {
		return ReadStats{}, fmt.Errorf("read %d ranges: %w", len(todo), err)
	}
	key := poolKey{cluster: cl.Key(), group: groupID}
	c, err := p.get(cl, key, todo)
	if err != nil {
		return ReadStats{}, fmt.Errorf("read %d ranges: %w", len(todo), err)
	}
	if fc, ok := c.rangeConsumer.(*fetchConsumer); ok {
		if missing := fc.missing(todo); len(missing) > 0 {
			p.handOver(key, fc, missing)
		}
	}
	ok := false // until read returns: a panic in fn drops the consumer too
	defer func() {
		switch {
		case ok && c.smallRead(len(todo)):
			p.settle(key, c, st.Records)
		case ok:
			p.put(key, c, true)
		default:
			p.put(key, c, false)
		}
	}()
	st, err = c.read(ctx, todo, fn)
	ok = err == nil
	return st, err
}

// settle tops c up (topUp, at most n records) in the background, off the
// read's path, then puts it back.
func (p *Pool) settle(key poolKey, c *pooled, n int64) {
	p.mu.Lock()
	p.settling[key] = append(p.settling[key], c)
	p.closing.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.closing.Done()
		err := c.topUp(n)
		if err != nil {
			p.logger.Warn("pooled consumer dropped", "error", err)
		}
		// Out of settling and back in idle at once: put back first, c
		// could be taken, read and settling again before it left
		// settling, which then lost both entries of it, and the read
		// after, finding c nowhere, made a second consumer.
		p.mu.Lock()
		if cs := slices.DeleteFunc(p.settling[key], func(o *pooled) bool { return o == c }); len(cs) > 0 {
			p.settling[key] = cs
		} else {
			delete(p.settling, key)
		}
		closeNow := p.putLocked(key, c, err == nil)
		p.settled.Broadcast()
		p.mu.Unlock()
		if closeNow {
			c.close()
		}
	}()
}

// get takes the idle consumer of key that has most of the ranges'
// partitions assigned, or makes one. A consumer topping up that has more
// of them is waited for (a millisecond or so): taking another would
// assign its partitions twice over, and the consumers' partition sets
// would drift apart batch after batch.
func (p *Pool) get(cl Cluster, key poolKey, ranges []Range) (*pooled, error) {
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		best, bestHave := mostAssigned(p.idle[key], ranges)
		if _, settlingHave := mostAssigned(p.settling[key], ranges); settlingHave > bestHave || (best < 0 && settlingHave >= 0) {
			p.settled.Wait()
			continue
		}
		if best < 0 {
			p.mu.Unlock()
			c, err := p.newConsumer(cl, key.group)
			if err != nil {
				return nil, err
			}
			return &pooled{rangeConsumer: c}, nil
		}
		cs := p.idle[key]
		c := cs[best]
		p.idle[key] = append(cs[:best], cs[best+1:]...)
		p.mu.Unlock()
		return c, nil
	}
}

// handOver moves to c the partitions of ranges that idle consumers of key
// have, with their stashes. A worker's tasks are packed anew when
// backpressure resizes their ranges (125, 166, then 250 ranges a task on
// the 1,024-partition benchmark), so a partition often comes to another
// consumer than the one holding its stash, which fetched it again while
// the stash waited, a whole record batch when the topic's are large.
func (p *Pool) handOver(key poolKey, c *fetchConsumer, ranges []Range) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.idle[key] {
		oc, ok := o.rangeConsumer.(*fetchConsumer)
		if !ok {
			continue
		}
		for _, r := range ranges {
			tp := TopicPartition{r.Topic, r.Partition}
			if c.parts[tp] != nil {
				continue
			}
			if pr := oc.release(tp); pr != nil {
				c.adopt(pr)
			}
		}
	}
}

// mostAssigned returns the index in cs of the consumer having most of the
// ranges' partitions assigned (the first of equals), and how many; -1, -1
// when cs is empty. Of more than assignedSample ranges it counts that many,
// evenly spaced: a packed task carries the same partitions batch after
// batch, so one consumer has them all or most, and counting all 1,700 of
// a 10,000-partition task's ranges in every idle consumer, under the
// pool's lock, was a tenth of the workers' time.
func mostAssigned(cs []*pooled, ranges []Range) (best, have int) {
	best, have = -1, -1
	step := max(len(ranges)/assignedSample, 1)
	for i, c := range cs {
		n := 0
		for j := 0; j < len(ranges); j += step {
			r := &ranges[j]
			if c.assigned(TopicPartition{r.Topic, r.Partition}) {
				n++
			}
		}
		if n > have {
			best, have = i, n
		}
	}
	return best, have
}

// assignedSample is how many of a read's ranges mostAssigned counts.
const assignedSample = 64

// put returns c to the pool after a read, still assigned; a failed read
// or a closed pool closes it instead. Past maxIdle idle consumers (over
// all clusters and groups: every job has a group of its own), the one idle
// longest is closed.
func (p *Pool) put(key poolKey, c *pooled, ok bool) {
	p.mu.Lock()
	closeNow := p.putLocked(key, c, ok)
	p.mu.Unlock()
	if closeNow {
		c.close()
	}
}

// putLocked is put with p.mu held; it returns true when the caller is to
// close c once it has unlocked (the pool is closed).
func (p *Pool) putLocked(key poolKey, c *pooled, ok bool) (closeNow bool) {
	if p.closed {
		return true
	}
	if !ok {
		p.closeLaterLocked(c)
		return false
	}
	c.idleSince = time.Now()
	p.idle[key] = append(p.idle[key], c)
	n := 0
	for _, cs := range p.idle {
		n += len(cs)
	}
	for ; n > p.maxIdle; n-- {
		var oldKey poolKey
		oldest := -1
		for k, cs := range p.idle {
			for i, o := range cs {
				if oldest < 0 || o.idleSince.Before(p.idle[oldKey][oldest].idleSince) {
					oldKey, oldest = k, i
				}
			}
		}
		cs := p.idle[oldKey]
		p.closeLaterLocked(cs[oldest])
		if cs = append(cs[:oldest], cs[oldest+1:]...); len(cs) == 0 {
			delete(p.idle, oldKey)
		} else {
			p.idle[oldKey] = cs
		}
	}
	return false
}

// closeLaterLocked closes c in the background: closing a consumer takes
// up to ~100 ms. Close waits for it.
func (p *Pool) closeLaterLocked(c *pooled) {
	p.closing.Add(1)
	go func() {
		defer p.closing.Done()
		c.close()
	}()
}

// OnFranz reports whether the pool's consumers for cl are franz-go's.
func (p *Pool) OnFranz(cl Cluster) bool {
	reason, err := kgoConnects(cl)
	return err == nil && reason == "" && !p.librdkafka
}

// newConsumer makes a consumer for reads of cl: on franz-go when it
// connects to cl the way librdkafka would (see kgoConnects), else on
// librdkafka.
func (p *Pool) newConsumer(cl Cluster, groupID string) (rangeConsumer, error) {
	reason, err := kgoConnects(cl)
	if err != nil {
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	if reason != "" || p.librdkafka {
		p.logger.Debug("pool consumer on librdkafka", "bootstrap", cl.Bootstrap, "reason", reason)
		return newMultiConsumer(cl, groupID, p.logger, p.stats)
	}
	return newFetchConsumer(cl, p.logger, p.stats)
}
