package kafkasrc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/record"
)

// Producer writes records to a cluster. It is safe for concurrent use.
//
// Each caller's deliveries are tracked apart: Write waits for its own
// messages and returns their errors only, whatever other goroutines write
// with the same producer meanwhile. Produce and ProduceMessage are
// asynchronous; their delivery errors surface on Flush.
type Producer struct {
	cluster Cluster
	logger  hclog.Logger
	kp      *kafka.Producer
	logs    *logPump
	events  sync.WaitGroup // the goroutine reading kp.Events()
	done    chan struct{}  // closed when that goroutine ends

	// def tracks the messages of Produce and ProduceMessage, for Flush.
	def *tracker

	mu     sync.Mutex
	fatal  error           // a fatal producer error: the producer is unusable
	topics map[string]bool // topics seen to exist, see checkTopics

	closed    atomic.Bool
	closeOnce sync.Once
}

// NewProducer connects a producer to the cluster c. props are extra
// producer properties (acks, linger.ms, compression.type, ...) applied over
// c.Properties; the bootstrap servers and go.* properties are refused.
// Properties that librdkafka refuses, or that conflict (acks other than all
// with enable.idempotence), fail with an error naming them that wraps
// ErrPermanent.
func NewProducer(c Cluster, props map[string]string, logger hclog.Logger) (*Producer, error) {
	if err := ValidateProperties(c.Properties); err != nil {
		return nil, permanent(fmt.Errorf("new producer for %s: %w", c.Bootstrap, err))
	}
	if err := validateProducerProperties(props); err != nil {
		return nil, permanent(fmt.Errorf("new producer for %s: %w", c.Bootstrap, err))
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	p := &Producer{cluster: c, logger: logger, done: make(chan struct{}), def: newTracker(), topics: map[string]bool{}}
	p.logs = newLogPump(logger)
	cm := baseConfig(c)
	cm["linger.ms"] = 5
	// Partition by key as the Java client does, so that Sluice and Java
	// producers agree on a key's partition.
	cm["partitioner"] = "murmur2_random"
	for k, v := range props {
		cm[k] = v
	}
	cm["go.delivery.reports"] = true
	cm["go.delivery.report.fields"] = "none" // only topic, partition, offset, error
	p.logs.configure(cm)
	kp, err := newKafkaProducer(&cm)
	if err != nil {
		p.logs.stop()
		return nil, permanent(fmt.Errorf("new producer for %s: %w", c.Bootstrap, err))
	}
	p.kp = kp
	p.events.Add(1)
	go p.handleEvents() // stops when kp.Close closes the Events channel
	return p, nil
}

// tracker counts the delivery reports of one caller's messages. Every
// message carries its tracker as its Opaque, so that reports reach the
// caller that produced the message and no other.
type tracker struct {
	mu       sync.Mutex
	pending  int64
	failed   int64
	firstErr error
	// wake receives a token when pending drops to zero.
	wake chan struct{}
}

func newTracker() *tracker { return &tracker{wake: make(chan struct{}, 1)} }

func (t *tracker) add() {
	t.mu.Lock()
	t.pending++
	t.mu.Unlock()
}

func (t *tracker) delivered(err error) {
	t.mu.Lock()
	t.pending--
	if err != nil {
		t.failed++
		// A record purged by an abort says less than one the brokers
		// refused, whichever is reported first.
		if t.firstErr == nil || purged(t.firstErr) && !purged(err) {
			t.firstErr = err
		}
	}
	zero := t.pending == 0
	t.mu.Unlock()
	if zero {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// purged reports whether err is a record purged from the producer's queue
// (a transaction aborted, a producer closed) rather than refused.
func purged(err error) bool {
	c := errorCode(err)
	return c == kafka.ErrPurgeQueue || c == kafka.ErrPurgeInflight
}

// settled reports whether every message has its report, and then the
// first error (saying how many more failed) and resets the error.
func (t *tracker) settled() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending > 0 {
		return false, nil
	}
	err := t.firstErr
	if t.failed > 1 {
		err = fmt.Errorf("%w (and %d more records failed)", err, t.failed-1)
	}
	t.firstErr, t.failed = nil, 0
	return true, err
}

// handleEvents reads delivery reports and errors until the producer is
// closed, and hands each report to its message's tracker.
func (p *Producer) handleEvents() {
	defer p.events.Done()
	defer close(p.done)
	for ev := range p.kp.Events() {
		switch e := ev.(type) {
		case *kafka.Message:
			var err error
			if e.TopicPartition.Error != nil {
				topic := ""
				if e.TopicPartition.Topic != nil {
					topic = *e.TopicPartition.Topic
				}
				err = permanent(fmt.Errorf("deliver to %s: %w", partitionName(topic, e.TopicPartition.Partition), e.TopicPartition.Error))
			}
			tr, ok := e.Opaque.(*tracker)
			if !ok {
				tr = p.def
			}
			tr.delivered(err)
		case kafka.Error:
			if e.IsFatal() {
				p.mu.Lock()
				if p.fatal == nil {
					p.fatal = fmt.Errorf("producer: %w", e)
				}
				p.mu.Unlock()
			}
			p.logger.Warn("kafka producer error", "error", e, "code", e.Code(), "fatal", e.IsFatal())
		}
	}
}

// Fatal returns the producer's fatal error, nil while it is usable. A
// producer with a fatal error fails every write: replace it.
func (p *Producer) Fatal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fatal
}

func partitionName(topic string, partition int32) string {
	if partition < 0 {
		return topic
	}
	return fmt.Sprintf("%s/%d", topic, partition)
}

// Produce queues one record for topic. partition -1 lets the partitioner
// choose by key (murmur2, as the Java client; records without a key are
// spread at random) unless props set another partitioner. It blocks only
// while librdkafka's queue is full, until there is room or ctx is done. key
// and value are copied.
func (p *Producer) Produce(ctx context.Context, topic string, partition int32, key, value []byte) error {
	return p.ProduceMessage(ctx, Message{Topic: topic, Partition: partition, Key: key, Value: value})
}

// Message is one record to write.
type Message struct {
	Topic string
	// Partition -1 lets the partitioner choose by key.
	Partition  int32
	Key, Value []byte
	Headers    []record.Header
}

func (m Message) size() int {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// ProduceMessage queues m, like Produce; Flush reports its delivery.
func (p *Producer) ProduceMessage(ctx context.Context, m Message) error {
	return p.produce(ctx, p.def, m)
}

func (p *Producer) produce(ctx context.Context, tr *tracker, m Message) error {
	topic, partition := m.Topic, m.Partition
	if p.closed.Load() {
		return fmt.Errorf("produce to %s: %w", partitionName(topic, partition), ErrClosed)
	}
	if partition < 0 {
		partition = kafka.PartitionAny
	}
	msg := &kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: partition},
		Key:            m.Key,
		Value:          m.Value,
		Opaque:         tr,
	}
	if len(m.Headers) > 0 {
		msg.Headers = make([]kafka.Header, len(m.Headers))
		for i, h := range m.Headers {
			msg.Headers[i] = kafka.Header{Key: h.Key, Value: h.Value}
		}
	}
	tr.add()
	for {
		err := p.kp.Produce(msg, nil)
		if err == nil {
			return nil
		}
		if ke, ok := err.(kafka.Error); !ok || ke.Code() != kafka.ErrQueueFull {
			tr.delivered(nil)
			return permanent(fmt.Errorf("produce a record of %d bytes to %s: %w", m.size(), partitionName(m.Topic, m.Partition), err))
		}
		// The queue is full: wait for deliveries to make room.
		select {
		case <-ctx.Done():
			tr.delivered(nil)
			return fmt.Errorf("produce to %s: %w", partitionName(m.Topic, m.Partition), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Write produces msgs and waits until each one is delivered or failed. It
// returns the first error of these messages only (saying how many more
// failed), whatever other goroutines write with the producer meanwhile. A
// topic that does not exist fails before anything is written (see
// checkTopics). Errors that a retry would repeat wrap ErrPermanent.
func (p *Producer) Write(ctx context.Context, msgs []Message) error {
	if err := p.checkTopics(ctx, msgs); err != nil {
		return err
	}
	tr := newTracker()
	for _, m := range msgs {
		if err := p.produce(ctx, tr, m); err != nil {
			return err
		}
	}
	return p.wait(ctx, tr)
}

// checkTopics asks the cluster once per topic whether msgs' topics exist.
// librdkafka would otherwise hold records of a missing topic for
// topic.metadata.propagation.max.ms (30 s) before failing them, longer than
// many task timeouts, and the task would fail as a timeout and be retried
// forever. A producer's metadata request lets brokers with
// auto.create.topics.enable create the topic: a topic still unknown is
// missing for good, and the error wraps ErrUnknownTopic and ErrPermanent.
func (p *Producer) checkTopics(ctx context.Context, msgs []Message) error {
	var unknown []string
	p.mu.Lock()
	for _, m := range msgs {
		if !p.topics[m.Topic] && !contains(unknown, m.Topic) {
			unknown = append(unknown, m.Topic)
		}
	}
	p.mu.Unlock()
	for _, topic := range unknown {
		timeout := 10 * time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = min(timeout, max(time.Until(d), 10*time.Millisecond))
		}
		md, err := p.kp.GetMetadata(&topic, false, int(timeout.Milliseconds()))
		if err != nil {
			return fmt.Errorf("metadata of sink topic %q: %w", topic, err)
		}
		tm, ok := md.Topics[topic]
		if !ok {
			return fmt.Errorf("metadata of sink topic %q: not in the answer", topic)
		}
		switch tm.Error.Code() {
		case kafka.ErrNoError:
			p.mu.Lock()
			p.topics[topic] = true
			p.mu.Unlock()
		case kafka.ErrUnknownTopicOrPart, kafka.ErrUnknownTopic:
			return fmt.Errorf("sink topic %q does not exist: create it (the brokers do not create topics automatically): %w: %w", topic, ErrUnknownTopic, ErrPermanent)
		case kafka.ErrTopicAuthorizationFailed:
			return permanent(fmt.Errorf("sink topic %q: %w", topic, tm.Error))
		default:
			// E.g. leader not available while a broker creates the
			// topic: librdkafka waits for it.
		}
	}
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// wait waits until every message of tr is delivered or failed, and returns
// tr's first error.
func (p *Producer) wait(ctx context.Context, tr *tracker) error {
	for {
		if ok, err := tr.settled(); ok {
			return err
		}
		select {
		case <-tr.wake:
		case <-ctx.Done():
			return fmt.Errorf("wait for deliveries: %w", ctx.Err())
		case <-p.done:
			return fmt.Errorf("wait for deliveries: %w", ErrClosed)
		}
	}
}

// Flush waits until every record of Produce and ProduceMessage is delivered
// (or failed), and returns the first delivery error since the previous
// Flush, or ctx's error if ctx is done first.
func (p *Producer) Flush(ctx context.Context) error {
	if p.closed.Load() {
		return fmt.Errorf("flush: %w", ErrClosed)
	}
	for {
		// Flush sends what linger.ms holds back and serves the delivery
		// reports; handleEvents then counts them.
		queued := p.kp.Flush(50)
		if ok, err := p.def.settled(); ok {
			return err
		}
		if queued == 0 {
			// Reports are on their way to handleEvents: wait a little
			// instead of spinning.
			select {
			case <-ctx.Done():
			case <-p.def.wake:
			case <-time.After(time.Millisecond):
			}
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
	}
}

// Close closes the producer. Records not yet delivered are lost: call Flush
// first.
func (p *Producer) Close() {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		closeKafkaProducer(p.kp)
		p.events.Wait()
		p.logs.stop()
	})
}

// errorCode returns the Kafka error code of err, ErrNoError if it is none.
func errorCode(err error) kafka.ErrorCode {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Code()
	}
	return kafka.ErrNoError
}
