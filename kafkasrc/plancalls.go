package kafkasrc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The coordinator asks for the partitions and the earliest and latest
// offsets of every partition of a job before every batch. Through
// librdkafka's admin API that costs about 8.5 µs of CPU per partition and
// request (9 ms for 1,024 partitions, 85 ms for 10,000); franz-go's client
// sends the same Metadata and ListOffsets requests for a tenth of that. So
// an Admin answers those three questions with a franz-go client when it can
// connect the way librdkafka would: with the TLS and SASL settings
// franzOptions translates, and no socket or broker-address options. Other
// clusters are asked through librdkafka.

// kgoProperty reports whether a librdkafka property leaves the way a client
// connects alone, or is a security property franzOptions translates, so
// that a franz-go client connects the same way.
func kgoProperty(name string) bool {
	if tlsProp, saslProp := securityProperty(name); tlsProp || saslProp {
		return true // franzOptions says
	}
	n := strings.ToLower(strings.TrimSpace(name))
	return n == "security.protocol" || !connectionProperty(name)
}

// kgoConnects returns why a franz-go client would not connect to c the
// way librdkafka does (a property only librdkafka is configured to honour,
// or a security setting franzOptions cannot translate), or "" when it
// would. An error is a security setting that is wrong for either client.
func kgoConnects(c Cluster) (string, error) {
	for k := range c.Properties {
		if !kgoProperty(k) {
			return fmt.Sprintf("property %q", k), nil
		}
	}
	if _, err := franzOptions(c.Properties); errors.Is(err, ErrUnsupportedProperty) {
		return err.Error(), nil
	} else if err != nil {
		return "", err
	}
	return "", nil
}

// newPlanClient returns the franz-go client of c, or nil when c's properties
// ask for a connection only librdkafka is configured to make (logged at
// debug level with the reason).
func newPlanClient(c Cluster, logger hclog.Logger) (*kgo.Client, error) {
	reason, err := kgoConnects(c)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		logger.Debug("planning through librdkafka", "bootstrap", c.Bootstrap, "reason", reason)
		return nil, nil
	}
	return franzClient(c)
}

// kgoPartitions is Partitions through the franz-go client: one Metadata
// request.
func (a *Admin) kgoPartitions(ctx context.Context, topics []string) (map[string][]int32, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range dedup(topics) {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, a.plan)
	if err != nil {
		return nil, franzPermanent(fmt.Errorf("describe topics %s: %w", briefList(topics), err))
	}
	out := make(map[string][]int32, len(topics))
	for _, t := range resp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) {
				return nil, fmt.Errorf("topic %q: %w", name, ErrUnknownTopic)
			}
			return nil, fmt.Errorf("describe topic %q: %w", name, err)
		}
		ps := make([]int32, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			ps = append(ps, p.Partition)
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		out[name] = ps
	}
	for _, t := range topics {
		if _, ok := out[t]; !ok {
			return nil, fmt.Errorf("topic %q: not in the describe answer: %w", t, ErrUnknownTopic)
		}
	}
	return out, nil
}

// kgoListOffsets is listOffsets through the franz-go client: one
// ListOffsets request per partition leader, routed by the client's cached
// metadata. ts is -1 for the latest offsets, -2 for the earliest.
func (a *Admin) kgoListOffsets(ctx context.Context, what string, tps []TopicPartition, ts int64) (map[TopicPartition]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	if a.cluster.ReadCommitted {
		req.IsolationLevel = 1
	}
	index := map[string]int{}
	seen := make(map[TopicPartition]bool, len(tps))
	for _, tp := range tps {
		if seen[tp] {
			continue
		}
		seen[tp] = true
		i, ok := index[tp.Topic]
		if !ok {
			i = len(req.Topics)
			index[tp.Topic] = i
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic = tp.Topic
			req.Topics = append(req.Topics, rt)
		}
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = tp.Partition, ts
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
	}
	out := make(map[TopicPartition]int64, len(seen))
	for _, shard := range a.plan.RequestSharded(ctx, req) {
		if err := shard.Err; err != nil {
			what := fmt.Sprintf("list %s offsets of %s", what, shardPartitions(shard.Req))
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				return nil, fmt.Errorf("%s: %w: %w", what, err, ErrUnknownTopic)
			}
			return nil, franzPermanent(fmt.Errorf("%s: %w", what, err))
		}
		resp, ok := shard.Resp.(*kmsg.ListOffsetsResponse)
		if !ok {
			return nil, fmt.Errorf("list %s offsets: unexpected response %T", what, shard.Resp)
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				tp := TopicPartition{Topic: t.Topic, Partition: p.Partition}
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					if errors.Is(err, kerr.UnknownTopicOrPartition) {
						return nil, fmt.Errorf("list %s offset of %s: %w: %w", what, tp, err, ErrUnknownTopic)
					}
					return nil, fmt.Errorf("list %s offset of %s: %w", what, tp, err)
				}
				out[tp] = p.Offset
			}
		}
	}
	for tp := range seen {
		if _, ok := out[tp]; !ok {
			return nil, fmt.Errorf("list %s offset of %s: no answer for the partition: %w", what, tp, ErrUnknownTopic)
		}
	}
	return out, nil
}

// shardPartitions names the partitions of a failed shard's request: the
// first, and how many more.
func shardPartitions(req kmsg.Request) string {
	lo, ok := req.(*kmsg.ListOffsetsRequest)
	var tps []TopicPartition
	if ok {
		for _, t := range lo.Topics {
			for _, p := range t.Partitions {
				tps = append(tps, TopicPartition{t.Topic, p.Partition})
			}
		}
	}
	switch len(tps) {
	case 0:
		return "partitions"
	case 1:
		return tps[0].String()
	default:
		return fmt.Sprintf("%s and %d more partitions", tps[0], len(tps)-1)
	}
}

// kgoCommitOffsets is CommitGroupOffsets through the franz-go client: one
// OffsetCommit request to the group's coordinator, outside any generation,
// as Kafka's admin clients send it.
func (a *Admin) kgoCommitOffsets(ctx context.Context, group string, offsets map[TopicPartition]int64) error {
	commit := make(kadm.Offsets, 1)
	for tp, off := range offsets {
		commit.AddOffset(tp.Topic, tp.Partition, off, -1) // -1: no leader epoch
	}
	resps, err := kadm.NewClient(a.plan).CommitOffsets(ctx, group, commit)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	return nil
}
