package kafkasrc

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// fetchCount counts the records a franz-go client fetched (its fetch hook).
type fetchCount struct{ n atomic.Int64 }

func (f *fetchCount) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	f.n.Add(int64(m.NumRecords))
}

// kgoReadWide reads the wide backlog as poolReadWide does (batches of a
// range per partition, a stash for what a fetch brings past a range, a
// partition paused when its stash holds 64 KiB), through a franz-go
// consumer, whose pause keeps what it has already fetched, instead of the
// pool's librdkafka consumer, whose pause discards it. It is not a read
// path of Sluice: it measures what one on franz-go would gain.
func kgoReadWide(b *testing.B, cl Cluster, perPart int64) (time.Duration, int64) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	offs := map[int32]kgo.Offset{}
	for p := range int32(widePartitions) {
		offs[p] = kgo.NewOffset().At(0)
	}
	fc := &fetchCount{}
	k, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(cl.Bootstrap, ",")...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"wide": offs}),
		kgo.FetchMaxPartitionBytes(64<<10), kgo.FetchMaxBytes(4<<20), kgo.WithHooks(fc))
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	const share = 64 << 10
	stash := make([][]*kgo.Record, widePartitions)
	stashBytes := make([]int, widePartitions)
	paused := make([]bool, widePartitions)
	n := 0
	step := perPart / wideBatches
	for from := int64(0); from < perPart; from += step {
		until := min(from+step, perPart)
		next := make([]int64, widePartitions)
		open := 0
		var resume []int32
		for p := range stash {
			i := 0
			for ; i < len(stash[p]) && stash[p][i].Offset < until; i++ {
				n++
				stashBytes[p] -= len(stash[p][i].Value) + len(stash[p][i].Key)
			}
			next[p] = from
			if i > 0 {
				next[p] = stash[p][i-1].Offset + 1
			}
			stash[p] = stash[p][i:]
			if next[p] < until && len(stash[p]) == 0 {
				open++
				if paused[p] {
					paused[p] = false
					resume = append(resume, int32(p))
				}
			}
		}
		if len(resume) > 0 {
			k.ResumeFetchPartitions(map[string][]int32{"wide": resume})
		}
		for open > 0 {
			fs := k.PollFetches(ctx)
			var pause []int32
			fs.EachRecord(func(r *kgo.Record) {
				p := r.Partition
				if r.Offset < until && r.Offset >= next[p] {
					n++
					next[p] = r.Offset + 1
					if next[p] == until {
						open--
					}
					return
				}
				stash[p] = append(stash[p], r)
				stashBytes[p] += len(r.Value) + len(r.Key)
				if stashBytes[p] >= share && !paused[p] {
					paused[p] = true
					pause = append(pause, p)
				}
			})
			if len(pause) > 0 {
				k.PauseFetchPartitions(map[string][]int32{"wide": pause})
			}
		}
	}
	d := time.Since(start)
	if n != wideRecords {
		b.Fatalf("read %d records, want %d", n, wideRecords)
	}
	return d, fc.n.Load()
}

// BenchmarkReadRangesWideKgo is BenchmarkReadRangesWide's comparison with
// kgoReadWide in place of the pool.
func BenchmarkReadRangesWideKgo(b *testing.B) {
	_, cl := newTestCluster(b, widePartitions, "wide")
	produceWide(b, cl)
	compareWide(b, cl, "kgo", func(_ int, perPart int64) (time.Duration, int64) {
		return kgoReadWide(b, cl, perPart)
	})
}
