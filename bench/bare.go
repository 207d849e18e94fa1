package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// BareConfig is the configuration of a bare consumer: librdkafka's defaults
// with the fetch settings Sluice's consumers use (kafkasrc), so that the
// ratio of the job's rate to theirs is Sluice's own overhead. With
// librdkafka's default fetch.queue.backoff.ms (1s) a consumer that drains
// its queue quickly stalls, which would flatter the ratio.
func BareConfig(brokers string) kafka.ConfigMap {
	return kafka.ConfigMap{
		"bootstrap.servers":          brokers,
		"group.id":                   "sluice-bench-bare",
		"client.id":                  "sluice-bench-bare",
		"enable.auto.commit":         false,
		"enable.auto.offset.store":   false,
		"enable.partition.eof":       false,
		"isolation.level":            "read_committed",
		"fetch.wait.max.ms":          100,
		"queued.min.messages":        50000,
		"queued.max.messages.kbytes": 16384,
		"fetch.queue.backoff.ms":     10,
		"enable.metrics.push":        false,
		"log.connection.close":       false,
	}
}

// BareRead reads partitions 0..len(ends)-1 of topic from offset 0 to their
// end offsets with one bare librdkafka consumer each, all at once, as a
// program without Sluice would. It returns the time from creating the
// consumers to the last record of the last partition (closing them is not
// timed) and fails unless every partition yields exactly its records.
func BareRead(ctx context.Context, brokers, topic string, ends []int64) (time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(ends))
	consumers := make([]*kafka.Consumer, len(ends))
	var mu sync.Mutex
	var last time.Time
	for p, end := range ends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := readPartition(ctx, brokers, topic, int32(p), end)
			consumers[p] = c
			errs[p] = err
			mu.Lock()
			if now := time.Now(); now.After(last) {
				last = now
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := last.Sub(start)
	for _, c := range consumers {
		if c != nil {
			c.Close()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return took, nil
}

// readPartition reads [0, end) of one partition and returns its consumer,
// still open.
func readPartition(ctx context.Context, brokers, topic string, partition int32, end int64) (*kafka.Consumer, error) {
	cm := BareConfig(brokers)
	c, err := kafka.NewConsumer(&cm)
	if err != nil {
		return nil, fmt.Errorf("bare consumer of %s/%d: %w", topic, partition, err)
	}
	if end == 0 {
		return c, nil
	}
	if err := c.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: partition, Offset: 0}}); err != nil {
		return c, fmt.Errorf("bare consumer: assign %s/%d: %w", topic, partition, err)
	}
	var n int64
	for ctx.Err() == nil {
		switch e := c.Poll(100).(type) {
		case *kafka.Message:
			if e.TopicPartition.Error != nil {
				return c, fmt.Errorf("bare consumer of %s/%d: %w", topic, partition, e.TopicPartition.Error)
			}
			n++
			if off := int64(e.TopicPartition.Offset); off >= end-1 {
				if n != end {
					return c, fmt.Errorf("bare consumer of %s/%d read %d records up to offset %d, want %d", topic, partition, n, off, end)
				}
				return c, nil
			}
		case kafka.Error:
			if e.IsFatal() {
				return c, fmt.Errorf("bare consumer of %s/%d: %w", topic, partition, e)
			}
		}
	}
	return c, fmt.Errorf("bare consumer of %s/%d: %d of %d records read: %w", topic, partition, n, end, ctx.Err())
}
