package kafkasrc

import (
	"context"
	"fmt"
	"strconv"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// CommitGroupOffsets sets the group's committed offsets (the next offset to
// read of each partition), for lag tools. The group must have no active
// members, which holds for Sluice's groups: nothing ever subscribes. It
// goes through the franz-go client when the Admin has one: librdkafka's
// AlterConsumerGroupOffsets matches partitions by linear search, and at
// 10,000 partitions a commit took its main thread about 200 ms of CPU.
func (a *Admin) CommitGroupOffsets(ctx context.Context, group string, offsets map[TopicPartition]int64) error {
	ctx, done, err := a.start(ctx)
	if err != nil {
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	defer done()
	if a.plan != nil {
		return a.kgoCommitOffsets(ctx, group, offsets)
	}
	tps := make([]kafka.TopicPartition, 0, len(offsets))
	for tp, off := range offsets {
		topic := tp.Topic
		tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: tp.Partition, Offset: kafka.Offset(off)})
	}
	res, err := a.admin.AlterConsumerGroupOffsets(ctx, []kafka.ConsumerGroupTopicPartitions{{Group: group, Partitions: tps}})
	if err != nil {
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	for _, g := range res.ConsumerGroupsTopicPartitions {
		for _, tp := range g.Partitions {
			if tp.Error != nil {
				return fmt.Errorf("commit offsets of group %s, %s/%d: %w", group, *tp.Topic, tp.Partition, tp.Error)
			}
		}
	}
	return nil
}

// GroupOffsets reads the group's committed offsets of tps (-1 where none),
// waiting for pending transactional commits to settle.
func (a *Admin) GroupOffsets(ctx context.Context, group string, tps []TopicPartition) (map[TopicPartition]int64, error) {
	ctx, done, err := a.start(ctx)
	if err != nil {
		return nil, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	defer done()
	parts := make([]kafka.TopicPartition, 0, len(tps))
	for _, tp := range tps {
		topic := tp.Topic
		parts = append(parts, kafka.TopicPartition{Topic: &topic, Partition: tp.Partition})
	}
	res, err := a.admin.ListConsumerGroupOffsets(ctx, []kafka.ConsumerGroupTopicPartitions{{Group: group, Partitions: parts}},
		kafka.SetAdminRequireStableOffsets(true))
	if err != nil {
		return nil, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	out := map[TopicPartition]int64{}
	for _, g := range res.ConsumerGroupsTopicPartitions {
		for _, tp := range g.Partitions {
			if tp.Error != nil {
				return nil, fmt.Errorf("offsets of group %s, %s/%d: %w", group, *tp.Topic, tp.Partition, tp.Error)
			}
			off := int64(tp.Offset)
			if off < 0 {
				off = -1 // librdkafka's OffsetInvalid: nothing committed
			}
			out[TopicPartition{Topic: *tp.Topic, Partition: tp.Partition}] = off
		}
	}
	return out, nil
}

// BrokerConfigInt reads an integer broker configuration (e.g.
// transaction.max.timeout.ms) from any broker of the cluster.
func (a *Admin) BrokerConfigInt(ctx context.Context, name string) (int64, error) {
	ctx, done, err := a.start(ctx)
	if err != nil {
		return 0, fmt.Errorf("describe broker config %s: %w", name, err)
	}
	defer done()
	md, err := a.admin.GetMetadata(nil, false, 5000)
	if err != nil || len(md.Brokers) == 0 {
		return 0, fmt.Errorf("describe broker config %s: no broker metadata: %v", name, err)
	}
	res, err := a.admin.DescribeConfigs(ctx, []kafka.ConfigResource{{
		Type: kafka.ResourceBroker, Name: strconv.Itoa(int(md.Brokers[0].ID)),
	}})
	if err != nil {
		return 0, fmt.Errorf("describe broker config %s: %w", name, err)
	}
	for _, r := range res {
		if r.Error.Code() != kafka.ErrNoError {
			return 0, fmt.Errorf("describe broker config %s: %w", name, r.Error)
		}
		if e, ok := r.Config[name]; ok {
			v, err := strconv.ParseInt(e.Value, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("broker config %s=%q: %w", name, e.Value, err)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("broker config %s: not reported", name)
}
