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

func newTestCache(t testing.TB, capacity int) *Cache {
	t.Helper()
	c := NewCache(capacity, testLogger(t))
	t.Cleanup(c.Close)
	return c
}

// TestReadConsecutiveRanges reads a 1000-record partition in consecutive
// ranges through one cached consumer: exactly the ground truth, in order, no
// loss, no duplicate, and the consumer is reused without seeking.
func TestReadConsecutiveRanges(t *testing.T) {
	_, cl := newTestCluster(t, 2, "t")
	k := newKgo(t, cl)
	produce(t, k, "t", 0, keyed(0, 50)) // another partition, must not leak in
	truth := produce(t, k, "t", 1, keyed(0, 1000))
	c := newTestCache(t, 4)

	bounds := []int64{0, 1, 137, 138, 500, 731, 999, 1000}
	var all []want
	for i := 0; i+1 < len(bounds); i++ {
		r := Range{Topic: "t", Partition: 1, From: bounds[i], Until: bounds[i+1]}
		got, st := mustCollect(t, c, cl, r)
		sameRecords(t, r.String(), got, between(truth, r.From, r.Until))
		if st.Records != int64(len(got)) {
			t.Errorf("Read(%s): stats.Records = %d, delivered %d", r, st.Records, len(got))
		}
		if !st.Cached {
			t.Errorf("Read(%s): stats.Cached = false, want the cached consumer", r)
		}
		if i > 0 && !st.Reused {
			t.Errorf("Read(%s): stats.Reused = false, want the consumer to continue without a seek", r)
		}
		all = append(all, got...)
	}
	sameRecords(t, "all ranges", all, truth)
	if got := c.Len(); got != 1 {
		t.Errorf("cache Len = %d, want 1", got)
	}
}

// TestReadSeek reads non-consecutive ranges: the cached consumer seeks
// backwards and forwards.
func TestReadSeek(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	truth := produce(t, newKgo(t, cl), "t", 0, keyed(0, 1000))
	c := newTestCache(t, 1)

	tests := []struct {
		from, until int64
		wantReused  bool
	}{
		{0, 100, false},
		{500, 600, false}, // forward seek
		{100, 200, false}, // backward seek
		{200, 1000, true},
		{0, 1000, false},
		{999, 1000, false},
	}
	for _, tc := range tests {
		r := Range{Topic: "t", Partition: 0, From: tc.from, Until: tc.until}
		got, st := mustCollect(t, c, cl, r)
		sameRecords(t, r.String(), got, between(truth, tc.from, tc.until))
		if st.Reused != tc.wantReused {
			t.Errorf("Read(%s): stats.Reused = %v, want %v", r, st.Reused, tc.wantReused)
		}
	}
}

func TestReadEmptyRange(t *testing.T) {
	c := newTestCache(t, 1)
	// No broker at all: an empty range must not touch Kafka.
	cl := Cluster{Bootstrap: "127.0.0.1:1"}
	start := time.Now()
	st, err := c.Read(testCtx(t), cl, "g", Range{Topic: "t", Partition: 0, From: 42, Until: 42}, func(*record.Record) error {
		t.Error("callback called for an empty range")
		return nil
	})
	if err != nil || st != (ReadStats{}) {
		t.Errorf("Read(empty) = %+v, %v, want zero stats, nil", st, err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Read(empty) took %v, want it to return at once", d)
	}
	if c.Len() != 0 {
		t.Errorf("cache Len = %d after an empty read, want 0", c.Len())
	}
}

func TestReadInvalidRange(t *testing.T) {
	c := newTestCache(t, 1)
	cl := Cluster{Bootstrap: "127.0.0.1:1"}
	tests := []struct {
		name  string
		group string
		r     Range
	}{
		{"from after until", "g", Range{Topic: "t", From: 5, Until: 4}},
		{"negative from", "g", Range{Topic: "t", From: -2, Until: 4}},
		{"no topic", "g", Range{From: 0, Until: 4}},
		{"negative partition", "g", Range{Topic: "t", Partition: -1, From: 0, Until: 4}},
		{"no group", "", Range{Topic: "t", From: 0, Until: 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Read(testCtx(t), cl, tc.group, tc.r, func(*record.Record) error { return nil })
			if !errors.Is(err, ErrInvalidRange) {
				t.Errorf("Read(%s) = %v, want ErrInvalidRange", tc.r, err)
			}
		})
	}
	_, err := c.Read(testCtx(t), Cluster{Bootstrap: "127.0.0.1:1", Properties: map[string]string{"group.id": "x"}}, "g",
		Range{Topic: "t", From: 0, Until: 1}, func(*record.Record) error { return nil })
	if !errors.Is(err, ErrReservedProperty) {
		t.Errorf("Read with group.id in Properties = %v, want ErrReservedProperty", err)
	}
}

// txnTopic writes, with a transactional kgo producer: commit 5, abort 3,
// commit 2 records. Offsets: 0-4 data, 5 commit marker, 6-8 aborted, 9 abort
// marker, 10-11 data, 12 commit marker; last stable offset 13.
func txnTopic(t *testing.T) (Cluster, []want) {
	t.Helper()
	_, cl := newTestCluster(t, 1, "tx")
	k := newKgo(t, cl, kgo.TransactionalID("sluice-test-tx"))
	ctx := testCtx(t)
	var committed []want
	batches := []struct {
		n      int
		commit bool
	}{{5, true}, {3, false}, {2, true}}
	i := 0
	for _, b := range batches {
		if err := k.BeginTransaction(); err != nil {
			t.Fatalf("BeginTransaction: %v", err)
		}
		ws := produce(t, k, "tx", 0, keyed(i, b.n))
		i += b.n
		end := kgo.TryAbort
		if b.commit {
			end = kgo.TryCommit
			committed = append(committed, ws...)
		}
		if err := k.EndTransaction(ctx, end); err != nil {
			t.Fatalf("EndTransaction(commit=%v): %v", b.commit, err)
		}
	}
	cl.ReadCommitted = true
	return cl, committed
}

func TestReadTransactional(t *testing.T) {
	cl, committed := txnTopic(t)
	ctx := testCtx(t)
	a := newTestAdmin(t, cl)
	tp := TopicPartition{"tx", 0}
	latest, err := a.LatestOffsets(ctx, []TopicPartition{tp})
	if err != nil {
		t.Fatalf("LatestOffsets: %v", err)
	}
	lso := latest[tp]
	if lso != 13 {
		t.Fatalf("last stable offset = %d, want 13 (5 + marker + 3 + marker + 2 + marker)", lso)
	}
	wantOffsets := []int64{0, 1, 2, 3, 4, 10, 11}
	if len(committed) != len(wantOffsets) {
		t.Fatalf("ground truth has %d committed records, want %d", len(committed), len(wantOffsets))
	}
	for i, w := range committed {
		if w.Offset != wantOffsets[i] {
			t.Fatalf("ground truth offsets %v, want %v", committed, wantOffsets)
		}
	}

	t.Run("whole range", func(t *testing.T) {
		c := newTestCache(t, 1)
		start := time.Now()
		got, _ := mustCollect(t, c, cl, Range{Topic: "tx", Partition: 0, From: 0, Until: lso})
		d := time.Since(start)
		sameRecords(t, "[0, LSO)", got, committed)
		// Done when the position passes the last marker, not by waiting.
		if d > 3*time.Second {
			t.Errorf("Read([0, LSO)) took %v, want it to finish quickly", d)
		}
		t.Logf("read [0, %d) in %v", lso, d)
	})

	// Every split point, including inside the aborted transaction and on
	// the markers, through one cache: the second range continues the first.
	t.Run("split", func(t *testing.T) {
		c := newTestCache(t, 1)
		for k := int64(1); k < lso; k++ {
			first, st1 := mustCollect(t, c, cl, Range{Topic: "tx", Partition: 0, From: 0, Until: k})
			second, st2 := mustCollect(t, c, cl, Range{Topic: "tx", Partition: 0, From: k, Until: lso})
			sameRecords(t, fmt.Sprintf("[0, %d)", k), first, between(committed, 0, k))
			sameRecords(t, fmt.Sprintf("[%d, %d)", k, lso), second, between(committed, k, lso))
			if !st2.Reused {
				t.Errorf("split at %d: second read did not continue the first (stats %+v, %+v)", k, st1, st2)
			}
		}
	})

	// Split ranges read by fresh consumers (each range starts with an
	// assign at its From).
	t.Run("split fresh consumers", func(t *testing.T) {
		for _, k := range []int64{5, 6, 8, 9, 10, 12} {
			first, _ := mustCollect(t, newTestCache(t, 1), cl, Range{Topic: "tx", Partition: 0, From: 0, Until: k})
			second, _ := mustCollect(t, newTestCache(t, 1), cl, Range{Topic: "tx", Partition: 0, From: k, Until: lso})
			sameRecords(t, fmt.Sprintf("[0, %d)", k), first, between(committed, 0, k))
			sameRecords(t, fmt.Sprintf("[%d, %d)", k, lso), second, between(committed, k, lso))
		}
	})

	t.Run("read_uncommitted sees aborted records", func(t *testing.T) {
		ru := cl
		ru.ReadCommitted = false
		got, _ := mustCollect(t, newTestCache(t, 1), ru, Range{Topic: "tx", Partition: 0, From: 0, Until: lso})
		var offs []int64
		for _, g := range got {
			offs = append(offs, g.Offset)
		}
		if want := []int64{0, 1, 2, 3, 4, 6, 7, 8, 10, 11}; fmt.Sprint(offs) != fmt.Sprint(want) {
			t.Errorf("read_uncommitted offsets: got %v, want %v", offs, want)
		}
	})
}

// TestReadPending checks that a message polled past the end of a range is
// kept for the next read instead of being lost.
func TestReadPending(t *testing.T) {
	cl, committed := txnTopic(t)
	c := newTestCache(t, 1)
	// [0, 7) ends inside the aborted transaction: the next data record is
	// 10, which the consumer may poll before its position reaches 7.
	first, _ := mustCollect(t, c, cl, Range{Topic: "tx", Partition: 0, From: 0, Until: 7})
	sameRecords(t, "[0, 7)", first, committed[:5])
	e := c.entries[cacheKey{cluster: cl.Key(), group: "sluice-test", topic: "tx", partition: 0}]
	if e == nil {
		t.Fatal("no cached consumer after the read")
	}
	t.Logf("after [0, 7): free=%d next=%d pending=%v", e.free, e.next, e.pending != nil)
	// [7, 10) has no data record; [10, 13) has 10 and 11.
	mid, st := mustCollect(t, c, cl, Range{Topic: "tx", Partition: 0, From: 7, Until: 10})
	sameRecords(t, "[7, 10)", mid, nil)
	if !st.Reused {
		t.Errorf("[7, 10): not reused: %+v", st)
	}
	last, st := mustCollect(t, c, cl, Range{Topic: "tx", Partition: 0, From: 10, Until: 13})
	sameRecords(t, "[10, 13)", last, committed[5:])
	if !st.Reused {
		t.Errorf("[10, 13): not reused: %+v", st)
	}
}

func TestReadOutOfRange(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	k := newKgo(t, cl)
	truth := produce(t, k, "t", 0, keyed(0, 1000))
	deleteRecords(t, k, "t", 0, 500)

	tests := []struct {
		name        string
		from, until int64
	}{
		{"below the log start", 100, 600},
		{"beyond the end", 1100, 1200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCache(t, 1)
			r := Range{Topic: "t", Partition: 0, From: tc.from, Until: tc.until}
			got, _, err := collect(t, testCtx(t), c, cl, r)
			if !errors.Is(err, ErrOffsetOutOfRange) {
				t.Fatalf("Read(%s) = %v, want ErrOffsetOutOfRange", r, err)
			}
			if testing.Verbose() {
				t.Logf("error: %v", err)
			}
			if len(got) != 0 {
				t.Errorf("Read(%s) delivered %d records before failing, want none", r, len(got))
			}
			for _, s := range []string{"t/0", fmt.Sprint(tc.from)} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Read(%s) error %q does not name %q", r, err, s)
				}
			}
			if c.Len() != 0 {
				t.Errorf("cache Len = %d after a failed read, want the consumer dropped", c.Len())
			}
		})
	}

	t.Run("at the log start", func(t *testing.T) {
		c := newTestCache(t, 1)
		got, _ := mustCollect(t, c, cl, Range{Topic: "t", Partition: 0, From: 500, Until: 1000})
		sameRecords(t, "[500, 1000)", got, truth[500:])
	})

	t.Run("cached consumer seeking below the log start", func(t *testing.T) {
		c := newTestCache(t, 1)
		mustCollect(t, c, cl, Range{Topic: "t", Partition: 0, From: 900, Until: 1000})
		_, _, err := collect(t, testCtx(t), c, cl, Range{Topic: "t", Partition: 0, From: 0, Until: 10})
		if !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("Read([0, 10)) after the log start moved = %v, want ErrOffsetOutOfRange", err)
		}
	})
}

func TestReadHeadersAndTimestamps(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	ts := time.UnixMilli(1_700_000_000_123)
	rs := []*kgo.Record{
		{Key: []byte("a"), Value: []byte("1"), Timestamp: ts, Headers: []kgo.RecordHeader{{Key: "h1", Value: []byte("x")}, {Key: "h2", Value: []byte("y")}}},
		{Key: nil, Value: []byte("2"), Timestamp: ts.Add(time.Second)},
		{Key: []byte("c"), Value: nil, Timestamp: ts.Add(2 * time.Second), Headers: []kgo.RecordHeader{{Key: "only", Value: []byte("z")}}},
	}
	truth := produce(t, newKgo(t, cl), "t", 0, rs)
	got, _ := mustCollect(t, newTestCache(t, 1), cl, Range{Topic: "t", Partition: 0, From: 0, Until: 3})
	sameRecords(t, "[0, 3)", got, truth)
	for i := range got {
		if !got[i].Time.Equal(truth[i].Time) {
			t.Errorf("record %d: timestamp %v, want %v", i, got[i].Time, truth[i].Time)
		}
	}
}

// TestReadBusyUsesTemporaryConsumer reads a partition while its cached
// consumer is busy with another read.
func TestReadBusyUsesTemporaryConsumer(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	truth := produce(t, newKgo(t, cl), "t", 0, keyed(0, 100))
	c := newTestCache(t, 2)
	ctx := testCtx(t)

	entered := make(chan struct{})
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var st1 ReadStats
	var err1 error
	go func() {
		defer wg.Done()
		first := true
		st1, err1 = c.Read(ctx, cl, "sluice-test", Range{Topic: "t", Partition: 0, From: 0, Until: 50}, func(*record.Record) error {
			if first {
				first = false
				close(entered)
				<-release
			}
			return nil
		})
	}()
	<-entered
	got, st2 := mustCollect(t, c, cl, Range{Topic: "t", Partition: 0, From: 50, Until: 100})
	close(release)
	wg.Wait()
	if err1 != nil {
		t.Fatalf("first read: %v", err1)
	}
	sameRecords(t, "[50, 100) while busy", got, truth[50:])
	if !st1.Cached || st2.Cached {
		t.Errorf("stats.Cached: first %v, second %v; want true, false", st1.Cached, st2.Cached)
	}
	if c.Len() != 1 {
		t.Errorf("cache Len = %d, want 1 (the temporary consumer is not cached)", c.Len())
	}
}

func TestReadContextCancel(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	produce(t, newKgo(t, cl), "t", 0, keyed(0, 10))
	c := newTestCache(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	// [0, 20) waits for records that do not exist yet.
	got, _, err := collect(t, ctx, c, cl, Range{Topic: "t", Partition: 0, From: 0, Until: 20})
	d := time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel = %v, want context.Canceled", err)
	}
	if len(got) != 10 {
		t.Errorf("delivered %d records before the cancel, want 10", len(got))
	}
	if d > 2*time.Second {
		t.Errorf("Read returned %v after start, want promptly after the cancel at 300ms", d)
	}
}

func TestReadCallbackError(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	truth := produce(t, newKgo(t, cl), "t", 0, keyed(0, 100))
	c := newTestCache(t, 1)
	boom := errors.New("boom")
	n := 0
	_, err := c.Read(testCtx(t), cl, "sluice-test", Range{Topic: "t", Partition: 0, From: 0, Until: 100}, func(r *record.Record) error {
		n++
		if r.Offset == 42 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Read = %v, want the callback's error", err)
	}
	if !strings.Contains(err.Error(), "offset 42") {
		t.Errorf("error %q does not name the offset", err)
	}
	if n != 43 {
		t.Errorf("callback called %d times, want 43", n)
	}
	if c.Len() != 0 {
		t.Errorf("cache Len = %d, want the failed consumer dropped", c.Len())
	}
	got, _ := mustCollect(t, c, cl, Range{Topic: "t", Partition: 0, From: 0, Until: 100})
	sameRecords(t, "retry", got, truth)
}

func TestCacheEviction(t *testing.T) {
	_, cl := newTestCluster(t, 3, "t")
	k := newKgo(t, cl)
	truth := make([][]want, 3)
	for p := range int32(3) {
		truth[p] = produce(t, k, "t", p, keyed(0, 20))
	}
	c := newTestCache(t, 2)
	for _, p := range []int32{0, 1, 2, 0} {
		got, _ := mustCollect(t, c, cl, Range{Topic: "t", Partition: p, From: 0, Until: 20})
		sameRecords(t, fmt.Sprintf("partition %d", p), got, truth[p])
		if c.Len() > 2 {
			t.Fatalf("cache Len = %d, want at most 2", c.Len())
		}
	}
	// 0 was evicted by 2, then read again: 0 and 2 are cached, 1 is not.
	for p, want := range map[int32]bool{0: true, 1: false, 2: true} {
		_, ok := c.entries[cacheKey{cluster: cl.Key(), group: "sluice-test", topic: "t", partition: p}]
		if ok != want {
			t.Errorf("partition %d cached = %v, want %v", p, ok, want)
		}
	}
}

func TestCacheClose(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	produce(t, newKgo(t, cl), "t", 0, keyed(0, 10))
	c := NewCache(1, testLogger(t))
	mustCollect(t, c, cl, Range{Topic: "t", Partition: 0, From: 0, Until: 10})
	c.Close()
	if c.Len() != 0 {
		t.Errorf("Len after Close = %d, want 0", c.Len())
	}
	_, _, err := collect(t, testCtx(t), c, cl, Range{Topic: "t", Partition: 0, From: 0, Until: 10})
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
	c.Close() // idempotent
}

// TestReadEmptyPolls repeats the seek and transaction cases with polls that
// return at once, so that most polls come back empty and the end of a range
// is found through the consumer's position: a stale position (from before a
// seek) would end a read early and lose records.
func TestReadEmptyPolls(t *testing.T) {
	saved := pollTimeoutMs
	pollTimeoutMs = 0
	t.Cleanup(func() { pollTimeoutMs = saved })

	t.Run("seek", func(t *testing.T) {
		_, cl := newTestCluster(t, 1, "t")
		truth := produce(t, newKgo(t, cl), "t", 0, keyed(0, 300))
		c := newTestCache(t, 1)
		for _, r := range [][2]int64{{0, 300}, {10, 20}, {250, 300}, {0, 1}, {1, 300}, {299, 300}, {5, 6}} {
			rg := Range{Topic: "t", Partition: 0, From: r[0], Until: r[1]}
			got, _ := mustCollect(t, c, cl, rg)
			sameRecords(t, rg.String(), got, between(truth, r[0], r[1]))
		}
	})

	t.Run("transactional split", func(t *testing.T) {
		cl, committed := txnTopic(t)
		c := newTestCache(t, 1)
		for k := int64(1); k < 13; k++ {
			first, _ := mustCollect(t, c, cl, Range{Topic: "tx", Partition: 0, From: 0, Until: k})
			second, _ := mustCollect(t, c, cl, Range{Topic: "tx", Partition: 0, From: k, Until: 13})
			sameRecords(t, fmt.Sprintf("[0, %d)", k), first, between(committed, 0, k))
			sameRecords(t, fmt.Sprintf("[%d, 13)", k), second, between(committed, k, 13))
		}
	})
}

func TestReadCallbackPanic(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	truth := produce(t, newKgo(t, cl), "t", 0, keyed(0, 10))
	c := newTestCache(t, 1)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Read did not propagate the callback's panic")
			}
		}()
		c.Read(testCtx(t), cl, "sluice-test", Range{Topic: "t", Partition: 0, From: 0, Until: 10}, func(*record.Record) error {
			panic("boom")
		})
	}()
	if c.Len() != 0 {
		t.Errorf("cache Len = %d after a panic, want the consumer dropped", c.Len())
	}
	got, st := mustCollect(t, c, cl, Range{Topic: "t", Partition: 0, From: 0, Until: 10})
	sameRecords(t, "after panic", got, truth)
	if !st.Cached {
		t.Error("read after a panic did not get a cached consumer")
	}
}
