package kafkasrc

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/record"
)

// multiConsumer is one librdkafka consumer reading the ranges of one read
// at a time, and keeping its partitions between reads (see Pool).
type multiConsumer struct {
	logger    hclog.Logger
	kc        *kafka.Consumer
	logs      *logPump
	rec       record.Record
	hdrs      []record.Header
	closeOnce sync.Once
	stats     StatsSink // nil: statistics off

	// Owned by the read holding the consumer.
	parts      map[TopicPartition]*partRead // the assigned partitions
	reads      uint64                       // reads so far; partRead.lastRead
	stashBytes int64                        // the bytes of every partition's stash
	readBytes  int64                        // delivered by the last read (messageSize)
	dropped    int64                        // records dropped since the last read (ReadStats.Dropped)
}

func newMultiConsumer(cl Cluster, groupID string, logger hclog.Logger, stats StatsSink) (*multiConsumer, error) {
	if err := ValidateProperties(cl.Properties); err != nil {
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	c := &multiConsumer{logger: logger, logs: newLogPump(logger), parts: map[TopicPartition]*partRead{}, stats: stats}
	cm, _ := consumerConfig(cl, groupID, multiConsumerShare)
	withStats(cm, stats)
	// A fetch at the tail is held by the broker until data arrives or
	// fetch.wait.max.ms passes, and librdkafka sends no other fetch to that
	// broker meanwhile: a partition assigned or resumed by a read waits for
	// it. The ranges are planned below the latest offsets, so the wait is
	// short; it is not 1 ms because the consumer keeps fetching its
	// partitions between reads.
	cm["fetch.wait.max.ms"] = stickyFetchWaitMs
	if v, ok := userInt(cm, "max.partition.fetch.bytes"); !ok || v > poolPartitionFetchBytes {
		cm["max.partition.fetch.bytes"] = strconv.Itoa(poolPartitionFetchBytes)
	}
	c.logs.configure(cm)
	kc, err := newKafkaConsumer(&cm)
	if err != nil {
		c.logs.stop()
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	c.kc = kc
	return c, nil
}

func (c *multiConsumer) close() {
	c.closeOnce.Do(func() {
		if c.stats != nil {
			c.stats.Closed(c.kc.String())
		}
		if err := closeKafkaConsumer(c.kc); err != nil {
			c.logger.Warn("close kafka consumer", "error", err)
		}
		c.logs.stop()
	})
}

const (
	// stickyFetchWaitMs is fetch.wait.max.ms of a pool consumer: what a
	// partition sought or resumed may wait while the consumer's others are
	// at the tail, against the fetches an idle consumer sends (each names
	// every partition it has, and the broker looks at each).
	stickyFetchWaitMs = 25
	// stashLimit bounds the records a pool consumer keeps for later reads;
	// a partition gets its share of it, at most stashPartLimit. A partition
	// past that is paused until a read asks for it (librdkafka then
	// fetches it again from where the stash ends).
	stashLimit     = multiConsumerShare
	stashPartLimit = 1 << 20
	// stashPartMin is the least stash share of a partition: about 100
	// small records. A fetch brings a partition's whole record batches
	// (a producer batches up to 16 KiB by default), and a smaller share
	// keeps a fraction of them and fetches the rest again, batch after
	// batch: at 1,700 partitions a consumer (4.9 KiB shares, 30 records)
	// the refills of stashes running low together cost more than the reads.
	stashPartMin = 16 << 10
	// poolPartitionFetchBytes is max.partition.fetch.bytes of a pool
	// consumer. A fetch brings each partition up to this much; what the
	// stash has no room for is dropped when the partition is paused and
	// fetched again later, so a fetch far above a partition's stash share
	// is work thrown away (with 512 partitions the share is 16 KiB, and a
	// 4 MiB fetch per partition made the broker and librdkafka copy and
	// parse each record many times). Ranges read by the pool are small.
	poolPartitionFetchBytes = 64 << 10
	// After a read, up to topUpFactor times the records it read (at least
	// topUpMin) move from librdkafka's queue to the stashes (see topUp):
	// more than it read, as the partitions refilled ahead (refillAhead)
	// bring their stash shares at once.
	topUpFactor = 4
	topUpMin    = 256
	// refillPerRead is the least number of paused partitions a read
	// resumes ahead of need (see refillAhead).
	refillPerRead = 64
	// idleReads: a partition that none of its consumer's last idleReads
	// reads asked for is unassigned. maxAssigned bounds a consumer's
	// partitions; the least recently read go first.
	idleReads   = 8
	maxAssigned = 4096
	// advanceEvery: while records of other partitions keep the queue
	// busy, the positions of the open ranges are still looked at this
	// often, per 128 open ranges (a range ending in transaction markers
	// finishes only so; asking costs librdkafka a lookup per partition).
	advanceEvery = 5 * time.Millisecond
	// messageOverhead approximates what a kept message costs beyond its
	// key, value and headers.
	messageOverhead = 160
)

// partRead is one assigned partition of a multiConsumer: its partState
// and the records polled ahead of the reads.
type partRead struct {
	partState
	stash     []*kafka.Message
	stashSize int64
	// paused: the stash is full; librdkafka's position is next, or (lost,
	// a record arrived after the pause) past it, and the next read seeks.
	paused, lost bool
	// refilled: resumed by refillAhead and not paused since; once its
	// stash reaches the end of the partition it is paused (pauseCaughtUp).
	refilled bool
}

func (pr *partRead) tp(off int64) kafka.TopicPartition {
	return kafka.TopicPartition{Topic: &pr.topic, Partition: pr.partition, Offset: kafka.Offset(off)}
}

func messageSize(m *kafka.Message) int64 {
	n := int64(len(m.Key) + len(m.Value) + messageOverhead)
	for _, h := range m.Headers {
		n += int64(len(h.Key) + len(h.Value))
	}
	return n
}

// position readies the read's partitions: a new one is assigned at From,
// one whose stream is elsewhere is sought, one paused whose stash ends
// before the range does is resumed and sought; the partitions no recent
// read asked for are unassigned.
func (c *multiConsumer) position(ranges []Range) ([]*partRead, error) {
	c.reads++
	var assign, seek, resume []kafka.TopicPartition
	prs := make([]*partRead, 0, len(ranges))
	for _, r := range ranges {
		key := TopicPartition{r.Topic, r.Partition}
		pr := c.parts[key]
		switch {
		case pr == nil:
			pr = &partRead{partState: partState{topic: r.Topic, partition: r.Partition, consumed: r.From, next: r.From}}
			c.parts[key] = pr
			assign = append(assign, pr.tp(r.From))
		case r.From < pr.consumed || r.From > pr.next:
			c.dropStash(pr, len(pr.stash))
			pr.consumed, pr.next, pr.lost = r.From, r.From, false
			seek = append(seek, pr.tp(r.From))
		default:
			drop := 0
			for drop < len(pr.stash) && int64(pr.stash[drop].TopicPartition.Offset) < r.From {
				drop++ // read by an earlier batch elsewhere
			}
			c.dropStash(pr, drop)
			pr.consumed = r.From
			if pr.lost || (pr.paused && pr.next < r.Until) {
				// Sought, not only resumed: see refillAhead.
				pr.lost = false
				seek = append(seek, pr.tp(pr.next))
			}
		}
		// A partition whose stash covers the range stays paused: resuming
		// every partition of every read made librdkafka fetch them all
		// again each read, and the stashes ran dry all at once.
		if pr.paused && pr.next < r.Until {
			pr.paused = false
			resume = append(resume, pr.tp(0))
		}
		pr.r, pr.reading, pr.lastRead = r, true, c.reads
		prs = append(prs, pr)
	}
	if err := c.evict(); err != nil {
		return nil, err
	}
	if len(assign) > 0 {
		if err := c.kc.IncrementalAssign(assign); err != nil {
			return nil, fmt.Errorf("read %d ranges: assign %d partitions: %w", len(ranges), len(assign), err)
		}
	}
	if len(resume) > 0 {
		if err := c.kc.Resume(resume); err != nil {
			return nil, fmt.Errorf("read %d ranges: resume %d partitions: %w", len(ranges), len(resume), err)
		}
	}
	if err := c.seek(seek); err != nil {
		return nil, fmt.Errorf("read %d ranges: %w", len(ranges), err)
	}
	return prs, nil
}

// seek moves the consumer's position of each of tps to its offset.
func (c *multiConsumer) seek(tps []kafka.TopicPartition) error {
	if len(tps) == 0 {
		return nil
	}
	res, err := c.kc.SeekPartitions(tps)
	if err != nil {
		return fmt.Errorf("seek %d partitions: %w", len(tps), err)
	}
	for _, p := range res {
		if p.Error != nil {
			return fmt.Errorf("seek %s/%d to offset %d: %w", topicOf(p), p.Partition, p.Offset, p.Error)
		}
	}
	return nil
}

// evict unassigns the partitions that no read of the last idleReads asked
// for, and the least recently read beyond maxAssigned.
func (c *multiConsumer) evict() error {
	gone := evictable(c.parts, c.reads)
	if len(gone) == 0 {
		return nil
	}
	tps := make([]kafka.TopicPartition, len(gone))
	for i, pr := range gone {
		tps[i] = pr.tp(0)
		c.dropStash(pr, len(pr.stash))
		delete(c.parts, TopicPartition{pr.topic, pr.partition})
	}
	if err := c.kc.IncrementalUnassign(tps); err != nil {
		return fmt.Errorf("unassign %d idle partitions: %w", len(tps), err)
	}
	return nil
}

// dropStash forgets the first n records of pr's stash.
func (c *multiConsumer) dropStash(pr *partRead, n int) {
	for _, m := range pr.stash[:n] {
		size := messageSize(m)
		pr.stashSize -= size
		c.stashBytes -= size
	}
	clear(pr.stash[:n])
	pr.stash = pr.stash[n:]
	if len(pr.stash) == 0 {
		pr.stash = nil
	}
}

// keep stashes m, polled for pr outside a read of it, or drops it when pr
// is paused (the next read seeks back to where the stash ends). A
// partition's stash holds its share (partShare); past it, pr is paused at
// once, so that librdkafka drops what it holds of pr without handing it
// over and fetches no more.
func (c *multiConsumer) keep(pr *partRead, m *kafka.Message) error {
	off := int64(m.TopicPartition.Offset)
	if pr.paused {
		if off >= pr.next {
			pr.lost = true
		}
		c.dropped++
		return nil
	}
	if err := pr.belowNext(off); err != nil {
		return err
	}
	size := messageSize(m)
	pr.stash = append(pr.stash, m)
	pr.stashSize += size
	c.stashBytes += size
	pr.next = off + 1
	if pr.stashSize >= c.partShare() || c.stashBytes >= c.stashCap() {
		// Pausing is synchronous and makes librdkafka resume at the
		// offset after m: nothing polled is lost.
		if err := c.kc.Pause([]kafka.TopicPartition{pr.tp(0)}); err != nil {
			return fmt.Errorf("%s/%d: pause: %w", pr.topic, pr.partition, err)
		}
		pr.paused, pr.refilled = true, false
	}
	return nil
}

func (c *multiConsumer) read(ctx context.Context, ranges []Range, fn func(*record.Record) error) (ReadStats, error) {
	var st ReadStats
	prs, err := c.position(ranges)
	if err != nil {
		return st, err
	}
	defer func() {
		for _, pr := range prs {
			pr.reading = false
		}
	}()
	st, err = c.readPrepared(ctx, prs, fn)
	st.Dropped, c.dropped = c.dropped, 0
	if err != nil {
		return st, err
	}
	if !c.smallRead(len(prs)) {
		return st, nil
	}
	return st, c.refillAhead(prs)
}

// smallRead reports whether the last read, of parts partitions, was small
// against the stashes: at most half a partition's share on average. Only
// then are the stashes kept ahead of the reads (refillAhead, topUp): a
// larger read polls for itself, and refilling or topping up ahead of it
// would fill the stashes with a fraction of it, pause the rest and fetch
// it again (doubling the memory librdkafka holds).
func (c *multiConsumer) smallRead(parts int) bool {
	return c.readBytes/int64(max(parts, 1)) <= c.partShare()/2
}

// topUp moves records that librdkafka has already fetched from its queue
// into the stashes, without waiting: up to topUpFactor times as many as
// the read before it delivered (at least topUpMin). The pool does it
// after each small read (smallRead), in the background (Pool.settle). A
// read that finds its records in the stash polls nothing, so without this
// the queue would be drained only by the first read whose stash ran dry,
// all at once (tens of thousands of records on a consumer of hundreds of
// partitions, which made that one read a hundred times slower than the
// others); with it the queue drains in step with the reads.
func (c *multiConsumer) topUp(read int64) error {
	if err := c.moveFetched(max(topUpFactor*read, topUpMin)); err != nil {
		return err
	}
	return c.pauseCaughtUp()
}

// moveFetched moves up to n fetched records to the stashes (topUp).
func (c *multiConsumer) moveFetched(n int64) error {
	for range n {
		if c.stashBytes >= c.stashCap() {
			// The stashes are full for what comes next: moving more
			// would only convert records to drop them.
			return nil
		}
		ev := c.kc.Poll(0)
		switch e := ev.(type) {
		case nil:
			return nil
		case *kafka.Message:
			tp := e.TopicPartition
			pr := c.parts[TopicPartition{topicOf(tp), tp.Partition}]
			if pr == nil || tp.Error != nil {
				continue // the read that asks for it meets the error again
			}
			if err := c.keep(pr, e); err != nil {
				return fmt.Errorf("top up: %w", err)
			}
		case *kafka.Stats:
			deliverStats(c.stats, e)
		case kafka.Error:
			c.logger.Warn("kafka consumer error", "error", e, "code", e.Code())
		}
	}
	return nil
}

// caughtUp reports whether pr's stash reaches the partition's high
// watermark as librdkafka last saw it (no request): a refill would fetch
// nothing.
func (c *multiConsumer) caughtUp(pr *partRead) bool {
	_, high, err := c.kc.GetWatermarkOffsets(pr.topic, pr.partition)
	return err == nil && high > 0 && pr.next >= high
}

// pauseCaughtUp pauses, in one call, the partitions refilled ahead whose
// stash now reaches the end of their log. Left running, each is fetched at
// the tail again and again for a read that is still served by the stash,
// and librdkafka's fetcher, which looks at every partition of the consumer
// each time it wakes, took half the machine at 1,700 partitions a consumer.
// A read that needs more than the stash resumes the partition (position).
func (c *multiConsumer) pauseCaughtUp() error {
	var done []*partRead
	for _, pr := range c.parts {
		if pr.refilled && !pr.paused && c.caughtUp(pr) {
			done = append(done, pr)
		}
	}
	if len(done) == 0 {
		return nil
	}
	tps := make([]kafka.TopicPartition, len(done))
	for i, pr := range done {
		tps[i] = pr.tp(0)
		pr.paused, pr.refilled = true, false
	}
	if err := c.kc.Pause(tps); err != nil {
		return fmt.Errorf("pause %d partitions at their end: %w", len(tps), err)
	}
	return nil
}

// partShare is the stash a partition may hold: its share of stashLimit,
// at least stashPartMin and at most stashPartLimit.
func (c *multiConsumer) partShare() int64 {
	return min(max(stashLimit/int64(max(len(c.parts), 1)), stashPartMin), stashPartLimit)
}

// stashCap bounds what the stashes of all the consumer's partitions hold:
// stashLimit, or stashPartMin a partition past 512 partitions (16 MiB at
// 1,024, 64 MiB at the most a consumer is assigned, maxAssigned).
func (c *multiConsumer) stashCap() int64 {
	return max(stashLimit, int64(len(c.parts))*stashPartMin)
}

// refillAhead resumes, after a read, paused partitions of it whose stash
// fell below half its share, the emptiest first: their next records are
// fetched between reads and moved to the stashes by topUp. When many
// partitions run low together (they advance in step), their refills spread
// over the reads left before the emptiest runs dry, at least
// refillPerRead a read, instead of making one read fetch and convert them
// all (at 2,000 partitions a consumer, that read took 300-400 ms against
// 2-3 ms for the others).
func (c *multiConsumer) refillAhead(prs []*partRead) error {
	share := c.partShare()
	var low []*partRead
	for _, pr := range prs {
		if pr.paused && !pr.lost && pr.stashSize < share/2 && !c.caughtUp(pr) {
			low = append(low, pr)
		}
	}
	if len(low) == 0 {
		return nil
	}
	slices.SortFunc(low, func(a, b *partRead) int { return cmp.Compare(a.stashSize, b.stashSize) })
	// Partitions read in step run low together: resume enough of them per
	// read that all are refilled before the emptiest runs dry.
	emptiest := low[0]
	low = low[:refillCount(len(low), int64(len(emptiest.stash)), emptiest.r.Until-emptiest.r.From)]
	tps := make([]kafka.TopicPartition, len(low))
	for i, pr := range low {
		pr.paused, pr.refilled = false, true
		tps[i] = pr.tp(0)
	}
	if err := c.kc.Resume(tps); err != nil {
		return fmt.Errorf("resume %d partitions: %w", len(tps), err)
	}
	// A seek to where the stash ends makes librdkafka fetch them now: a
	// resumed partition alone waits for its fetcher's next wakeup, up to a
	// second when the consumer's other partitions are paused.
	for i, pr := range low {
		tps[i] = pr.tp(pr.next)
	}
	return c.seek(tps)
}

// refillCount is how many of low partitions running low to resume after a
// read: all of them over the reads left before the emptiest, holding
// stashed records and reading perRead a read, runs dry; at least
// refillPerRead.
func refillCount(low int, stashed, perRead int64) int {
	readsLeft := max(stashed/max(perRead, 1), 1)
	return min(low, max(refillPerRead, int((int64(low)+readsLeft-1)/readsLeft)))
}

// readPrepared is read once the partitions are positioned.
func (c *multiConsumer) readPrepared(ctx context.Context, prs []*partRead, fn func(*record.Record) error) (ReadStats, error) {
	var st ReadStats
	c.readBytes = 0
	remaining := len(prs)
	// The stash first: records polled by earlier reads.
	for _, pr := range prs {
		n := 0
		for _, m := range pr.stash {
			if int64(m.TopicPartition.Offset) >= pr.r.Until {
				break
			}
			if err := deliverRecord(&c.rec, &c.hdrs, pr.r, m, fn); err != nil {
				return st, err
			}
			c.readBytes += messageSize(m)
			st.Records++
			st.Stashed++
			n++
		}
		c.dropStash(pr, n)
		pr.consumed = pr.r.Until
		if len(pr.stash) > 0 || pr.next >= pr.r.Until {
			remaining-- // the rest of the range is a gap
		}
	}
	done := ctx.Done()
	lastAdvance := time.Now()
	for remaining > 0 {
		select {
		case <-done:
			pr := firstOpen(prs)
			return st, fmt.Errorf("read %s: at offset %d: %w", pr.r, pr.next, ctx.Err())
		default:
		}
		ev := c.kc.Poll(pollTimeoutMs)
		st.Polls++
		switch e := ev.(type) {
		case *kafka.Message:
			tp := e.TopicPartition
			pr := c.parts[TopicPartition{topicOf(tp), tp.Partition}]
			if pr == nil {
				continue // unassigned since it was fetched
			}
			if !pr.open() {
				if tp.Error != nil {
					continue // an error of a partition no read is on: the read that asks for it meets it again
				}
				if err := c.keep(pr, e); err != nil {
					return st, fmt.Errorf("read %d ranges: %w", len(prs), err)
				}
				break
			}
			if tp.Error != nil {
				return st, readError(pr.r, pr.next, tp.Error)
			}
			off := int64(tp.Offset)
			if off < pr.next {
				return st, fmt.Errorf("read %s: polled offset %d below the position %d: %w", pr.r, off, pr.next, errUnexpectedOffset)
			}
			if off >= pr.r.Until {
				// Past a gap at the end of the range: the next read's.
				pr.next = off
				remaining--
				if err := c.keep(pr, e); err != nil {
					return st, fmt.Errorf("read %d ranges: %w", len(prs), err)
				}
				break
			}
			pr.next = off + 1
			if err := deliverRecord(&c.rec, &c.hdrs, pr.r, e, fn); err != nil {
				return st, err
			}
			c.readBytes += messageSize(e)
			st.Records++
			if pr.next >= pr.r.Until {
				remaining--
			}
		case *kafka.Stats:
			deliverStats(c.stats, e)
		case kafka.Error:
			if failsRead(e) {
				pr := firstOpen(prs)
				return st, readError(pr.r, pr.next, e)
			}
			c.logger.Warn("kafka consumer error", "ranges", len(prs), "error", e, "code", e.Code())
		}
		// An empty queue means the positions account for every marker and
		// aborted record consumed since the last record; a busy one is
		// looked at now and then.
		if ev == nil || time.Since(lastAdvance) >= advanceEvery*time.Duration(1+remaining/128) {
			n, err := c.advance(prs)
			if err != nil {
				return st, err
			}
			remaining -= n
			lastAdvance = time.Now()
		}
	}
	return st, nil
}

// advance moves the open ranges to the consumer's positions and returns
// how many finished that way.
func (c *multiConsumer) advance(prs []*partRead) (int, error) {
	var open []kafka.TopicPartition
	for _, pr := range prs {
		if pr.open() {
			open = append(open, pr.tp(0))
		}
	}
	if len(open) == 0 {
		return 0, nil
	}
	pos, err := c.kc.Position(open)
	if err != nil {
		pr := firstOpen(prs)
		return 0, fmt.Errorf("read %s: position after offset %d: %w", pr.r, pr.next, err)
	}
	finished := 0
	for _, p := range pos {
		pr := c.parts[TopicPartition{topicOf(p), p.Partition}]
		if pr == nil || !pr.open() || p.Error != nil || int64(p.Offset) <= pr.next {
			continue
		}
		pr.next = int64(p.Offset)
		if pr.next >= pr.r.Until {
			finished++
		}
	}
	return finished, nil
}

func topicOf(tp kafka.TopicPartition) string {
	if tp.Topic == nil {
		return ""
	}
	return *tp.Topic
}

func (c *multiConsumer) assigned(tp TopicPartition) bool { return c.parts[tp] != nil }
