package kafkasrc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/record"
)

// poolKinds are the pool's two kinds of consumers: franz-go's, whenever
// it connects as librdkafka would, and librdkafka's for other clusters.
var poolKinds = []struct {
	name       string
	librdkafka bool
}{{"franz-go", false}, {"librdkafka", true}}

// eachPool runs f once per kind of pool consumer, with a constructor of
// pools of that kind.
func eachPool(t *testing.T, f func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool)) {
	for _, kind := range poolKinds {
		t.Run(kind.name, func(t *testing.T) {
			f(t, func(t testing.TB, maxIdle int) *Pool {
				t.Helper()
				p := NewPool(maxIdle, testLogger(t))
				p.librdkafka = kind.librdkafka
				t.Cleanup(p.Close)
				return p
			})
		})
	}
}

// assignedParts returns the partitions a pool consumer has assigned.
func assignedParts(c rangeConsumer) []TopicPartition {
	var out []TopicPartition
	switch c := c.(type) {
	case *multiConsumer:
		for tp := range c.parts {
			out = append(out, tp)
		}
	case *fetchConsumer:
		for tp := range c.parts {
			out = append(out, tp)
		}
	}
	return out
}

// runningParts returns how many of a pool consumer's partitions are not
// paused.
func runningParts(c rangeConsumer) int {
	n := 0
	switch c := c.(type) {
	case *multiConsumer:
		for _, pr := range c.parts {
			if !pr.paused {
				n++
			}
		}
	case *fetchConsumer:
		for _, pr := range c.parts {
			if !pr.paused {
				n++
			}
		}
	}
	return n
}

// readRanges reads through p and returns the records per partition, copied.
func readRanges(ctx context.Context, p *Pool, cl Cluster, ranges []Range) (map[int32][]want, ReadStats, error) {
	got := map[int32][]want{}
	st, err := p.ReadRanges(ctx, cl, "sluice-test", ranges, func(rec *record.Record) error {
		w := want{Offset: rec.Offset, Key: string(rec.Key), Value: string(rec.Value), Time: rec.Timestamp}
		for _, h := range rec.Headers {
			w.Headers = append(w.Headers, record.Header{Key: h.Key, Value: append([]byte(nil), h.Value...)})
		}
		got[rec.Partition] = append(got[rec.Partition], w)
		return nil
	})
	return got, st, err
}

// TestReadRangesManyPartitions reads 64 partitions' ranges at once, twice
// in a row through the same pooled consumer: exactly the ground truth per
// partition, in offset order.
func TestReadRangesManyPartitions(t *testing.T) {
	eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
		const parts = 64
		_, cl := newTestCluster(t, parts, "many")
		k := newKgo(t, cl)
		truth := map[int32][]want{}
		for p := range int32(parts) {
			truth[p] = produce(t, k, "many", p, keyed(0, int(p%7)*3+1))
		}
		pool := newPool(t, 2)
		from := map[int32]int64{}
		for round := range 2 {
			var ranges []Range
			for p := range int32(parts) {
				n := int64(len(truth[p]))
				until := n
				if round == 0 {
					until = n / 2
				}
				ranges = append(ranges, Range{Topic: "many", Partition: p, From: from[p], Until: until})
			}
			got, st, err := readRanges(testCtx(t), pool, cl, ranges)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			var total int64
			for _, r := range ranges {
				sameRecords(t, r.String(), got[r.Partition], between(truth[r.Partition], r.From, r.Until))
				total += int64(len(got[r.Partition]))
				from[r.Partition] = r.Until
			}
			if st.Records != total {
				t.Errorf("round %d: stats.Records = %d, delivered %d", round, st.Records, total)
			}
			if pool.Idle() != 1 {
				t.Errorf("round %d: %d idle consumers, want the one consumer back in the pool", round, pool.Idle())
			}
		}
	})
}

// TestReadRangesTransactional: aborted records and transaction markers are
// gaps; a range ending in a gap finishes by the consumer's position.
func TestReadRangesTransactional(t *testing.T) {
	eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
		cl, committed := txnTopic(t)
		pool := newPool(t, 2)
		// 5 committed + marker, 3 aborted + marker, 2 committed + marker: 13 offsets.
		for _, r := range []Range{{Topic: "tx", From: 0, Until: 13}, {Topic: "tx", From: 0, Until: 9}, {Topic: "tx", From: 5, Until: 13}} {
			got, _, err := readRanges(testCtx(t), pool, cl, []Range{r})
			if err != nil {
				t.Fatalf("ReadRanges(%s): %v", r, err)
			}
			sameRecords(t, r.String(), got[0], between(committed, r.From, r.Until))
		}
	})
}

func TestReadRangesInvalid(t *testing.T) {
	eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
		_, cl := newTestCluster(t, 2, "t")
		pool := newPool(t, 2)
		for _, rs := range [][]Range{
			{{Topic: "", Partition: 0, From: 0, Until: 1}},
			{{Topic: "t", Partition: 0, From: 5, Until: 1}},
			{{Topic: "t", Partition: -1, From: 0, Until: 1}},
			{{Topic: "t", Partition: 0, From: 0, Until: 1}, {Topic: "t", Partition: 0, From: 1, Until: 2}},
		} {
			if _, _, err := readRanges(testCtx(t), pool, cl, rs); !errors.Is(err, ErrInvalidRange) {
				t.Errorf("ReadRanges(%v) = %v, want ErrInvalidRange", rs, err)
			}
		}
		got, _, err := readRanges(testCtx(t), pool, cl, []Range{{Topic: "t", Partition: 1, From: 3, Until: 3}})
		if err != nil || len(got) != 0 {
			t.Errorf("ReadRanges(empty) = %v, %v; want nothing", got, err)
		}
	})
}

// TestReadRangesOutOfRange: one partition's range below its log start fails
// the read naming that partition, and the consumer is not pooled.
func TestReadRangesOutOfRange(t *testing.T) {
	eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
		_, cl := newTestCluster(t, 2, "t")
		k := newKgo(t, cl)
		produce(t, k, "t", 0, keyed(0, 10))
		produce(t, k, "t", 1, keyed(0, 100))
		deleteRecords(t, k, "t", 1, 50)
		pool := newPool(t, 2)
		_, _, err := readRanges(testCtx(t), pool, cl, []Range{{Topic: "t", Partition: 0, From: 0, Until: 10}, {Topic: "t", Partition: 1, From: 10, Until: 60}})
		if !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("ReadRanges = %v, want ErrOffsetOutOfRange", err)
		}
		if !strings.Contains(err.Error(), "t/1") {
			t.Errorf("error %q does not name t/1", err)
		}
		if pool.Idle() != 0 {
			t.Errorf("%d idle consumers after a failed read, want none", pool.Idle())
		}
	})
}

func TestReadRangesCancel(t *testing.T) {
	eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
		_, cl := newTestCluster(t, 1, "t")
		k := newKgo(t, cl)
		produce(t, k, "t", 0, keyed(0, 10))
		pool := newPool(t, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		// Offset 20 never comes: the read waits until its context ends.
		_, _, err := readRanges(ctx, pool, cl, []Range{{Topic: "t", Partition: 0, From: 0, Until: 20}})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ReadRanges = %v, want the deadline", err)
		}
		if !strings.Contains(err.Error(), "t/0") || !strings.Contains(err.Error(), fmt.Sprint(10)) {
			t.Errorf("error %q does not name t/0 at offset 10", err)
		}
	})
}

func TestReadRangesCallbackError(t *testing.T) {
	eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
		_, cl := newTestCluster(t, 1, "t")
		k := newKgo(t, cl)
		produce(t, k, "t", 0, keyed(0, 10))
		pool := newPool(t, 2)
		boom := errors.New("boom")
		_, err := pool.ReadRanges(testCtx(t), cl, "g", []Range{{Topic: "t", Partition: 0, From: 0, Until: 10}}, func(r *record.Record) error {
			if r.Offset == 4 {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "offset 4") {
			t.Fatalf("ReadRanges = %v, want boom at offset 4", err)
		}
	})
}

// TestReadRangesSticky: a pool consumer keeps its partitions between reads.
// Reads that continue where the last ones ended are served from what it
// polled before; reads that go back, skip ahead or follow a partition whose
// stash filled up (and was paused) still deliver exactly their records; a
// partition no read asked for in idleReads reads is unassigned.
func TestReadRangesSticky(t *testing.T) {
	eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
		const parts = 8
		_, cl := newTestCluster(t, parts, "s")
		k := newKgo(t, cl, kgo.ProducerBatchMaxBytes(4<<20))
		truth := map[int32][]want{}
		for p := range int32(parts) {
			truth[p] = produce(t, k, "s", p, keyed(0, 200))
		}
		// Partition 0 also holds more than a stash may keep of it.
		big := make([]*kgo.Record, 0, 3000)
		for i := range 3000 {
			big = append(big, &kgo.Record{Key: fmt.Appendf(nil, "b%d", i), Value: []byte(strings.Repeat("x", 1000))})
		}
		truth[0] = append(truth[0], produce(t, k, "s", 0, big)...)
		pool := newPool(t, 2)
		read := func(what string, ranges []Range) ReadStats {
			t.Helper()
			got, st, err := readRanges(testCtx(t), pool, cl, ranges)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			for _, r := range ranges {
				sameRecords(t, what+" "+r.String(), got[r.Partition], between(truth[r.Partition], r.From, r.Until))
			}
			return st
		}
		window := func(from, until int64, ps ...int32) []Range {
			var rs []Range
			for _, p := range ps {
				rs = append(rs, Range{Topic: "s", Partition: p, From: from, Until: until})
			}
			return rs
		}
		all := []int32{0, 1, 2, 3, 4, 5, 6, 7}
		var stashed int64
		for i := range int64(5) {
			st := read(fmt.Sprintf("window %d", i), window(i*10, i*10+10, all...))
			if i > 0 {
				stashed += st.Stashed
			}
		}
		if stashed == 0 {
			t.Errorf("reads continuing where the last ones ended delivered nothing from the stash")
		}
		read("back to the start", window(0, 30, all...))
		read("skip ahead", window(100, 120, all...))
		read("the rest of partition 0, past its stash limit", []Range{{Topic: "s", Partition: 0, From: 120, Until: int64(len(truth[0]))}})
		read("more than the stash of partition 0 holds", window(120, 150, all...))
		for i := range int64(idleReads + 1) {
			read("partition 1 only", window(150+i, 151+i, 1))
		}
		if pool.Idle() != 1 {
			t.Fatalf("%d idle consumers, want 1", pool.Idle())
		}
		for _, cs := range pool.idle {
			for _, tp := range assignedParts(cs[0].rangeConsumer) {
				if tp.Partition != 1 {
					t.Errorf("%s is still assigned after %d reads without it", tp, idleReads+1)
				}
			}
		}
	})
}

// TestPoolClosesIdleConsumers: consumers left idle past the timeout are
// closed (a sticky consumer would otherwise keep fetching for a job that
// may be gone); recent ones are kept.
func TestPoolClosesIdleConsumers(t *testing.T) {
	eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
		_, cl := newTestCluster(t, 1, "t")
		produce(t, newKgo(t, cl), "t", 0, keyed(0, 10))
		pool := newPool(t, 2)
		if _, _, err := readRanges(testCtx(t), pool, cl, []Range{{Topic: "t", Partition: 0, From: 0, Until: 10}}); err != nil {
			t.Fatal(err)
		}
		if n := pool.closeIdle(time.Now().Add(-time.Hour)); n != 0 || pool.Idle() != 1 {
			t.Fatalf("closeIdle(an hour ago) closed %d, %d idle; want the recent consumer kept", n, pool.Idle())
		}
		if n := pool.closeIdle(time.Now().Add(time.Second)); n != 1 || pool.Idle() != 0 {
			t.Fatalf("closeIdle(now) closed %d, %d idle; want the consumer closed", n, pool.Idle())
		}
	})
}

// TestPoolBoundsIdleAcrossGroups: every job reads with a group of its own,
// so the bound on idle consumers is over all groups: the one idle longest
// is closed.
func TestPoolBoundsIdleAcrossGroups(t *testing.T) {
	eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
		_, cl := newTestCluster(t, 1, "t")
		produce(t, newKgo(t, cl), "t", 0, keyed(0, 10))
		pool := newPool(t, 2)
		for i := range 5 {
			group := fmt.Sprintf("job-%d", i)
			if _, err := pool.ReadRanges(testCtx(t), cl, group, []Range{{Topic: "t", Partition: 0, From: 0, Until: 10}}, func(*record.Record) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if n := pool.Idle(); n != min(i+1, 2) {
				t.Fatalf("after %d groups: %d idle consumers, want %d", i+1, n, min(i+1, 2))
			}
		}
		pool.mu.Lock()
		defer pool.mu.Unlock()
		for key := range pool.idle {
			if key.group != "job-3" && key.group != "job-4" {
				t.Errorf("idle consumer of %s kept; want the two most recent groups'", key.group)
			}
		}
	})
}

// TestReadRangesStepByStep: a job reading one record per partition per
// batch from a backlog on hundreds or thousands of partitions finds its
// records in the stash most of the time, while the records librdkafka
// fetched meanwhile move to the stashes after each read (topUp) instead of
// in one burst when the stashes run dry. Every read delivers exactly its
// records.
func TestReadRangesStepByStep(t *testing.T) {
	for _, tc := range []struct {
		name           string
		parts, backlog int
		// oneBatch: each partition's backlog in one record batch (as the
		// coordination benchmark writes it); else a record batch per
		// record, as a producer writing one record per partition at a
		// time makes.
		oneBatch bool
	}{
		// A partition's stash share holds about a hundred such records.
		{name: "512 partitions", parts: 512, backlog: 200},
		// A stash share holds about a hundred records (stashPartMin): the
		// stashes run low together, twice, and are refilled ahead
		// (refillAhead).
		{name: "1100 partitions", parts: 1100, backlog: 200, oneBatch: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachPool(t, func(t *testing.T, newPool func(t testing.TB, maxIdle int) *Pool) {
				readStepByStep(t, newPool(t, 2), int32(tc.parts), tc.backlog, tc.oneBatch)
			})
		})
	}
}

func readStepByStep(t *testing.T, pool *Pool, parts int32, backlog int, oneBatch bool) {
	_, cl := newTestCluster(t, parts, "steps")
	k := newKgo(t, cl)
	truth := map[int32][]want{}
	produced := func(rs []*kgo.Record) {
		if err := k.ProduceSync(testCtx(t), rs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			truth[r.Partition] = append(truth[r.Partition], want{Offset: r.Offset, Key: string(r.Key), Value: "v", Time: r.Timestamp})
		}
	}
	record := func(p int32, i int) *kgo.Record {
		return &kgo.Record{Topic: "steps", Partition: p, Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}
	}
	if oneBatch {
		var rs []*kgo.Record
		for p := range parts {
			for i := range backlog {
				rs = append(rs, record(p, i))
			}
		}
		produced(rs)
	} else {
		for i := range backlog {
			rs := make([]*kgo.Record, 0, parts)
			for p := range parts {
				rs = append(rs, record(p, i))
			}
			produced(rs)
		}
	}
	var stashed, polls, maxPolls int64
	for i := range int64(backlog) {
		time.Sleep(2 * time.Millisecond) // batches come a few milliseconds apart
		var ranges []Range
		for p := range int32(parts) {
			ranges = append(ranges, Range{Topic: "steps", Partition: p, From: i, Until: i + 1})
		}
		got, st, err := readRanges(testCtx(t), pool, cl, ranges)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		for _, r := range ranges {
			sameRecords(t, fmt.Sprintf("read %d %s", i, r), got[r.Partition], between(truth[r.Partition], r.From, r.Until))
		}
		if i > 0 {
			stashed += st.Stashed
			polls += st.Polls
			maxPolls = max(maxPolls, st.Polls)
		}
	}
	if stashed == 0 {
		t.Errorf("no read found its records in the stash")
	}
	t.Logf("reads after the first: %d records from the stash, %d polls, at most %d in one read", stashed, polls, maxPolls)
	if oneBatch {
		// Refilled to the end of their logs, the partitions were paused:
		// left running, each is fetched at the tail over and over.
		pool.Idle() // waits for the last top-up
		pool.mu.Lock()
		running := 0
		for _, cs := range pool.idle {
			for _, c := range cs {
				running += runningParts(c.rangeConsumer)
			}
		}
		pool.mu.Unlock()
		if running > 0 {
			t.Errorf("%d partitions read to their end are still fetched", running)
		}
	}
	// Stashes refilled all at once when they ran dry made one read poll
	// about a stash share of every partition (50,000 at 1,100 partitions).
	if limit := 10 * int64(parts); maxPolls > limit {
		t.Errorf("a read polled %d records, over %d: the stashes ran dry together", maxPolls, limit)
	}
}

// TestRefillCount: partitions running low together are resumed over the
// reads left before the emptiest runs dry, at least refillPerRead a read.
func TestRefillCount(t *testing.T) {
	for _, tc := range []struct {
		low              int
		stashed, perRead int64
		want             int
	}{
		{low: 2000, stashed: 13, perRead: 1, want: 154},
		{low: 2000, stashed: 1, perRead: 1, want: 2000},
		{low: 2000, stashed: 0, perRead: 1, want: 2000},
		{low: 100, stashed: 13, perRead: 1, want: refillPerRead},
		{low: 10, stashed: 13, perRead: 1, want: 10},
		{low: 2000, stashed: 40, perRead: 10, want: 500},
		{low: 2000, stashed: 40, perRead: 0, want: 64},
	} {
		if got := refillCount(tc.low, tc.stashed, tc.perRead); got != tc.want {
			t.Errorf("refillCount(%d low, %d stashed, %d a read) = %d, want %d", tc.low, tc.stashed, tc.perRead, got, tc.want)
		}
	}
}

// TestReadRangesAbortedBehindOpen: a range ending in aborted records whose
// abort marker lies past the last stable offset (another transaction
// opened before the abort and is still open) has nothing readable after
// it; franz-go's read_committed fetches skip it without a trace, and the
// read finishes by probing the partition.
func TestReadRangesAbortedBehindOpen(t *testing.T) {
	_, cl := newTestCluster(t, 1, "tx")
	ctx := testCtx(t)
	a := newKgo(t, cl, kgo.TransactionalID("sluice-test-a"))
	b := newKgo(t, cl, kgo.TransactionalID("sluice-test-b"))
	plain := newKgo(t, cl)
	committed := produce(t, plain, "tx", 0, keyed(0, 3)) // offsets 0-2
	if err := a.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(t, a, "tx", 0, keyed(3, 3)) // 3-5, aborted below
	if err := b.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(t, b, "tx", 0, keyed(6, 1)) // 6, left open
	if err := a.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err) // marker at 7
	}
	cl.ReadCommitted = true
	tp := TopicPartition{"tx", 0}
	latest, err := newTestAdmin(t, cl).LatestOffsets(ctx, []TopicPartition{tp})
	if err != nil {
		t.Fatal(err)
	}
	if latest[tp] != 6 {
		t.Fatalf("last stable offset %d, want 6 (transaction b open at 6)", latest[tp])
	}
	ranges := []Range{{Topic: "tx", From: 0, Until: 6}, {Topic: "tx", From: 3, Until: 6}}
	readAll := func(pool *Pool) {
		t.Helper()
		for _, r := range ranges {
			got, _, err := readRanges(testCtx(t), pool, cl, []Range{r})
			if err != nil {
				t.Fatalf("ReadRanges(%s): %v", r, err)
			}
			sameRecords(t, r.String(), got[0], between(committed, r.From, r.Until))
		}
	}
	kgoPool := NewPool(1, testLogger(t))
	t.Cleanup(kgoPool.Close)
	readAll(kgoPool)
	// librdkafka waits for the abort marker: its reads of such a range
	// finish once the open transaction ends.
	rdPool := NewPool(1, testLogger(t))
	rdPool.librdkafka = true
	t.Cleanup(rdPool.Close)
	go func() {
		time.Sleep(time.Second)
		if err := b.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Error(err)
		}
	}()
	readAll(rdPool)
}

// TestFetchSizes: the source's fetch properties lower a franz-go pool
// consumer's fetch sizes, never raise them.
func TestFetchSizes(t *testing.T) {
	for _, tc := range []struct {
		props                         map[string]string
		maxBytes, partBytes, minBytes int32
	}{
		{nil, fetchMaxBytes, fetchMaxBytes, 1},
		{map[string]string{"fetch.max.bytes": "52428800", "max.partition.fetch.bytes": "10485760"}, fetchMaxBytes, fetchMaxBytes, 1},
		{map[string]string{"fetch.max.bytes": "65536", "fetch.message.max.bytes": "32768", "fetch.min.bytes": "100000"}, 65536, 32768, 65536},
		{map[string]string{"max.partition.fetch.bytes": " 4096 ", "fetch.min.bytes": "10"}, fetchMaxBytes, 4096, 10},
		{map[string]string{"fetch.max.bytes": "junk", "max.partition.fetch.bytes": "-5"}, fetchMaxBytes, fetchMaxBytes, 1},
	} {
		maxBytes, partBytes, minBytes := fetchSizes(tc.props)
		if maxBytes != tc.maxBytes || partBytes != tc.partBytes || minBytes != tc.minBytes {
			t.Errorf("fetchSizes(%v) = %d, %d, %d; want %d, %d, %d", tc.props, maxBytes, partBytes, minBytes, tc.maxBytes, tc.partBytes, tc.minBytes)
		}
	}
}

// assignedSet is a rangeConsumer that has the partitions of a set
// assigned; it is never read from.
type assignedSet struct {
	rangeConsumer
	parts map[TopicPartition]bool
}

func (a assignedSet) assigned(tp TopicPartition) bool { return a.parts[tp] }

func TestMostAssigned(t *testing.T) {
	set := func(from, to int32) *pooled {
		a := assignedSet{parts: map[TopicPartition]bool{}}
		for p := from; p < to; p++ {
			a.parts[TopicPartition{"t", p}] = true
		}
		return &pooled{rangeConsumer: a}
	}
	ranges := func(from, to int32) []Range {
		var rs []Range
		for p := from; p < to; p++ {
			rs = append(rs, Range{Topic: "t", Partition: p, From: 0, Until: 1})
		}
		return rs
	}
	cs := []*pooled{set(0, 1700), set(1700, 3400), set(5000, 5010)}
	for _, tc := range []struct {
		name       string
		ranges     []Range
		best, have int
	}{
		{"few ranges, counted exactly", ranges(5000, 5010), 2, 10},
		{"few ranges, the first of equals", ranges(1690, 1700), 0, 10},
		{"1,700 ranges, sampled: every 26th", ranges(1700, 3400), 1, 66},
		{"none assigned anywhere", ranges(6000, 6010), 0, 0},
	} {
		if best, have := mostAssigned(cs, tc.ranges); best != tc.best || have != tc.have {
			t.Errorf("%s: best %d with %d, want %d with %d", tc.name, best, have, tc.best, tc.have)
		}
	}
	if best, have := mostAssigned(nil, ranges(0, 10)); best != -1 || have != -1 {
		t.Errorf("no consumers: %d, %d", best, have)
	}
}

// TestReadRangesBigBatches reads partitions written in one record batch
// each, larger than a partition's share of a fetch, in ranges of a tenth
// of it: a batch comes whole, and its rest past a range's end goes to the
// stash. With stashPartKeep lowered below a batch, a partition's stash
// stays within it (the rest is dropped, and fetched again when read), and
// every read gets exactly its records.
func TestReadRangesBigBatches(t *testing.T) {
	const (
		parts   = 128
		backlog = 150
		reads   = 10
	)
	defer func(keep int64) { stashPartKeep = keep }(stashPartKeep)
	stashPartKeep = 256 << 10 // a batch is 320 KiB of stash sizes
	_, cl := newTestCluster(t, parts, "big")
	k := newKgo(t, cl, kgo.ProducerLinger(50*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20))
	value := strings.Repeat("x", 2000)
	truth := map[int32][]want{}
	for p := range int32(parts) {
		rs := make([]*kgo.Record, backlog)
		for i := range rs {
			rs[i] = &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: []byte(value)}
		}
		truth[p] = produce(t, k, "big", p, rs)
	}
	pool := NewPool(2, testLogger(t))
	t.Cleanup(pool.Close)
	var dropped int64
	for i := range int64(reads) {
		var ranges []Range
		per := int64(backlog / reads)
		for p := range int32(parts) {
			ranges = append(ranges, Range{Topic: "big", Partition: p, From: i * per, Until: (i + 1) * per})
		}
		got, st, err := readRanges(testCtx(t), pool, cl, ranges)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		for _, r := range ranges {
			sameRecords(t, fmt.Sprintf("read %d %s", i, r), got[r.Partition], between(truth[r.Partition], r.From, r.Until))
		}
		dropped += st.Dropped
		pool.Idle() // waits for the top-up
		pool.mu.Lock()
		for _, cs := range pool.idle {
			for _, c := range cs {
				fc, ok := c.rangeConsumer.(*fetchConsumer)
				if !ok {
					t.Fatalf("pool consumer %T, want a franz-go one", c.rangeConsumer)
				}
				for tp, pr := range fc.parts {
					if pr.stash.size > stashPartKeep {
						t.Errorf("read %d: %s/%d's stash holds %d bytes, over stashPartKeep %d", i, tp.Topic, tp.Partition, pr.stash.size, stashPartKeep)
					}
				}
			}
		}
		pool.mu.Unlock()
	}
	if dropped == 0 {
		t.Errorf("no record was dropped: the stashes held %d partitions' batches whole", parts)
	}
	t.Logf("dropped %d records over %d reads", dropped, reads)
}

// TestReadRangesHandOver: two reads at once make two consumers, each with
// half of the partitions and their stashes; a read of all of them then
// takes the partitions it lacks, with their stashes, from the other
// consumer: every record of it comes from a stash, and the other consumer
// no longer has them.
func TestReadRangesHandOver(t *testing.T) {
	const parts, backlog = 8, 100
	_, cl := newTestCluster(t, parts, "hand")
	k := newKgo(t, cl, kgo.ProducerLinger(50*time.Millisecond))
	truth := map[int32][]want{}
	for p := range int32(parts) {
		truth[p] = produce(t, k, "hand", p, keyed(0, backlog))
	}
	pool := NewPool(4, testLogger(t))
	t.Cleanup(pool.Close)
	ranges := func(from, until int64, ps ...int32) []Range {
		var out []Range
		for _, p := range ps {
			out = append(out, Range{Topic: "hand", Partition: p, From: from, Until: until})
		}
		return out
	}
	// Each read waits in its callback until the other has started: two
	// consumers.
	var started sync.WaitGroup
	started.Add(2)
	errs := make(chan error, 2)
	for _, half := range [][]int32{{0, 1, 2, 3}, {4, 5, 6, 7}} {
		go func() {
			once := sync.OnceFunc(func() { started.Done(); started.Wait() })
			_, err := pool.ReadRanges(testCtx(t), cl, "sluice-test", ranges(0, 10, half...), func(*record.Record) error {
				once()
				return nil
			})
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := pool.Idle(); n != 2 {
		t.Fatalf("%d idle consumers after two reads at once, want 2", n)
	}
	all := ranges(10, 20, 0, 1, 2, 3, 4, 5, 6, 7)
	got, st, err := readRanges(testCtx(t), pool, cl, all)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		sameRecords(t, r.String(), got[r.Partition], between(truth[r.Partition], r.From, r.Until))
	}
	if st.Stashed != 80 {
		t.Errorf("%d of 80 records came from a stash, want all: the partitions of the other consumer were fetched again", st.Stashed)
	}
	// Past the stashes: the adopted partitions are fetched from where
	// theirs end.
	for p := range int32(parts) {
		truth[p] = append(truth[p], produce(t, k, "hand", p, keyed(backlog, 50))...)
	}
	all = ranges(20, backlog+50, 0, 1, 2, 3, 4, 5, 6, 7)
	if got, _, err = readRanges(testCtx(t), pool, cl, all); err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		sameRecords(t, r.String(), got[r.Partition], between(truth[r.Partition], r.From, r.Until))
	}
	pool.Idle()
	pool.mu.Lock()
	defer pool.mu.Unlock()
	for _, cs := range pool.idle {
		for _, c := range cs {
			if n := len(assignedParts(c.rangeConsumer)); n != 0 && n != parts {
				t.Errorf("a consumer has %d partitions, want all %d or none", n, parts)
			}
		}
	}
}
