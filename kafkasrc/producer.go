package kafkasrc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/record"
)

// Producer writes records to a cluster. Produce is asynchronous; delivery
// errors surface on Flush. It is safe for concurrent use.
type Producer struct {
	cluster Cluster
	logger  hclog.Logger
	kp      *kafka.Producer
	logs    *logPump
	events  sync.WaitGroup // the goroutine reading kp.Events()

	mu       sync.Mutex
	inflight int64 // produced, delivery report not yet seen
	firstErr error // first delivery error since the last Flush

	closed    atomic.Bool
	closeOnce sync.Once
}

// NewProducer connects a producer to the cluster c. props are extra
// producer properties (acks, linger.ms, compression.type, ...) applied over
// c.Properties; the bootstrap servers and go.* properties are refused.
func NewProducer(c Cluster, props map[string]string, logger hclog.Logger) (*Producer, error) {
	if err := ValidateProperties(c.Properties); err != nil {
		return nil, fmt.Errorf("new producer for %s: %w", c.Bootstrap, err)
	}
	if err := validateProducerProperties(props); err != nil {
		return nil, fmt.Errorf("new producer for %s: %w", c.Bootstrap, err)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	p := &Producer{cluster: c, logger: logger}
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
	kp, err := kafka.NewProducer(&cm)
	if err != nil {
		p.logs.stop()
		return nil, fmt.Errorf("new producer for %s: %w", c.Bootstrap, err)
	}
	p.kp = kp
	p.events.Add(1)
	go p.handleEvents() // stops when kp.Close closes the Events channel
	return p, nil
}

// handleEvents reads delivery reports and errors until the producer is
// closed. It owns nothing but updates inflight and firstErr under p.mu.
func (p *Producer) handleEvents() {
	defer p.events.Done()
	for ev := range p.kp.Events() {
		switch e := ev.(type) {
		case *kafka.Message:
			var err error
			if e.TopicPartition.Error != nil {
				topic := ""
				if e.TopicPartition.Topic != nil {
					topic = *e.TopicPartition.Topic
				}
				err = fmt.Errorf("deliver to %s/%d: %w", topic, e.TopicPartition.Partition, e.TopicPartition.Error)
			}
			p.delivered(err)
		case kafka.Error:
			if e.IsFatal() {
				p.mu.Lock()
				if p.firstErr == nil {
					p.firstErr = fmt.Errorf("producer: %w", e)
				}
				p.mu.Unlock()
			}
			p.logger.Warn("kafka producer error", "error", e, "code", e.Code(), "fatal", e.IsFatal())
		}
	}
}

func (p *Producer) delivered(err error) {
	p.mu.Lock()
	p.inflight--
	if err != nil && p.firstErr == nil {
		p.firstErr = err
	}
	p.mu.Unlock()
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

// ProduceMessage queues m, like Produce.
func (p *Producer) ProduceMessage(ctx context.Context, m Message) error {
	topic, partition := m.Topic, m.Partition
	if p.closed.Load() {
		return fmt.Errorf("produce to %s/%d: %w", topic, partition, ErrClosed)
	}
	if partition < 0 {
		partition = kafka.PartitionAny
	}
	msg := &kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: partition},
		Key:            m.Key,
		Value:          m.Value,
	}
	if len(m.Headers) > 0 {
		msg.Headers = make([]kafka.Header, len(m.Headers))
		for i, h := range m.Headers {
			msg.Headers[i] = kafka.Header{Key: h.Key, Value: h.Value}
		}
	}
	p.mu.Lock()
	p.inflight++
	p.mu.Unlock()
	for {
		err := p.kp.Produce(msg, nil)
		if err == nil {
			return nil
		}
		if ke, ok := err.(kafka.Error); !ok || ke.Code() != kafka.ErrQueueFull {
			p.delivered(nil)
			return fmt.Errorf("produce to %s/%d: %w", topic, partition, err)
		}
		// The queue is full: wait for deliveries to make room.
		select {
		case <-ctx.Done():
			p.delivered(nil)
			return fmt.Errorf("produce to %s/%d: %w", topic, partition, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Flush waits until every produced record is delivered (or failed), and
// returns the first delivery error since the previous Flush, or ctx's error
// if ctx is done first.
func (p *Producer) Flush(ctx context.Context) error {
	if p.closed.Load() {
		return fmt.Errorf("flush: %w", ErrClosed)
	}
	for {
		// Flush sends what linger.ms holds back and serves the delivery
		// reports; handleEvents then counts them.
		queued := p.kp.Flush(50)
		p.mu.Lock()
		if p.inflight == 0 {
			err := p.firstErr
			p.firstErr = nil
			p.mu.Unlock()
			return err
		}
		p.mu.Unlock()
		if queued == 0 {
			// Reports are on their way to handleEvents: wait a little
			// instead of spinning.
			select {
			case <-ctx.Done():
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
		p.kp.Close()
		p.events.Wait()
		p.logs.stop()
	})
}
