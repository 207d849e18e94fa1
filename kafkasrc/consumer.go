package kafkasrc

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/record"
)

// pollTimeoutMs bounds one Poll: a cancelled ctx is noticed within it. A
// variable so that tests can make polls return empty more often.
var pollTimeoutMs = 100

// consumer is one librdkafka consumer assigned to one partition, reading
// ranges of it. It is used by one read at a time.
//
// Where the consumer is, is kept as two offsets and an optional pending
// message:
//
//   - next: the offset from which the consumer's stream continues. Every
//     offset below next has been consumed (delivered, or skipped as a
//     transaction marker or an aborted record). When pending is set, next is
//     pending's offset.
//   - free: no data record exists in [free, next). After a delivered record
//     free == next; they differ when the position jumped over markers or
//     aborted records, or when a message beyond the last range was polled
//     and kept as pending.
//   - pending: a message polled past the end of the previous range (its
//     offset was >= until, possible after a gap), delivered first by the
//     next read that covers it.
//
// A read from From can continue without a seek when free <= From <= next:
// the records the consumer prefetched are then exactly the ones to read.
type consumer struct {
	key    cacheKey
	logger hclog.Logger
	kc     *kafka.Consumer
	logs   *logPump
	topic  string                 // key.topic; tp[0].Topic points to it
	tp     []kafka.TopicPartition // the assigned partition, for Position
	stats  StatsSink              // nil: statistics off

	// Guarded by Cache.mu.
	elem      *list.Element // in Cache.lru; nil when not cached
	inUse     bool
	evicted   bool      // removed from the cache while in use: the reader closes it
	idleSince time.Time // when last released

	// Owned by the read holding the consumer.
	assigned bool
	free     int64
	next     int64
	pending  *kafka.Message
	rec      record.Record   // reused for every delivered record
	hdrs     []record.Header // reused for rec.Headers

	closeOnce sync.Once
}

// newConsumer creates the consumer of key with the configuration cm (see
// consumerConfig).
func newConsumer(cl Cluster, key cacheKey, cm kafka.ConfigMap, logger hclog.Logger, stats StatsSink) (*consumer, error) {
	logger = logger.With("topic", key.topic, "partition", key.partition)
	k := &consumer{key: key, logger: logger, topic: key.topic, stats: stats}
	k.tp = []kafka.TopicPartition{{Topic: &k.topic, Partition: key.partition}}
	k.logs = newLogPump(logger)
	k.logs.configure(cm)
	kc, err := newKafkaConsumer(&cm)
	if err != nil {
		k.logs.stop()
		return nil, fmt.Errorf("new consumer for %s/%d: %w", key.topic, key.partition, err)
	}
	k.kc = kc
	return k, nil
}

// close closes the librdkafka consumer and stops its log pump. It is
// idempotent.
func (k *consumer) close() {
	k.closeOnce.Do(func() {
		if k.stats != nil {
			k.stats.Closed(k.kc.String())
		}
		if err := closeKafkaConsumer(k.kc); err != nil {
			k.logger.Warn("close kafka consumer", "error", err)
		}
		k.logs.stop()
		k.pending = nil
	})
}

// seek positions the consumer at from, reusing its current position when
// nothing lies between (see the consumer doc). It reports whether the
// position was reused.
func (k *consumer) seek(r Range) (reused bool, err error) {
	if k.assigned && k.free <= r.From && r.From <= k.next {
		return true, nil
	}
	tp := []kafka.TopicPartition{{Topic: &k.topic, Partition: k.key.partition, Offset: kafka.Offset(r.From)}}
	if !k.assigned {
		if err := k.kc.Assign(tp); err != nil {
			return false, fmt.Errorf("read %s: assign at offset %d: %w", r, r.From, err)
		}
		k.assigned = true
	} else {
		res, err := k.kc.SeekPartitions(tp)
		if err != nil {
			return false, fmt.Errorf("read %s: seek to offset %d: %w", r, r.From, err)
		}
		for _, p := range res {
			if p.Error != nil {
				return false, fmt.Errorf("read %s: seek to offset %d: %w", r, r.From, p.Error)
			}
		}
	}
	k.free, k.next, k.pending = r.From, r.From, nil
	return false, nil
}

// read delivers the data records of r to fn; see Cache.Read.
func (k *consumer) read(ctx context.Context, r Range, fn func(*record.Record) error) (ReadStats, error) {
	var st ReadStats
	reused, err := k.seek(r)
	if err != nil {
		return st, err
	}
	st.Reused = reused
	done := ctx.Done()
	for {
		if k.next >= r.Until {
			return st, nil
		}
		if m := k.pending; m != nil {
			// k.next == m's offset: From <= it < Until.
			k.pending = nil
			if err := k.deliver(r, m, fn); err != nil {
				return st, err
			}
			st.Records++
			continue
		}
		select {
		case <-done:
			return st, fmt.Errorf("read %s: at offset %d: %w", r, k.next, ctx.Err())
		default:
		}
		ev := k.kc.Poll(pollTimeoutMs)
		st.Polls++
		switch e := ev.(type) {
		case *kafka.Message:
			if e.TopicPartition.Error != nil {
				return st, k.kafkaError(r, e.TopicPartition.Error)
			}
			off := int64(e.TopicPartition.Offset)
			if off < k.next {
				return st, fmt.Errorf("read %s: polled offset %d below the position %d: %w", r, off, k.next, errUnexpectedOffset)
			}
			if off >= r.Until {
				// Past a gap at the end of r: keep it for the next read.
				k.pending, k.next = e, off
				return st, nil
			}
			if err := k.deliver(r, e, fn); err != nil {
				return st, err
			}
			st.Records++
		case nil:
			// The queue is empty: the position now accounts for every
			// marker and aborted record consumed since the last record.
			pos, err := k.kc.Position(k.tp)
			if err != nil {
				return st, fmt.Errorf("read %s: position after offset %d: %w", r, k.next, err)
			}
			if len(pos) == 1 && pos[0].Error == nil {
				if p := int64(pos[0].Offset); p > k.next {
					k.next = p
				}
			}
		case kafka.Error:
			if err := k.eventError(r, e); err != nil {
				return st, err
			}
		case *kafka.Stats:
			deliverStats(k.stats, e)
		default:
			// OffsetsCommitted, ...: not used.
		}
	}
}

// errUnexpectedOffset means that librdkafka returned an offset the reader
// had already passed. It should not happen; reading on would duplicate
// records.
var errUnexpectedOffset = errors.New("kafkasrc: unexpected offset")

// deliver passes m to fn as a record.Record.
func (k *consumer) deliver(r Range, m *kafka.Message, fn func(*record.Record) error) error {
	off := int64(m.TopicPartition.Offset)
	k.free, k.next = off+1, off+1
	return deliverRecord(&k.rec, &k.hdrs, r, m, fn)
}

// deliverRecord fills rec (and its reused headers) from m, a message of r,
// and passes it to fn.
func deliverRecord(rec *record.Record, hdrs *[]record.Header, r Range, m *kafka.Message, fn func(*record.Record) error) error {
	off := int64(m.TopicPartition.Offset)
	rec.Topic, rec.Partition, rec.Offset = r.Topic, r.Partition, off
	rec.Key, rec.Value, rec.Timestamp = m.Key, m.Value, m.Timestamp
	if len(m.Headers) == 0 {
		rec.Headers = nil
	} else {
		*hdrs = (*hdrs)[:0]
		for _, h := range m.Headers {
			*hdrs = append(*hdrs, record.Header{Key: h.Key, Value: h.Value})
		}
		rec.Headers = *hdrs
	}
	if err := fn(rec); err != nil {
		return fmt.Errorf("read %s: record at offset %d: %w", r, off, err)
	}
	return nil
}

// kafkaError converts a partition error of a polled message.
func (k *consumer) kafkaError(r Range, err error) error { return readError(r, k.next, err) }

// readError converts a partition error met while reading r at next.
func readError(r Range, next int64, err error) error {
	var ke kafka.Error
	if errors.As(err, &ke) && isOutOfRange(ke) {
		return fmt.Errorf("read %s: from offset %d: %w: %w", r, next, ke, ErrOffsetOutOfRange)
	}
	if isUnknownTopic(err) {
		return fmt.Errorf("read %s: at offset %d: %w: %w", r, next, err, ErrUnknownTopic)
	}
	return fmt.Errorf("read %s: at offset %d: %w", r, next, err)
}

// eventError decides whether an error event fails the read. librdkafka
// reports transient conditions (a broker connection lost, all brokers down)
// as error events and recovers by itself: those are logged and the read goes
// on, bounded by its ctx.
func (k *consumer) eventError(r Range, e kafka.Error) error {
	if failsRead(e) {
		return k.kafkaError(r, e)
	}
	k.logger.Warn("kafka consumer error", "range", r.String(), "offset", k.next, "error", e, "code", e.Code())
	return nil
}

// failsRead says whether an error event ends a read: the others are
// transient conditions librdkafka recovers from by itself.
func failsRead(e kafka.Error) bool {
	return isOutOfRange(e) || e.IsFatal() || isUnknownTopic(e) || e.Code() == kafka.ErrTopicAuthorizationFailed
}

func isOutOfRange(e kafka.Error) bool {
	return e.Code() == kafka.ErrOffsetOutOfRange || e.Code() == kafka.ErrAutoOffsetReset
}
