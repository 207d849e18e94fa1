package kafkasrc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	// A probe asks for up to probePartitionBytes of each partition, and
	// probeMaxBytes in all: enough for the record batches at a position.
	probePartitionBytes = 1 << 20
	probeMaxBytes       = 8 << 20
)

// probe asks the leaders of the stalled ranges' partitions what follows
// each one's position, and moves the position past what is only aborted
// records there: read_committed fetches drop them, and franz-go skips them
// without a trace. A range ending in such a gap, with no readable offset
// after it yet (the marker of the aborted transaction is past the last
// stable offset, behind a transaction still open), would otherwise never
// finish. It returns how many ranges finished. A topic or partition the
// cluster does not have fails the read; other failures leave the ranges to
// the next probe.
func (c *fetchConsumer) probe(ctx context.Context, prs []*fetchPart) (int, error) {
	meta := kmsg.NewPtrMetadataRequest()
	byTopic := map[string][]*fetchPart{}
	for _, pr := range prs {
		if byTopic[pr.topic] == nil {
			mt := kmsg.NewMetadataRequestTopic()
			mt.Topic = kmsg.StringPtr(pr.topic)
			meta.Topics = append(meta.Topics, mt)
		}
		byTopic[pr.topic] = append(byTopic[pr.topic], pr)
	}
	mresp, err := meta.RequestWith(ctx, c.kc)
	if err != nil {
		c.logger.Warn("probe stalled ranges: metadata", "ranges", len(prs), "error", err)
		return 0, nil
	}
	leaders := map[TopicPartition]int32{}
	ids := map[string][16]byte{}
	for _, t := range mresp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) {
				if ps := byTopic[name]; len(ps) > 0 {
					return 0, fmt.Errorf("read %s: at offset %d: %w: %w", ps[0].r, ps[0].next, err, ErrUnknownTopic)
				}
			}
			continue
		}
		ids[name] = t.TopicID
		for _, p := range t.Partitions {
			leaders[TopicPartition{name, p.Partition}] = p.Leader
		}
	}
	byLeader := map[int32][]*fetchPart{}
	for _, pr := range prs {
		leader, ok := leaders[pr.tp()]
		if !ok {
			if _, known := ids[pr.topic]; known {
				return 0, fmt.Errorf("read %s: at offset %d: the topic has no partition %d: %w", pr.r, pr.next, pr.partition, ErrUnknownTopic)
			}
			continue
		}
		if leader >= 0 {
			byLeader[leader] = append(byLeader[leader], pr)
		}
	}
	finished := 0
	for leader, group := range byLeader {
		n, err := c.probeLeader(ctx, leader, group, ids)
		if err != nil {
			c.logger.Warn("probe stalled ranges: fetch", "broker", leader, "ranges", len(group), "error", err)
			continue
		}
		finished += n
	}
	return finished, nil
}

// probeLeader is probe's fetch from one leader.
func (c *fetchConsumer) probeLeader(ctx context.Context, leader int32, prs []*fetchPart, ids map[string][16]byte) (int, error) {
	req := kmsg.NewPtrFetchRequest()
	req.MaxBytes = probeMaxBytes
	if c.readCommitted {
		req.IsolationLevel = 1
	}
	index := map[string]int{}
	byTP := map[TopicPartition]*fetchPart{}
	for _, pr := range prs {
		i, ok := index[pr.topic]
		if !ok {
			i = len(req.Topics)
			index[pr.topic] = i
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic, rt.TopicID = pr.topic, ids[pr.topic]
			req.Topics = append(req.Topics, rt)
		}
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = pr.partition, pr.next, probePartitionBytes
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
		byTP[pr.tp()] = pr
	}
	resp, err := req.RequestWith(ctx, c.kc.Broker(int(leader)))
	if err != nil {
		return 0, err
	}
	names := map[[16]byte]string{}
	for name, id := range ids {
		names[id] = name
	}
	iso := kgo.ReadUncommitted()
	if c.readCommitted {
		iso = kgo.ReadCommitted()
	}
	finished := 0
	for _, t := range resp.Topics {
		name := t.Topic
		if name == "" {
			name = names[t.TopicID]
		}
		for i := range t.Partitions {
			rp := &t.Partitions[i]
			pr := byTP[TopicPartition{name, rp.Partition}]
			if pr == nil || !pr.open() || rp.ErrorCode != 0 {
				continue // the consumer's own fetch meets the error
			}
			fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
				KeepControlRecords: true, Offset: pr.next, IsolationLevel: iso, Topic: name, Partition: rp.Partition,
			}, rp, kgo.DefaultDecompressor(), nil)
			if fp.Err != nil || len(fp.Records) > 0 || next <= pr.next {
				continue // readable records: the consumer delivers them
			}
			c.logger.Debug("aborted records skipped", "range", pr.r.String(), "from", pr.next, "to", next)
			pr.next, pr.progress = next, time.Now()
			if pr.next >= pr.r.Until {
				finished++
			}
		}
	}
	return finished, nil
}
