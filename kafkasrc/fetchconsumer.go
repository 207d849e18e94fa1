package kafkasrc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/record"
)

// fetchConsumer is a pool consumer on a franz-go client consuming its
// partitions directly (no group), the pool's consumer whenever franz-go
// connects to the cluster as librdkafka would (kgoConnects).
//
// It does what multiConsumer does on librdkafka, for a third of the CPU a
// record or less: franz-go decodes a fetch in Go with no per-record cgo
// call, buffers one fetch per broker instead of librdkafka's per-partition
// queues, and pausing a partition throws away at most what that one fetch
// holds of it, where librdkafka discards everything it prefetched for it.
// On the wide benchmark (128 partitions read in batches of small ranges)
// it reads 3.3-3.5 times as fast as a bare librdkafka consumer, the
// librdkafka pool 0.65-0.75 times.
//
// franz-go does not say where a partition's stream is when its last
// records were aborted transactions (read_committed drops them without a
// trace); a range whose end is such a gap, with nothing readable after it
// yet, is finished by probing the partition (probe).
type fetchConsumer struct {
	logger        hclog.Logger
	kc            *kgo.Client
	readCommitted bool
	rec           record.Record
	hdrs          []record.Header
	toHold        []*fetchPart // pauseLater
	closeOnce     sync.Once
	stats         *fetchStats // nil: statistics off

	// Owned by the read holding the consumer.
	parts      map[TopicPartition]*fetchPart // the assigned partitions
	reads      uint64                        // reads so far; fetchPart.lastRead
	stashBytes int64                         // the bytes of every partition's stash
	readBytes  int64                         // delivered by the last read, in stash sizes
	dropped    int64                         // records dropped since the last read (ReadStats.Dropped)
	// released are partitions handed over to another consumer (release),
	// still to be removed from franz-go by the next read.
	released []*fetchPart
	rewound  []*fetchPart // dropped from by the poll being handled, to pause
	// maxBytes and partBytes bound a fetch and a partition's part of it
	// (fetchSizes); partFetchBytes is the client's partition bound now.
	maxBytes, partBytes, partFetchBytes int32
}

// fetchPart is one assigned partition of a fetchConsumer: its partState
// and the records polled ahead of the reads. franz-go's own position of
// the partition is next or past it: past by aborted records it did not
// hand over, or, when rewound, by records dropped for want of stash room.
type fetchPart struct {
	partState
	stash stash
	// end is the partition's end (high watermark, or last stable offset
	// under read_committed) as the last fetch of it said; 0 until one has.
	end int64
	// fetched: a fetch of it came back, so franz-go has a cursor for it
	// that SetOffsets moves.
	fetched bool
	// paused: its stash holds its share; franz-go fetches it no more
	// once held (pauseLater).
	paused, held bool
	// failed: a fetch of it failed outside a read of it; the next read
	// seeks, which makes franz-go fetch it again (and meet the error
	// again, if it lasts).
	failed bool
	// refilled: resumed by refillAhead and not paused since.
	refilled bool
	// rewound: records from next on were polled and dropped (the stashes
	// were full); it is paused, and moved back to next when resumed.
	rewound bool
	// adopted: handed over by another consumer of the pool with its stash
	// (adopt); it is paused, and added to franz-go at next when resumed.
	adopted  bool
	progress time.Time // the read's start, or when it last moved next
}

func (pr *fetchPart) tp() TopicPartition { return TopicPartition{pr.topic, pr.partition} }

const (
	// fetchMaxBytes bounds one fetch of a fetchConsumer, the most franz-go
	// buffers per broker (it fetches again from a broker once the last
	// fetch was polled). The wide benchmark reads as fast with 1 MiB as
	// with 4; make bench's (e) workers held 70 MiB more at 4.
	fetchMaxBytes = 1 << 20
	// probeAfter is how long an open range may make no progress, with the
	// client handing over nothing, before the consumer asks the broker
	// where its partition's stream goes on (probe); probes of one read
	// back off up to probeMax.
	probeAfter = 200 * time.Millisecond
	probeMax   = 3 * time.Second
	// fetchPartitionBytes is the least a fetch asks of a partition (its
	// max.partition.fetch.bytes when a read has 8 ranges or more). A
	// record batch above it is served only first in a response (KIP-74):
	// with 64 KiB, two thirds of the 1,024-partition benchmark's
	// responses carried one partition (its batches reach 92 KB), and with
	// the broker on a CPU of its own (e) was at 0.88 against 1.21, for
	// workers at 265-345 MiB RSS instead of 193-216. On CPUs shared with
	// kfake it was 0.86 against 0.78: the more each finished partition
	// brings with the fetch in flight costs the broker (README,
	// Performance).
	fetchPartitionBytes = 128 << 10
	// fetchStashLimit is stashLimit of a fetchConsumer: half the
	// librdkafka pool's. Fetching a partition again costs franz-go less,
	// and the wide benchmark reads as fast with 2, 4 or 8 MiB.
	fetchStashLimit = 4 << 20
)

// stashPartKeep bounds a partition's stash, in stash sizes (stashSize):
// what a poll brings past it is dropped, and fetched again when a read
// asks for it. It bounds what the fetches of a read bring past its
// ranges' ends, which stashCap does not. A record batch comes whole
// (larger than the partition's share when it is the first of a response,
// KIP-74), and a range ending inside one leaves the rest to the stash: a
// topic written in 1 MB batches (2.6 MiB of stash sizes with 112-byte
// records) read in ranges of a twelfth of one keeps about a batch a
// partition. 4 MiB keeps such a batch; it drops from batches past Kafka's
// default 1 MB limit, and from 1 MB batches of records under about 40
// bytes (a stash size counts 160 bytes a record more). Bounds below a
// batch saved that 1,024-partition job memory only by fetching each batch
// again: 1 MiB a partition read it at 0.44 of the 8-partition job
// (2.0-2.3 GB RSS a worker), 256 KiB at 0.35 (0.5-0.7 GB), against 0.59
// (2.3-3.5 GB) keeping it all; a bound of 512 MiB over all of a
// consumer's partitions dropped 60-95 million records fetched for a
// 10M-record job (README, Performance, Big record batches). A variable,
// for tests.
var stashPartKeep int64 = 4 << 20

func newFetchConsumer(cl Cluster, logger hclog.Logger, sink StatsSink) (*fetchConsumer, error) {
	var stats *fetchStats
	var extra []kgo.Opt
	if sink != nil {
		stats = newFetchStats(sink)
		extra = append(extra, kgo.WithHooks(stats))
	}
	iso := kgo.ReadUncommitted()
	if cl.ReadCommitted {
		iso = kgo.ReadCommitted()
	}
	maxBytes, partBytes, minBytes := fetchSizes(cl.Properties)
	c := &fetchConsumer{logger: logger, readCommitted: cl.ReadCommitted, stats: stats, parts: map[TopicPartition]*fetchPart{},
		maxBytes: maxBytes, partBytes: partBytes, partFetchBytes: min(fetchPartitionBytes, partBytes)}
	kc, err := franzClient(cl, append([]kgo.Opt{
		kgo.FetchIsolationLevel(iso),
		// Markers are offsets: a range ending in one finishes on it.
		kgo.KeepControlRecords(),
		// A range below the log start fails, it does not jump.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.FetchMaxWait(stickyFetchWaitMs * time.Millisecond),
		kgo.FetchMaxBytes(maxBytes),
		kgo.FetchMaxPartitionBytes(c.partFetchBytes),
		kgo.FetchMinBytes(minBytes),
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.WithLogger(kgoLogger{logger}),
	}, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	liveClients.Add(1)
	c.kc = kc
	return c, nil
}

// fetchSizes are a fetchConsumer's fetch.max.bytes, most
// max.partition.fetch.bytes and fetch.min.bytes: the pool's, or the
// source's properties where they ask for less (as the librdkafka pool
// lowers them). librdkafka's other fetch properties (its queue, its
// backoffs) have no franz-go counterpart: a franz-go consumer buffers one
// fetch per broker.
func fetchSizes(props map[string]string) (maxBytes, partBytes, minBytes int32) {
	maxBytes, partBytes, minBytes = fetchMaxBytes, fetchMaxBytes, 1
	prop := func(name string) (int32, bool) {
		n, err := strconv.ParseInt(strings.TrimSpace(props[name]), 10, 32)
		return int32(n), err == nil && n > 0
	}
	if n, ok := prop("fetch.max.bytes"); ok {
		maxBytes = min(maxBytes, n)
	}
	for _, name := range []string{"max.partition.fetch.bytes", "fetch.message.max.bytes"} {
		if n, ok := prop(name); ok {
			partBytes = min(partBytes, n)
		}
	}
	if n, ok := prop("fetch.min.bytes"); ok {
		minBytes = min(n, maxBytes)
	}
	return maxBytes, partBytes, minBytes
}

func (c *fetchConsumer) close() {
	c.closeOnce.Do(func() {
		c.kc.Close()
		liveClients.Add(-1)
		if c.stats != nil {
			c.stats.sink.Closed(c.stats.name)
		}
	})
}

func (c *fetchConsumer) assigned(tp TopicPartition) bool { return c.parts[tp] != nil }

// partShare and stashCap are multiConsumer's, for this consumer's
// partitions.
func (c *fetchConsumer) partShare() int64 {
	return min(max(fetchStashLimit/int64(max(len(c.parts), 1)), stashPartMin), stashPartLimit)
}

func (c *fetchConsumer) stashCap() int64 {
	return max(fetchStashLimit, int64(len(c.parts))*stashPartMin)
}

// stashFits returns how many of records, the rest of pr's part of a poll,
// its stash has room for (stashPartKeep).
func stashFits(pr *fetchPart, records []*kgo.Record) int {
	room := stashPartKeep - pr.stash.size
	for i, r := range records {
		if room -= stashSize(r); room < 0 {
			return i
		}
	}
	return len(records)
}

// rewind drops pr's polled records from offset on: they are fetched again
// when a read asks for them. pr is paused once the poll is handled.
func (c *fetchConsumer) rewind(pr *fetchPart, offset int64, dropped int) {
	pr.next, pr.rewound = offset, true
	c.dropped += int64(dropped)
	c.rewound = append(c.rewound, pr)
}

func (c *fetchConsumer) smallRead(parts int) bool {
	return c.readBytes/int64(max(parts, 1)) <= c.partShare()/2
}

// tps groups partitions by topic, as franz-go's calls take them.
func tps(prs []*fetchPart) map[string][]int32 {
	m := map[string][]int32{}
	for _, pr := range prs {
		m[pr.topic] = append(m[pr.topic], pr.partition)
	}
	return m
}

// position readies the read's partitions: a new one is added at From, one
// whose stream is elsewhere is moved to From, a paused one whose stash ends
// before its range does is resumed; the partitions no recent read asked
// for are removed.
func (c *fetchConsumer) position(ranges []Range) ([]*fetchPart, error) {
	c.reads++
	if len(c.released) > 0 {
		m := tps(c.released)
		clear(c.released)
		c.released = c.released[:0]
		c.kc.ResumeFetchPartitions(m)
		c.kc.RemoveConsumePartitions(m)
	}
	now := time.Now()
	var add map[string]map[int32]kgo.Offset
	var set map[string]map[int32]kgo.EpochOffset
	var readd, resume []*fetchPart
	prs := make([]*fetchPart, 0, len(ranges))
	for _, r := range ranges {
		key := TopicPartition{r.Topic, r.Partition}
		pr := c.parts[key]
		switch {
		case pr == nil:
			pr = &fetchPart{partState: partState{topic: r.Topic, partition: r.Partition, consumed: r.From, next: r.From}}
			c.parts[key] = pr
			add = withOffset(add, r.Topic, r.Partition, kgo.NewOffset().At(r.From))
		case r.From < pr.consumed || r.From > pr.next || pr.failed:
			c.dropStash(pr, pr.stash.len())
			pr.consumed, pr.next, pr.end, pr.failed, pr.rewound, pr.adopted = r.From, r.From, 0, false, false, false
			if pr.fetched {
				set = withOffset(set, r.Topic, r.Partition, kgo.EpochOffset{Epoch: -1, Offset: r.From})
			} else {
				// franz-go has no cursor to move yet: add it anew.
				readd = append(readd, pr)
			}
		default:
			c.stashBytes -= pr.stash.dropBelow(r.From) // read by an earlier batch elsewhere
			pr.consumed = r.From
		}
		// A partition whose stash covers the range stays paused.
		if pr.paused && pr.next < r.Until {
			pr.paused = false
			resume = append(resume, pr)
		}
		pr.r, pr.reading, pr.lastRead, pr.progress = r, true, c.reads, now
		prs = append(prs, pr)
	}
	c.evict()
	// A fetch brings each partition up to its share of fetchMaxBytes,
	// fetchPartitionBytes at least: a read of one big range gets the
	// whole fetch.
	if b := min(max(c.maxBytes/int32(len(ranges)), fetchPartitionBytes), c.partBytes); b != c.partFetchBytes {
		c.partFetchBytes = b
		c.kc.UpdateFetchMaxBytes(c.maxBytes, b)
	}
	if len(readd) > 0 {
		c.kc.RemoveConsumePartitions(tps(readd))
		for _, pr := range readd {
			add = withOffset(add, pr.topic, pr.partition, kgo.NewOffset().At(pr.next))
		}
	}
	if len(set) > 0 {
		c.kc.SetOffsets(set)
	}
	if len(add) > 0 {
		c.kc.AddConsumePartitions(add)
	}
	c.resume(resume)
	return prs, nil
}

// evict removes the partitions that no read of the last idleReads asked
// for, and the least recently read beyond maxAssigned.
func (c *fetchConsumer) evict() {
	gone := evictable(c.parts, c.reads)
	if len(gone) == 0 {
		return
	}
	for _, pr := range gone {
		c.dropStash(pr, pr.stash.len())
		delete(c.parts, pr.tp())
	}
	m := tps(gone)
	// A removed partition stays paused in franz-go: resumed, it is
	// fetched at once if a later read adds it back.
	c.kc.ResumeFetchPartitions(m)
	c.kc.RemoveConsumePartitions(m)
}

// pauseLater marks pr paused, and leaves it to hold to tell franz-go after
// the next poll: the fetch in flight already asks for pr (franz-go asks
// for a partition again as soon as a fetch of it was taken, and the
// broker fills a fetch with the partitions it last served first), and
// franz-go throws away what a fetch holds of partitions paused before it
// is polled, to fetch it again. Pausing at once made the 1,024-partition
// benchmark fetch a third of its records twice.
func (c *fetchConsumer) pauseLater(pr *fetchPart) {
	pr.paused, pr.refilled = true, false
	c.toHold = append(c.toHold, pr)
}

// capStashes pauses every partition outside the read, at once, when the
// stashes together reach their cap: what the fetches in flight hold of
// them is fetched again later, and the stashes stay within the cap, the
// ends of the read's last fetches past their ranges and one fetch.
// Pausing them one by one as each filled its share, after the next poll,
// left 125 partitions holding 24 MB against a cap of 4 MiB.
func (c *fetchConsumer) capStashes() {
	if c.stashBytes < c.stashCap() {
		return
	}
	var prs []*fetchPart
	for _, pr := range c.parts {
		if !pr.held && !pr.open() && !pr.adopted {
			prs = append(prs, pr)
		}
	}
	c.pauseNow(prs)
}

// pauseNow pauses prs, in franz-go at once.
func (c *fetchConsumer) pauseNow(prs []*fetchPart) {
	for _, pr := range prs {
		pr.paused, pr.held, pr.refilled = true, true, false
	}
	if len(prs) > 0 {
		c.kc.PauseFetchPartitions(tps(prs))
	}
}

// hold pauses in franz-go the partitions pauseLater marked before the
// poll just taken, unless a read resumed them since.
func (c *fetchConsumer) hold() {
	if len(c.toHold) == 0 {
		return
	}
	var prs []*fetchPart
	for _, pr := range c.toHold {
		if pr.paused && !pr.held && c.parts[pr.tp()] == pr {
			prs = append(prs, pr)
		}
	}
	clear(c.toHold)
	c.toHold = c.toHold[:0]
	c.pauseNow(prs)
}

// resume unpauses prs, in franz-go those it holds, moving the rewound
// back to where their stash ends.
func (c *fetchConsumer) resume(prs []*fetchPart) {
	var held []*fetchPart
	var set map[string]map[int32]kgo.EpochOffset
	var add map[string]map[int32]kgo.Offset
	for _, pr := range prs {
		pr.paused = false
		if pr.adopted {
			pr.adopted = false
			add = withOffset(add, pr.topic, pr.partition, kgo.NewOffset().At(pr.next))
		} else if pr.rewound {
			pr.rewound = false
			set = withOffset(set, pr.topic, pr.partition, kgo.EpochOffset{Epoch: -1, Offset: pr.next})
		}
		if pr.held {
			pr.held = false
			held = append(held, pr)
		}
	}
	if set != nil {
		c.kc.SetOffsets(set)
	}
	if len(held) > 0 {
		c.kc.ResumeFetchPartitions(tps(held))
	}
	if add != nil {
		c.kc.AddConsumePartitions(add)
	}
}

// withOffset sets m[topic][partition] to o, making the maps it lacks, as
// franz-go's calls taking offsets by topic and partition want them.
func withOffset[O any](m map[string]map[int32]O, topic string, partition int32, o O) map[string]map[int32]O {
	if m == nil {
		m = map[string]map[int32]O{}
	}
	if m[topic] == nil {
		m[topic] = map[int32]O{}
	}
	m[topic][partition] = o
	return m
}

// missing returns the ranges whose partitions c does not have.
func (c *fetchConsumer) missing(ranges []Range) []Range {
	var out []Range
	for _, r := range ranges {
		if c.parts[TopicPartition{r.Topic, r.Partition}] == nil {
			out = append(out, r)
		}
	}
	return out
}

// release takes tp, with its stash, out of c, an idle consumer of the pool,
// for another consumer to adopt; nil when c does not have it. franz-go
// drops it at c's next read (released).
func (c *fetchConsumer) release(tp TopicPartition) *fetchPart {
	pr := c.parts[tp]
	if pr == nil {
		return nil
	}
	delete(c.parts, tp)
	c.stashBytes -= pr.stash.size
	c.released = append(c.released, pr)
	return pr
}

// adopt makes pr, released by another consumer, one of c's partitions:
// paused, with no cursor in c's franz-go client until a read or a refill
// resumes it at next.
func (c *fetchConsumer) adopt(pr *fetchPart) {
	pr.paused, pr.held, pr.refilled, pr.rewound, pr.fetched, pr.adopted = true, false, false, false, false, true
	pr.lastRead = c.reads
	c.parts[pr.tp()] = pr
	c.stashBytes += pr.stash.size
}

func (c *fetchConsumer) dropStash(pr *fetchPart, n int) {
	c.stashBytes -= pr.stash.drop(n)
}

// keep stashes r, polled for pr outside a read of it, and returns whether
// pr is now to be paused: its stash holds its share, or all the stashes
// their cap. Records polled after that are kept too (a fetch brings at
// most fetchPartitionBytes of a partition); nothing polled is dropped.
func (c *fetchConsumer) keep(pr *fetchPart, r *kgo.Record) (pause bool, err error) {
	if err := pr.belowNext(r.Offset); err != nil {
		return false, err
	}
	pr.next = r.Offset + 1
	if r.Attrs.IsControl() {
		return false, nil
	}
	c.stashBytes += pr.stash.add(r)
	return !pr.paused && (pr.stash.size >= c.partShare() || c.stashBytes >= c.stashCap()), nil
}

func (c *fetchConsumer) read(ctx context.Context, ranges []Range, fn func(*record.Record) error) (ReadStats, error) {
	prs, err := c.position(ranges)
	if err != nil {
		return ReadStats{}, err
	}
	defer func() {
		for _, pr := range prs {
			pr.reading = false
		}
	}()
	st, err := c.readPrepared(ctx, prs, fn)
	st.Dropped, c.dropped = c.dropped, 0
	if err != nil {
		return st, err
	}
	if c.smallRead(len(prs)) {
		c.refillAhead(prs)
	}
	return st, nil
}

// readPrepared is read once the partitions are positioned.
func (c *fetchConsumer) readPrepared(ctx context.Context, prs []*fetchPart, fn func(*record.Record) error) (ReadStats, error) {
	var st ReadStats
	c.readBytes = 0
	remaining := 0
	for _, pr := range prs {
		n, err := pr.stash.each(pr.r.Until, func(ch *stashChunk, sr *stashedRecord) error {
			c.readBytes += int64(sr.size)
			return c.deliverStashed(pr.r, ch, sr, fn)
		})
		st.Records += int64(n)
		st.Stashed += int64(n)
		if err != nil {
			return st, err
		}
		c.dropStash(pr, n)
		pr.consumed = pr.r.Until
		if pr.stash.len() == 0 && pr.next < pr.r.Until {
			remaining++
		}
	}
	wait := probeAfter
	lastRecords := time.Now() // when the client last handed over records
	for remaining > 0 {
		pollCtx, cancel := context.WithTimeout(ctx, wait)
		fs := c.kc.PollFetches(pollCtx)
		cancel()
		c.hold()
		if err := ctx.Err(); err != nil {
			pr := firstOpen(prs)
			return st, fmt.Errorf("read %s: at offset %d: %w", pr.r, pr.next, err)
		}
		st.Polls += int64(fs.NumRecords())
		c.stats.maybeSend(c.kc)
		done, err := c.handle(fs, fn, &st)
		remaining -= done
		if err != nil {
			return st, fmt.Errorf("read %d ranges: %w", len(prs), err)
		}
		if remaining == 0 {
			break
		}
		// Probe only when the client handed over nothing for a whole
		// wait: while records flow, a range waits its turn behind the
		// others' fetches, and a poll can come back empty when all it
		// held was of paused partitions (probing on every empty poll made
		// probes 4% of a busy 1,024-partition job's workers, and more of
		// its broker).
		if fs.NumRecords() > 0 {
			lastRecords = time.Now()
			continue
		}
		if time.Since(lastRecords) < wait {
			continue
		}
		if stalled := c.stalled(prs, wait); len(stalled) > 0 {
			done, err := c.probe(ctx, stalled)
			remaining -= done
			if err != nil {
				return st, err
			}
			wait = min(2*wait, probeMax)
		}
	}
	return st, nil
}

// handle takes a poll's fetches: records of an open range are delivered,
// the others stashed. It returns how many open ranges finished.
func (c *fetchConsumer) handle(fs kgo.Fetches, fn func(*record.Record) error, st *ReadStats) (finished int, err error) {
	defer func() {
		c.pauseNow(c.rewound)
		clear(c.rewound)
		c.rewound = c.rewound[:0]
		c.capStashes()
	}()
	for i := range fs {
		for j := range fs[i].Topics {
			t := &fs[i].Topics[j]
			for k := range t.Partitions {
				fp := &t.Partitions[k]
				if fp.Err != nil && t.Topic == "" {
					// An injected error: our poll timing out, or the
					// client closed.
					if errors.Is(fp.Err, context.DeadlineExceeded) || errors.Is(fp.Err, context.Canceled) {
						continue
					}
					return finished, fmt.Errorf("poll: %w", fp.Err)
				}
				pr := c.parts[TopicPartition{t.Topic, fp.Partition}]
				if pr == nil {
					continue // removed since it was fetched
				}
				pr.fetched = true
				if fp.Err != nil {
					if !pr.open() {
						pr.failed = true // the read that asks for it meets it again
						continue
					}
					if err := fetchError(pr.r, pr.next, fp.Err); err != nil {
						return finished, err
					}
					c.logger.Warn("kafka fetch error", "topic", pr.topic, "partition", pr.partition, "error", fp.Err)
					continue
				}
				if end := fp.HighWatermark; end >= 0 {
					if c.readCommitted && fp.LastStableOffset >= 0 {
						end = fp.LastStableOffset
					}
					pr.end = end
				}
				if pr.rewound {
					continue // what it holds is fetched again from next
				}
				wasOpen := pr.open()
				reserved, moved := false, false
				keep := len(fp.Records) // the records from here on are dropped
				for i, r := range fp.Records {
					if !reserved && (!pr.open() || r.Offset >= pr.r.Until) {
						keep = i + stashFits(pr, fp.Records[i:])
						if keep > i {
							pr.stash.reserve(fp.Records[i:keep])
						}
						reserved = true
					}
					if i >= keep {
						if err := pr.belowNext(r.Offset); err != nil {
							return finished, err
						}
						// Past a gap at the end of an open range, this
						// finishes it: nothing lies between.
						c.rewind(pr, r.Offset, len(fp.Records)-i)
						break
					}
					if !pr.open() {
						p, err := c.keep(pr, r)
						if err != nil {
							return finished, err
						}
						if p {
							c.pauseLater(pr)
						}
						continue
					}
					if r.Offset < pr.next {
						return finished, fmt.Errorf("read %s: polled offset %d below the position %d: %w", pr.r, r.Offset, pr.next, errUnexpectedOffset)
					}
					if r.Offset >= pr.r.Until {
						// Past a gap at the end of the range: the next read's.
						if _, err := c.keep(pr, r); err != nil {
							return finished, err
						}
						continue
					}
					pr.next = r.Offset + 1
					moved = true
					if r.Attrs.IsControl() {
						continue
					}
					if err := c.deliver(pr.r, r, fn); err != nil {
						return finished, err
					}
					c.readBytes += int64(len(r.Key) + len(r.Value) + messageOverhead)
					st.Records++
				}
				if moved {
					// Once a partition's part of a poll, not a record: the
					// clock read per record was 3% of a worker's CPU.
					pr.progress = time.Now()
				}
				if wasOpen && !pr.open() {
					finished++
				}
			}
		}
	}
	return finished, nil
}

// fetchError converts a partition's fetch error met while reading r at
// next; nil for the errors franz-go retries by itself.
func fetchError(r Range, next int64, err error) error {
	switch {
	case errors.Is(err, kerr.OffsetOutOfRange):
		return fmt.Errorf("read %s: from offset %d: %w: %w", r, next, err, ErrOffsetOutOfRange)
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return fmt.Errorf("read %s: at offset %d: %w: %w", r, next, err, ErrUnknownTopic)
	case kerr.IsRetriable(err):
		return nil
	}
	return franzPermanent(fmt.Errorf("read %s: at offset %d: %w", r, next, err))
}

func (c *fetchConsumer) deliver(r Range, m *kgo.Record, fn func(*record.Record) error) error {
	rec := &c.rec
	rec.Topic, rec.Partition, rec.Offset = r.Topic, r.Partition, m.Offset
	rec.Key, rec.Value, rec.Timestamp = m.Key, m.Value, m.Timestamp
	rec.Headers = nil
	if len(m.Headers) > 0 {
		c.hdrs = c.hdrs[:0]
		for _, h := range m.Headers {
			c.hdrs = append(c.hdrs, record.Header{Key: h.Key, Value: h.Value})
		}
		rec.Headers = c.hdrs
	}
	if err := fn(rec); err != nil {
		return fmt.Errorf("read %s: record at offset %d: %w", r, m.Offset, err)
	}
	return nil
}

func (c *fetchConsumer) deliverStashed(r Range, ch *stashChunk, sr *stashedRecord, fn func(*record.Record) error) error {
	rec := &c.rec
	rec.Topic, rec.Partition = r.Topic, r.Partition
	ch.fill(rec, sr)
	if err := fn(rec); err != nil {
		return fmt.Errorf("read %s: record at offset %d: %w", r, sr.offset, err)
	}
	return nil
}

// stalled returns the open ranges that made no progress for wait.
func (c *fetchConsumer) stalled(prs []*fetchPart, wait time.Duration) []*fetchPart {
	var out []*fetchPart
	now := time.Now()
	for _, pr := range prs {
		if pr.open() && now.Sub(pr.progress) >= wait {
			out = append(out, pr)
		}
	}
	return out
}

// topUp polls what franz-go has already fetched, without waiting, into the
// stashes, and pauses the partitions refilled ahead whose stash reaches
// their end. franz-go fetches again from a broker only once its last fetch
// was polled: without this, a consumer between reads would fetch nothing.
func (c *fetchConsumer) topUp(int64) error {
	var st ReadStats
	fs := c.kc.PollFetches(nil)
	c.hold()
	if _, err := c.handle(fs, nil, &st); err != nil {
		return fmt.Errorf("top up: %w", err)
	}
	c.stats.maybeSend(c.kc)
	var done []*fetchPart
	for _, pr := range c.parts {
		if pr.refilled && !pr.paused && pr.end > 0 && pr.next >= pr.end {
			done = append(done, pr) // at its end: nothing of it in flight
		}
	}
	c.pauseNow(done)
	return nil
}

// refillAhead is multiConsumer.refillAhead: paused partitions of the read
// whose stash fell below half its share are resumed, the emptiest first
// and as many as refillCount says, so that their next records are fetched
// between reads.
func (c *fetchConsumer) refillAhead(prs []*fetchPart) {
	if c.stashBytes >= c.stashCap() {
		return // what it fetched would be dropped
	}
	share := c.partShare()
	var low []*fetchPart
	for _, pr := range prs {
		if pr.paused && pr.stash.size < share/2 && (pr.end == 0 || pr.next < pr.end) {
			low = append(low, pr)
		}
	}
	if len(low) == 0 {
		return
	}
	slices.SortFunc(low, func(a, b *fetchPart) int { return cmp.Compare(a.stash.size, b.stash.size) })
	emptiest := low[0]
	low = low[:refillCount(len(low), int64(emptiest.stash.len()), emptiest.r.Until-emptiest.r.From)]
	for _, pr := range low {
		pr.refilled = true
	}
	c.resume(low)
}

// kgoLogger logs a franz-go client's warnings and errors.
type kgoLogger struct{ logger hclog.Logger }

func (l kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	switch level {
	case kgo.LogLevelError:
		l.logger.Error("kafka client: "+msg, keyvals...)
	case kgo.LogLevelWarn:
		l.logger.Warn("kafka client: "+msg, keyvals...)
	}
}
