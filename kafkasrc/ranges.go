package kafkasrc

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/record"
)

// Pool lends consumers that read the ranges of many partitions at once:
// the read path of a task carrying several small ranges, whose cost grows
// with the records read, not with the partitions. A consumer is assigned
// exactly the read's partitions at their start offsets and unassigned after
// it, so it keeps no position between reads (unlike the Cache's
// per-partition consumers, whose prefetch is worth keeping for big ranges).
// Idle consumers are kept per (cluster, consumer group), at most maxIdle of
// each. It is safe for concurrent use.
type Pool struct {
	maxIdle int
	logger  hclog.Logger

	mu     sync.Mutex
	idle   map[poolKey][]*multiConsumer
	closed bool
	// closing counts consumers being closed in the background; Close waits.
	closing sync.WaitGroup
}

type poolKey struct {
	cluster string
	group   string
}

// NewPool returns an empty pool keeping at most maxIdle idle consumers per
// cluster and group (at least 1).
func NewPool(maxIdle int, logger hclog.Logger) *Pool {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Pool{maxIdle: max(maxIdle, 1), logger: logger, idle: map[poolKey][]*multiConsumer{}}
}

// Idle returns the number of idle consumers.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
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
	var all []*multiConsumer
	for _, cs := range p.idle {
		all = append(all, cs...)
	}
	p.idle = map[poolKey][]*multiConsumer{}
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
func (p *Pool) ReadRanges(ctx context.Context, cl Cluster, groupID string, ranges []Range, fn func(*record.Record) error) (ReadStats, error) {
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
	c, err := p.get(cl, key)
	if err != nil {
		return ReadStats{}, fmt.Errorf("read %d ranges: %w", len(todo), err)
	}
	ok := false // until read returns: a panic in fn drops the consumer too
	defer func() { p.put(key, c, ok) }()
	st, err := c.read(ctx, todo, fn)
	ok = err == nil
	return st, err
}

func (p *Pool) get(cl Cluster, key poolKey) (*multiConsumer, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if cs := p.idle[key]; len(cs) > 0 {
		c := cs[len(cs)-1]
		p.idle[key] = cs[:len(cs)-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	return newMultiConsumer(cl, key.group, p.logger)
}

// put returns c to the pool after a read; a failed read, a full pool or a
// closed one closes it instead.
func (p *Pool) put(key poolKey, c *multiConsumer, ok bool) {
	if ok {
		// Unassigning drops whatever was prefetched past the ranges.
		if err := c.kc.Unassign(); err != nil {
			c.logger.Warn("unassign after read", "error", err)
			ok = false
		}
	}
	p.mu.Lock()
	if ok && !p.closed && len(p.idle[key]) < p.maxIdle {
		p.idle[key] = append(p.idle[key], c)
		p.mu.Unlock()
		return
	}
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.closing.Add(1)
	p.mu.Unlock()
	go func() { // closing a librdkafka consumer takes ~100 ms
		defer p.closing.Done()
		c.close()
	}()
}

// multiConsumer is one librdkafka consumer reading the ranges of one read.
type multiConsumer struct {
	logger    hclog.Logger
	kc        *kafka.Consumer
	logs      *logPump
	rec       record.Record
	hdrs      []record.Header
	closeOnce sync.Once
}

func newMultiConsumer(cl Cluster, groupID string, logger hclog.Logger) (*multiConsumer, error) {
	if err := ValidateProperties(cl.Properties); err != nil {
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	c := &multiConsumer{logger: logger, logs: newLogPump(logger)}
	cm, _ := consumerConfig(cl, groupID, multiConsumerShare)
	// A read ends with a fetch past its ranges in flight, which the broker
	// holds until fetch.wait.max.ms when there is no more data; librdkafka
	// sends no other fetch to that broker meanwhile, so the next read's
	// first fetch would wait for it. The ranges are planned below the
	// latest offsets, so a read rarely waits on the broker for data.
	cm["fetch.wait.max.ms"] = 1
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
		if err := closeKafkaConsumer(c.kc); err != nil {
			c.logger.Warn("close kafka consumer", "error", err)
		}
		c.logs.stop()
	})
}

// partRead is where one partition's read is.
type partRead struct {
	r     Range
	topic string // r.Topic, addressable for kafka.TopicPartition
	next  int64  // every offset below next is consumed
}

func (c *multiConsumer) read(ctx context.Context, ranges []Range, fn func(*record.Record) error) (ReadStats, error) {
	var st ReadStats
	parts := make(map[TopicPartition]*partRead, len(ranges))
	assign := make([]kafka.TopicPartition, 0, len(ranges))
	for _, r := range ranges {
		pr := &partRead{r: r, topic: r.Topic, next: r.From}
		parts[TopicPartition{r.Topic, r.Partition}] = pr
		assign = append(assign, kafka.TopicPartition{Topic: &pr.topic, Partition: r.Partition, Offset: kafka.Offset(r.From)})
	}
	if err := c.kc.Assign(assign); err != nil {
		return st, fmt.Errorf("read %d ranges: assign: %w", len(ranges), err)
	}
	remaining := len(parts)
	done := ctx.Done()
	for remaining > 0 {
		select {
		case <-done:
			pr := c.firstOpen(parts)
			return st, fmt.Errorf("read %s: at offset %d: %w", pr.r, pr.next, ctx.Err())
		default:
		}
		ev := c.kc.Poll(pollTimeoutMs)
		st.Polls++
		switch e := ev.(type) {
		case *kafka.Message:
			tp := e.TopicPartition
			pr := parts[TopicPartition{topicOf(tp), tp.Partition}]
			if pr == nil {
				continue // cannot happen: only the ranges' partitions are assigned
			}
			if tp.Error != nil {
				return st, readError(pr.r, pr.next, tp.Error)
			}
			if pr.next >= pr.r.Until {
				continue // prefetched past a finished range
			}
			off := int64(tp.Offset)
			if off < pr.next {
				return st, fmt.Errorf("read %s: polled offset %d below the position %d: %w", pr.r, off, pr.next, errUnexpectedOffset)
			}
			if off >= pr.r.Until {
				pr.next = off // past a gap at the end of the range
				remaining--
				continue
			}
			pr.next = off + 1
			if err := deliverRecord(&c.rec, &c.hdrs, pr.r, e, fn); err != nil {
				return st, err
			}
			st.Records++
			if pr.next >= pr.r.Until {
				remaining--
			}
		case nil:
			// The queue is empty: the positions now account for every
			// marker and aborted record consumed since the last record.
			n, err := c.advance(parts)
			if err != nil {
				return st, err
			}
			remaining -= n
		case kafka.Error:
			if failsRead(e) {
				pr := c.firstOpen(parts)
				return st, readError(pr.r, pr.next, e)
			}
			c.logger.Warn("kafka consumer error", "ranges", len(parts), "error", e, "code", e.Code())
		}
	}
	return st, nil
}

// advance moves the unfinished partitions to the consumer's positions and
// returns how many finished that way.
func (c *multiConsumer) advance(parts map[TopicPartition]*partRead) (int, error) {
	var open []kafka.TopicPartition
	for _, pr := range parts {
		if pr.next < pr.r.Until {
			open = append(open, kafka.TopicPartition{Topic: &pr.topic, Partition: pr.r.Partition})
		}
	}
	pos, err := c.kc.Position(open)
	if err != nil {
		pr := c.firstOpen(parts)
		return 0, fmt.Errorf("read %s: position after offset %d: %w", pr.r, pr.next, err)
	}
	finished := 0
	for _, p := range pos {
		pr := parts[TopicPartition{topicOf(p), p.Partition}]
		if pr == nil || p.Error != nil || int64(p.Offset) <= pr.next {
			continue
		}
		pr.next = int64(p.Offset)
		if pr.next >= pr.r.Until {
			finished++
		}
	}
	return finished, nil
}

// firstOpen is an unfinished partition, the lowest, for error messages.
func (c *multiConsumer) firstOpen(parts map[TopicPartition]*partRead) *partRead {
	var open []*partRead
	for _, pr := range parts {
		if pr.next < pr.r.Until {
			open = append(open, pr)
		}
	}
	if len(open) == 0 {
		for _, pr := range parts {
			open = append(open, pr)
		}
	}
	sort.Slice(open, func(i, j int) bool {
		if open[i].r.Topic != open[j].r.Topic {
			return open[i].r.Topic < open[j].r.Topic
		}
		return open[i].r.Partition < open[j].r.Partition
	})
	return open[0]
}

func topicOf(tp kafka.TopicPartition) string {
	if tp.Topic == nil {
		return ""
	}
	return *tp.Topic
}
