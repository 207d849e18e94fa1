package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BareReadFranz is BareReadShared with franz-go consumers, the client
// Sluice's workers read with whenever it connects to the cluster: each
// consumes its block of partitions directly from offset 0, read_committed,
// with the fetch settings of Sluice's franz-go consumers for one range
// (1 MiB a fetch). The job's rate against theirs is Sluice's overhead over
// its own client.
func BareReadFranz(ctx context.Context, brokers, topic string, ends []int64, consumers int) (time.Duration, error) {
	return readBlocks(SharePartitions(int32(len(ends)), consumers), func(parts []int32) (func(), error) {
		k, err := readPartitionsFranz(ctx, brokers, topic, parts, ends)
		if k == nil {
			return nil, err
		}
		return k.Close, err
	})
}

// readPartitionsFranz reads [0, ends[p]) of each of partitions with one
// franz-go consumer and returns it, still open.
func readPartitionsFranz(ctx context.Context, brokers, topic string, partitions []int32, ends []int64) (*kgo.Client, error) {
	offsets := map[int32]kgo.Offset{}
	read := map[int32]int64{}
	for _, p := range partitions {
		if ends[p] > 0 {
			offsets[p] = kgo.NewOffset().At(0)
			read[p] = 0
		}
	}
	if len(offsets) == 0 {
		return nil, nil
	}
	k, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ClientID("sluice-bench-bare"),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.FetchMaxBytes(1<<20), kgo.FetchMaxPartitionBytes(1<<20))
	if err != nil {
		return nil, fmt.Errorf("bare franz-go consumer of %s %s: %w", topic, partitionList(partitions), err)
	}
	left := len(offsets)
	for left > 0 {
		fs := k.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			var got, want int64
			for p, n := range read {
				got, want = got+n, want+ends[p]
			}
			return k, fmt.Errorf("bare franz-go consumer of %s %s: %d of %d records read: %w", topic, partitionList(partitions), got, want, err)
		}
		var failed error
		fs.EachError(func(t string, p int32, err error) {
			failed = fmt.Errorf("bare franz-go consumer of %s/%d: %w", t, p, err)
		})
		if failed != nil {
			return k, failed
		}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 {
				return
			}
			p := fp.Partition
			n := read[p] + int64(len(fp.Records))
			read[p] = n
			if off := fp.Records[len(fp.Records)-1].Offset; off >= ends[p]-1 {
				if n != ends[p] && failed == nil {
					failed = fmt.Errorf("bare franz-go consumer of %s/%d read %d records up to offset %d, want %d", topic, p, n, off, ends[p])
				}
				left--
			}
		})
		if failed != nil {
			return k, failed
		}
	}
	return k, nil
}
