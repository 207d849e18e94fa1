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
	return BareReadShared(ctx, brokers, topic, ends, len(ends))
}

// BareReadShared is BareRead with the partitions shared by consumers bare
// consumers, each assigned a contiguous block of them (SharePartitions).
func BareReadShared(ctx context.Context, brokers, topic string, ends []int64, consumers int) (time.Duration, error) {
	return readBlocks(SharePartitions(int32(len(ends)), consumers), func(parts []int32) (func(), error) {
		c, err := readPartitions(ctx, brokers, topic, parts, ends)
		if c == nil {
			return nil, err
		}
		return func() { c.Close() }, err
	})
}

// readBlocks reads each block of partitions with read, all at once, and
// returns the time from the start to the end of the last read. What read
// leaves open is closed after that, untimed.
func readBlocks(blocks [][]int32, read func(parts []int32) (closeFn func(), err error)) (time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(blocks))
	closers := make([]func(), len(blocks))
	var mu sync.Mutex
	var last time.Time
	for i, parts := range blocks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			closers[i], errs[i] = read(parts)
			mu.Lock()
			if now := time.Now(); now.After(last) {
				last = now
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := last.Sub(start)
	for _, c := range closers {
		if c != nil {
			c()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return took, nil
}

// SharePartitions splits partitions 0..partitions-1 into at most consumers
// contiguous blocks whose sizes differ by at most one, the larger first.
func SharePartitions(partitions int32, consumers int) [][]int32 {
	n := min(int32(max(consumers, 1)), partitions)
	out := make([][]int32, 0, n)
	var next int32
	for i := range n {
		size := partitions / n
		if i < partitions%n {
			size++
		}
		block := make([]int32, size)
		for j := range block {
			block[j] = next
			next++
		}
		out = append(out, block)
	}
	return out
}

// readPartitions reads [0, ends[p]) of each of partitions with one consumer
// and returns it, still open.
func readPartitions(ctx context.Context, brokers, topic string, partitions []int32, ends []int64) (*kafka.Consumer, error) {
	cm := BareConfig(brokers)
	c, err := kafka.NewConsumer(&cm)
	if err != nil {
		return nil, fmt.Errorf("bare consumer of %s %s: %w", topic, partitionList(partitions), err)
	}
	var assign []kafka.TopicPartition
	read := make(map[int32]int64, len(partitions))
	for _, p := range partitions {
		if ends[p] > 0 {
			assign = append(assign, kafka.TopicPartition{Topic: &topic, Partition: p, Offset: 0})
			read[p] = 0
		}
	}
	if len(assign) == 0 {
		return c, nil
	}
	if err := c.Assign(assign); err != nil {
		return c, fmt.Errorf("bare consumer: assign %s %s: %w", topic, partitionList(partitions), err)
	}
	left := len(assign)
	for ctx.Err() == nil {
		switch e := c.Poll(100).(type) {
		case *kafka.Message:
			p := e.TopicPartition.Partition
			if e.TopicPartition.Error != nil {
				return c, fmt.Errorf("bare consumer of %s/%d: %w", topic, p, e.TopicPartition.Error)
			}
			n, ok := read[p]
			if !ok {
				return c, fmt.Errorf("bare consumer of %s %s: a record of partition %d, not assigned", topic, partitionList(partitions), p)
			}
			read[p] = n + 1
			if off := int64(e.TopicPartition.Offset); off >= ends[p]-1 {
				if n+1 != ends[p] {
					return c, fmt.Errorf("bare consumer of %s/%d read %d records up to offset %d, want %d", topic, p, n+1, off, ends[p])
				}
				if left--; left == 0 {
					return c, nil
				}
			}
		case kafka.Error:
			if e.IsFatal() {
				return c, fmt.Errorf("bare consumer of %s %s: %w", topic, partitionList(partitions), e)
			}
		}
	}
	var got, want int64
	for p, n := range read {
		got, want = got+n, want+ends[p]
	}
	return c, fmt.Errorf("bare consumer of %s %s: %d of %d records read: %w", topic, partitionList(partitions), got, want, ctx.Err())
}

// partitionList names partitions for an error: "partition 3" or
// "partitions 0-127" (a contiguous block, as SharePartitions makes).
func partitionList(ps []int32) string {
	switch {
	case len(ps) == 1:
		return fmt.Sprintf("partition %d", ps[0])
	case len(ps) > 1 && int(ps[len(ps)-1]-ps[0]) == len(ps)-1:
		return fmt.Sprintf("partitions %d-%d", ps[0], ps[len(ps)-1])
	}
	return fmt.Sprintf("partitions %v", ps)
}
