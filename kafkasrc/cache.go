package kafkasrc

import (
	"container/list"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/record"
)

// Range is an offset range of one partition: the records with
// From <= offset < Until (Until is the next offset to read).
type Range struct {
	Topic     string
	Partition int32
	From      int64
	Until     int64
}

func (r Range) String() string {
	return fmt.Sprintf("%s/%d [%d, %d)", r.Topic, r.Partition, r.From, r.Until)
}

// ReadStats counts the work of one Read.
type ReadStats struct {
	// Records is the number of data records delivered to the callback.
	Records int64
	// Polls is the number of records and events taken from the consumer
	// (a librdkafka poll takes one; a franz-go poll many).
	Polls int64
	// Stashed is how many of Records a pool consumer had polled during
	// earlier reads (see Pool).
	Stashed int64
	// Dropped is how many records a pool consumer polled and dropped
	// since the read before, for partitions it had paused or whose stash
	// was full: records fetched twice.
	Dropped int64
	// Cached is true when the read used the cache's consumer for the
	// partition, false when it used a temporary one (the cached consumer was
	// busy with another read).
	Cached bool
	// Reused is true when the consumer was already positioned at From (no
	// seek): the data it had prefetched was reused.
	Reused bool
}

// cacheKey identifies a cached consumer.
//
// The consumer group is part of the key (as in Spark's consumer cache): two
// jobs reading the same partition at different positions each keep their own
// consumer instead of seeking one back and forth.
type cacheKey struct {
	cluster   string
	group     string
	topic     string
	partition int32
}

// Cache is a worker's LRU cache of range-reading consumers keyed by (cluster,
// consumer group, topic, partition). It is safe for concurrent use.
//
// A consumer stays assigned to its partition between reads and remembers
// where it is, so that the next read of the partition that starts where the
// previous one ended reuses the records the consumer has prefetched. A
// consumer serves one read at a time: a read of a partition whose consumer
// is busy uses a temporary consumer, closed after the read (as Spark does).
//
// Its consumers' prefetch shares a memory budget (WithMemory, default
// DefaultConsumerMemory): each consumer may hold budget/capacity bytes of
// fetched records, at least MinConsumerShare, half in its queue and half in
// one fetch (see prefetchLimits). A cluster's properties that ask for more are lowered to that
// (and logged): the budget is the worker's, which a job cannot know at
// submit, so a job runs the same on workers of any budget. A temporary
// consumer takes a share beyond the budget while it reads.
type Cache struct {
	capacity int
	share    int64 // prefetch bytes of each consumer
	logger   hclog.Logger
	stats    StatsSink // nil: statistics off

	mu      sync.Mutex
	entries map[cacheKey]*consumer
	lru     *list.List // of *consumer, most recently used first
	closed  bool

	// closing counts the consumers being closed in the background (closing
	// a librdkafka consumer takes ~100 ms, which a read should not wait
	// for). Add is called with mu held and closed false; Close waits.
	closing sync.WaitGroup

	// warned holds the cluster keys whose lowered properties were logged,
	// so that a job's partitions do not log one line each.
	warned map[string]bool
}

// maxWarned bounds Cache.warned; past it the set starts again.
const maxWarned = 256

// NewCache returns an empty cache that keeps at most capacity consumers
// (at least 1), their prefetch bounded by WithMemory (the only option it
// uses) and sending their statistics to WithStats. Consumers log to logger.
func NewCache(capacity int, logger hclog.Logger, opts ...Option) *Cache {
	if capacity < 1 {
		capacity = 1
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	o := options{memory: DefaultConsumerMemory}
	for _, f := range opts {
		f(&o)
	}
	return &Cache{
		capacity: capacity,
		share:    ConsumerShare(o.memory, capacity),
		logger:   logger,
		stats:    o.stats,
		entries:  make(map[cacheKey]*consumer),
		lru:      list.New(),
		warned:   map[string]bool{},
	}
}

// ConsumerShare is the prefetch memory of each consumer of a cache of
// capacity consumers with a budget of memory bytes: memory/capacity, at
// least MinConsumerShare.
func ConsumerShare(memory int64, capacity int) int64 {
	return max(memory/int64(max(capacity, 1)), MinConsumerShare)
}

// newConsumer creates a consumer for key with the cache's prefetch share,
// logging once per cluster the properties lowered to fit it.
func (c *Cache) newConsumer(cl Cluster, key cacheKey) (*consumer, error) {
	if err := ValidateProperties(cl.Properties); err != nil {
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	cm, clamped := consumerConfig(cl, key.group, c.share)
	if len(clamped) > 0 {
		c.mu.Lock()
		first := !c.warned[key.cluster]
		if first {
			if len(c.warned) >= maxWarned {
				clear(c.warned)
			}
			c.warned[key.cluster] = true
		}
		c.mu.Unlock()
		if first {
			c.logger.Warn("source properties lowered to the worker's consumer memory (--consumer-memory / --consumer-cache per consumer)",
				"bootstrap", cl.Bootstrap, "per_consumer_bytes", c.share, "lowered", strings.Join(clamped, ", "))
		}
	}
	withStats(cm, c.stats)
	return newConsumer(cl, key, cm, c.logger, c.stats)
}

// Share is the prefetch memory, in bytes, of each cached consumer.
func (c *Cache) Share() int64 { return c.share }

// Len returns the number of cached consumers.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Read delivers every data record of cl with r.From <= offset < r.Until, in
// offset order, to fn, and returns when the consumer's position reaches
// r.Until. Offsets may have gaps (transaction markers, aborted records under
// ReadCommitted, compaction): the number of records may be smaller than
// r.Until - r.From. A range with From == Until returns at once.
//
// groupID is the consumer's group.id (librdkafka requires one); the reader
// never joins the group and never commits offsets.
//
// The *record.Record given to fn, and its Headers slice, are reused for the
// next record: they, and Key and Value, are valid only during the call to fn
// (Key and Value are in fact Go slices owned by nobody else, but callers
// must not rely on it).
//
// An error from fn stops the read and is returned wrapped. A range that starts
// below the log start offset or beyond the end of the partition fails with
// ErrOffsetOutOfRange. Cancelling ctx stops the read within a poll interval
// with an error wrapping ctx.Err(). Any error drops the partition's cached
// consumer.
func (c *Cache) Read(ctx context.Context, cl Cluster, groupID string, r Range, fn func(*record.Record) error) (ReadStats, error) {
	if r.Topic == "" || r.From < 0 || r.From > r.Until || r.Partition < 0 {
		return ReadStats{}, fmt.Errorf("read %s: %w", r, ErrInvalidRange)
	}
	if groupID == "" {
		return ReadStats{}, fmt.Errorf("read %s: empty group id: %w", r, ErrInvalidRange)
	}
	if r.From == r.Until {
		return ReadStats{}, nil
	}
	if err := ctx.Err(); err != nil {
		return ReadStats{}, fmt.Errorf("read %s: %w", r, err)
	}
	key := cacheKey{cluster: cl.Key(), group: groupID, topic: r.Topic, partition: r.Partition}
	cons, cached, err := c.acquire(cl, key)
	if err != nil {
		return ReadStats{}, fmt.Errorf("read %s: %w", r, err)
	}
	failed := true // until read returns: a panic in fn drops the consumer too
	defer func() {
		if cached {
			c.release(cons, failed)
		} else {
			c.closeLater(cons)
		}
	}()
	stats, err := cons.read(ctx, r, fn)
	stats.Cached = cached
	failed = err != nil
	return stats, err
}

// acquire returns the cached consumer for key, marked in use, or a temporary
// consumer (cached false) when the cached one is busy.
func (c *Cache) acquire(cl Cluster, key cacheKey) (cons *consumer, cached bool, err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, false, ErrClosed
	}
	if e, ok := c.entries[key]; ok {
		if !e.inUse {
			e.inUse = true
			c.lru.MoveToFront(e.elem)
			c.mu.Unlock()
			return e, true, nil
		}
		c.mu.Unlock()
		cons, err := c.newConsumer(cl, key)
		if err != nil {
			return nil, false, err
		}
		return cons, false, nil
	}
	c.mu.Unlock()

	// Create outside the lock; another read may insert the same key
	// meanwhile, in which case ours is used as a temporary consumer.
	cons, err = c.newConsumer(cl, key)
	if err != nil {
		return nil, false, err
	}
	var evicted []*consumer
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cons.close()
		return nil, false, ErrClosed
	}
	if _, ok := c.entries[key]; ok {
		c.mu.Unlock()
		return cons, false, nil
	}
	cons.inUse = true
	cons.elem = c.lru.PushFront(cons)
	c.entries[key] = cons
	for c.lru.Len() > c.capacity {
		victim := c.lru.Back().Value.(*consumer)
		c.removeLocked(victim)
		if victim.inUse {
			victim.evicted = true // its reader closes it on release
		} else {
			evicted = append(evicted, victim)
		}
	}
	c.mu.Unlock()
	for _, v := range evicted {
		c.closeLater(v)
	}
	return cons, true, nil
}

// release returns a cached consumer after a read. failed drops it: a consumer
// whose read failed is in an unknown state.
func (c *Cache) release(cons *consumer, failed bool) {
	c.mu.Lock()
	cons.inUse = false
	cons.idleSince = time.Now()
	drop := failed || cons.evicted || c.closed
	if drop && c.entries[cons.key] == cons {
		c.removeLocked(cons)
	}
	c.mu.Unlock()
	if drop {
		c.closeLater(cons)
	}
}

// closeLater closes cons in the background, or at once when the cache is
// closed (Close is then waiting, or has returned).
func (c *Cache) closeLater(cons *consumer) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cons.close()
		return
	}
	c.closing.Add(1)
	c.mu.Unlock()
	go func() { // ends when the consumer is closed
		defer c.closing.Done()
		cons.close()
	}()
}

// removeLocked removes cons from the map and the LRU list. c.mu must be held.
func (c *Cache) removeLocked(cons *consumer) {
	if c.entries[cons.key] == cons {
		delete(c.entries, cons.key)
	}
	if cons.elem != nil {
		c.lru.Remove(cons.elem)
		cons.elem = nil
	}
}

// Close closes every idle cached consumer and waits for the consumers being
// closed in the background; a consumer in use is closed when its read
// returns. Read fails with ErrClosed after Close.
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	var idle []*consumer
	for _, e := range c.entries {
		e.elem = nil
		if !e.inUse {
			idle = append(idle, e)
		}
	}
	c.entries = make(map[cacheKey]*consumer)
	c.lru.Init()
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range idle {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.close()
		}()
	}
	wg.Wait()
	c.closing.Wait()
}
