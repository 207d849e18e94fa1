package kafkasrc

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func newTestAdmin(t *testing.T, cl Cluster) *Admin {
	t.Helper()
	a, err := NewAdmin(cl, testLogger(t))
	if err != nil {
		t.Fatalf("NewAdmin: %v", err)
	}
	t.Cleanup(a.Close)
	return a
}

func TestAdminPartitions(t *testing.T) {
	_, cl := newTestCluster(t, 3, "orders", "clicks")
	a := newTestAdmin(t, cl)
	ctx := testCtx(t)

	got, err := a.Partitions(ctx, []string{"orders", "clicks"})
	if err != nil {
		t.Fatalf("Partitions: %v", err)
	}
	want := map[string][]int32{"orders": {0, 1, 2}, "clicks": {0, 1, 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Partitions: got %v, want %v", got, want)
	}

	t.Run("unknown topic", func(t *testing.T) {
		_, err := a.Partitions(ctx, []string{"orders", "nope"})
		if !errors.Is(err, ErrUnknownTopic) {
			t.Fatalf("Partitions(nope): got %v, want ErrUnknownTopic", err)
		}
		if !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("Partitions(nope): error %q does not name the topic", err)
		}
	})

	t.Run("partition added later", func(t *testing.T) {
		createPartitions(t, newKgo(t, cl), "orders", 5)
		// The admin must ask again, not answer from its metadata cache.
		got, err := a.Partitions(ctx, []string{"orders"})
		if err != nil {
			t.Fatalf("Partitions: %v", err)
		}
		if want := []int32{0, 1, 2, 3, 4}; !reflect.DeepEqual(got["orders"], want) {
			t.Errorf("Partitions after CreatePartitions: got %v, want %v", got["orders"], want)
		}
	})

	t.Run("empty", func(t *testing.T) {
		got, err := a.Partitions(ctx, nil)
		if err != nil || len(got) != 0 {
			t.Errorf("Partitions(nil) = %v, %v, want empty, nil", got, err)
		}
	})
}

func TestAdminOffsets(t *testing.T) {
	_, cl := newTestCluster(t, 3, "t")
	k := newKgo(t, cl)
	produce(t, k, "t", 0, keyed(0, 10))
	produce(t, k, "t", 1, keyed(0, 3))
	a := newTestAdmin(t, cl)
	ctx := testCtx(t)
	tps := []TopicPartition{{"t", 0}, {"t", 1}, {"t", 2}}

	latest, err := a.LatestOffsets(ctx, tps)
	if err != nil {
		t.Fatalf("LatestOffsets: %v", err)
	}
	if want := map[TopicPartition]int64{{"t", 0}: 10, {"t", 1}: 3, {"t", 2}: 0}; !reflect.DeepEqual(latest, want) {
		t.Errorf("LatestOffsets: got %v, want %v", latest, want)
	}

	earliest, err := a.EarliestOffsets(ctx, tps)
	if err != nil {
		t.Fatalf("EarliestOffsets: %v", err)
	}
	if want := map[TopicPartition]int64{{"t", 0}: 0, {"t", 1}: 0, {"t", 2}: 0}; !reflect.DeepEqual(earliest, want) {
		t.Errorf("EarliestOffsets: got %v, want %v", earliest, want)
	}

	deleteRecords(t, k, "t", 0, 4)
	earliest, err = a.EarliestOffsets(ctx, tps[:1])
	if err != nil {
		t.Fatalf("EarliestOffsets after DeleteRecords: %v", err)
	}
	if want := map[TopicPartition]int64{{"t", 0}: 4}; !reflect.DeepEqual(earliest, want) {
		t.Errorf("EarliestOffsets after DeleteRecords: got %v, want %v", earliest, want)
	}

	_, err = a.LatestOffsets(ctx, []TopicPartition{{"t", 0}, {"missing", 0}})
	if err == nil || !strings.Contains(err.Error(), "missing/0") {
		t.Errorf("LatestOffsets(missing/0): got %v, want an error naming missing/0", err)
	}
}

func TestAdminOffsetsForTimes(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	k := newKgo(t, cl)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	rs := keyed(0, 10)
	for i, r := range rs {
		r.Timestamp = t0.Add(time.Duration(i) * time.Second)
	}
	produce(t, k, "t", 0, rs)
	a := newTestAdmin(t, cl)
	ctx := testCtx(t)
	tp := TopicPartition{"t", 0}

	tests := []struct {
		name string
		ts   time.Time
		want int64
	}{
		{"before all", t0.Add(-time.Minute), 0},
		{"exact first", t0, 0},
		{"exact", t0.Add(3 * time.Second), 3},
		{"between", t0.Add(3500 * time.Millisecond), 4},
		{"exact last", t0.Add(9 * time.Second), 9},
		{"after all: latest", t0.Add(time.Minute), 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.OffsetsForTimes(ctx, []TopicPartition{tp}, tc.ts)
			if err != nil {
				t.Fatalf("OffsetsForTimes: %v", err)
			}
			if got[tp] != tc.want {
				t.Errorf("OffsetsForTimes(%v): got %d, want %d", tc.ts, got[tp], tc.want)
			}
		})
	}
}

func TestAdminCreateTopic(t *testing.T) {
	_, cl := newTestCluster(t, 1)
	a := newTestAdmin(t, cl)
	ctx := testCtx(t)
	if err := a.CreateTopic(ctx, "fresh", 4); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	if err := a.CreateTopic(ctx, "fresh", 4); err != nil {
		t.Fatalf("CreateTopic again: got %v, want nil", err)
	}
	got, err := a.Partitions(ctx, []string{"fresh"})
	if err != nil {
		t.Fatalf("Partitions: %v", err)
	}
	if want := []int32{0, 1, 2, 3}; !reflect.DeepEqual(got["fresh"], want) {
		t.Errorf("Partitions(fresh): got %v, want %v", got["fresh"], want)
	}
	if err := a.CreateTopic(ctx, "zero", 0); !errors.Is(err, ErrInvalidRange) {
		t.Errorf("CreateTopic(0 partitions): got %v, want ErrInvalidRange", err)
	}
}

func TestAdminReadCommittedLatest(t *testing.T) {
	_, cl := newTestCluster(t, 1, "tx")
	k := newKgo(t, cl, kgo.TransactionalID("tx-latest"))
	ctx := testCtx(t)
	if err := k.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(t, k, "tx", 0, keyed(0, 4)) // offsets 0..3, open transaction
	rc := cl
	rc.ReadCommitted = true
	tp := TopicPartition{"tx", 0}
	tests := []struct {
		name string
		cl   Cluster
		want int64
	}{
		{"read_uncommitted: high watermark", cl, 4},
		{"read_committed: last stable offset", rc, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := newTestAdmin(t, tc.cl).LatestOffsets(ctx, []TopicPartition{tp})
			if err != nil {
				t.Fatalf("LatestOffsets: %v", err)
			}
			if got[tp] != tc.want {
				t.Errorf("LatestOffsets: got %d, want %d", got[tp], tc.want)
			}
		})
	}
	if err := k.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
}

func TestAdminPool(t *testing.T) {
	_, cl := newTestCluster(t, 2, "t")
	p := NewAdminPool(testLogger(t))
	t.Cleanup(p.Close)
	a1, err := p.Get(cl)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	a2, err := p.Get(Cluster{Bootstrap: cl.Bootstrap, Properties: map[string]string{}})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if a1 != a2 {
		t.Errorf("Get of the same cluster: got two Admins, want one")
	}
	rc := cl
	rc.ReadCommitted = true
	a3, err := p.Get(rc)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if a3 == a1 {
		t.Errorf("Get of a read_committed cluster: got the read_uncommitted Admin")
	}
	a1.Close() // owned by the pool: must not close it
	if _, err := a1.Partitions(testCtx(t), []string{"t"}); err != nil {
		t.Errorf("Partitions after Close of a pooled Admin: %v", err)
	}
	if _, err := p.Get(Cluster{Bootstrap: cl.Bootstrap, Properties: map[string]string{"group.id": "x"}}); !errors.Is(err, ErrReservedProperty) {
		t.Errorf("Get with group.id: got %v, want ErrReservedProperty", err)
	}
	p.Close()
	if _, err := p.Get(cl); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: got %v, want ErrClosed", err)
	}
}

// TestAdminPoolCapacity: the pool keeps at most its capacity of Admins and
// closes the least recently used; an evicted Admin fails with ErrClosed;
// Forget closes one at once.
func TestAdminPoolCapacity(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	base := LiveClients()
	p := NewAdminPool(testLogger(t), WithCapacity(2))
	t.Cleanup(p.Close)
	ctx := testCtx(t)
	clusterWithID := func(id string) Cluster {
		return Cluster{Bootstrap: cl.Bootstrap, Properties: map[string]string{"client.id": id}}
	}
	first, err := p.Get(clusterWithID("c0"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		a, err := p.Get(clusterWithID(fmt.Sprintf("c%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Partitions(ctx, []string{"t"}); err != nil {
			t.Fatalf("Partitions with admin %d: %v", i, err)
		}
		if p.Len() > 2 {
			t.Fatalf("pool Len = %d after %d clusters, want at most 2", p.Len(), i+1)
		}
	}
	waitLiveClients(t, base+2, "after 50 clusters with capacity 2")
	if _, err := first.Partitions(ctx, []string{"t"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Partitions with an evicted Admin = %v, want ErrClosed", err)
	}
	p.Forget(clusterWithID("c49"))
	if p.Len() != 1 {
		t.Errorf("pool Len after Forget = %d, want 1", p.Len())
	}
	waitLiveClients(t, base+1, "after Forget")
	p.Close()
	waitLiveClients(t, base, "after Close")
}

// TestLiveClients: every librdkafka handle is counted while open, including
// the consumers a Cache evicts, which it closes.
func TestLiveClients(t *testing.T) {
	_, cl := newTestCluster(t, 3, "t")
	k := newKgo(t, cl)
	for p := range int32(3) {
		produce(t, k, "t", p, keyed(0, 5))
	}
	base := LiveClients()
	prod, err := NewProducer(cl, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := LiveClients(); got != base+1 {
		t.Errorf("LiveClients with a producer = %d, want %d", got, base+1)
	}
	prod.Close()
	prod.Close()
	if got := LiveClients(); got != base {
		t.Errorf("LiveClients after closing the producer (twice) = %d, want %d", got, base)
	}
	c := NewCache(1, testLogger(t))
	for p := range int32(3) {
		mustCollect(t, c, cl, Range{Topic: "t", Partition: p, From: 0, Until: 5})
	}
	waitLiveClients(t, base+1, "after 3 partitions through a cache of 1")
	c.Close()
	if got := LiveClients(); got != base {
		t.Errorf("LiveClients after the cache's Close = %d, want %d", got, base)
	}
}

// An Admin no one got for the idle timeout is closed; one got since stays.
func TestAdminPoolClosesIdle(t *testing.T) {
	_, cl := newTestCluster(t, 1, "t")
	p := NewAdminPool(testLogger(t))
	t.Cleanup(p.Close)
	withID := func(id string) Cluster {
		return Cluster{Bootstrap: cl.Bootstrap, Properties: map[string]string{"client.id": id}}
	}
	old, err := p.Get(withID("old"))
	if err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if _, err := p.Get(withID("recent")); err != nil {
		t.Fatal(err)
	}
	if n := p.closeIdle(cut.Add(time.Nanosecond)); n != 1 || p.Len() != 1 {
		t.Fatalf("closeIdle closed %d, Len %d; want the one idle Admin closed and the recent one kept", n, p.Len())
	}
	if n := p.closeIdle(cut); n != 0 {
		t.Errorf("closeIdle before every use closed %d", n)
	}
	if again, err := p.Get(withID("old")); err != nil || again == old {
		t.Errorf("Get after the idle Admin was closed: the same Admin %v, error %v; want a new one", again == old, err)
	}
}

// TestAdminCommitGroupOffsets: the group's offsets are set, through the
// franz-go client and through librdkafka (a socket property keeps an Admin
// on it), and only the partitions asked are changed.
func TestAdminCommitGroupOffsets(t *testing.T) {
	for _, tc := range []struct {
		name  string
		props map[string]string
		kgo   bool
	}{
		{name: "franz-go", kgo: true},
		{name: "librdkafka", props: map[string]string{"socket.timeout.ms": "30000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cl := newTestCluster(t, 3, "t", "u")
			cl.Properties = tc.props
			a := newTestAdmin(t, cl)
			if got := a.plan != nil; got != tc.kgo {
				t.Fatalf("franz-go client: %v, want %v", got, tc.kgo)
			}
			ctx := testCtx(t)
			tps := []TopicPartition{{"t", 0}, {"t", 1}, {"t", 2}, {"u", 0}}
			first := map[TopicPartition]int64{{"t", 0}: 5, {"t", 1}: 7, {"u", 0}: 1}
			if err := a.CommitGroupOffsets(ctx, "g", first); err != nil {
				t.Fatalf("CommitGroupOffsets: %v", err)
			}
			if err := a.CommitGroupOffsets(ctx, "g", map[TopicPartition]int64{{"t", 1}: 9}); err != nil {
				t.Fatalf("CommitGroupOffsets again: %v", err)
			}
			got, err := a.GroupOffsets(ctx, "g", tps)
			if err != nil {
				t.Fatalf("GroupOffsets: %v", err)
			}
			want := map[TopicPartition]int64{{"t", 0}: 5, {"t", 1}: 9, {"t", 2}: -1, {"u", 0}: 1}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("group offsets %v, want %v", got, want)
			}
		})
	}
}
