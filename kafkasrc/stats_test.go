package kafkasrc

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/record"
)

// recordingSink is a StatsSink that keeps what it is told.
type recordingSink struct {
	mu     sync.Mutex
	stats  []string
	closed []string
}

func (s *recordingSink) Stats(json string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = append(s.stats, json)
}

func (s *recordingSink) Closed(client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = append(s.closed, client)
}

// TestCacheClosesIdleConsumersWithStats: with statistics on, a cached
// consumer idle past the timeout is closed (nothing would poll its
// statistics events) and the sink is told its name; one used since stays.
func TestCacheClosesIdleConsumersWithStats(t *testing.T) {
	_, cl := newTestCluster(t, 2, "t")
	k := newKgo(t, cl)
	produce(t, k, "t", 0, keyed(0, 10))
	produce(t, k, "t", 1, keyed(0, 10))
	sink := &recordingSink{}
	c := NewCache(4, testLogger(t), WithStats(sink))
	t.Cleanup(c.Close)

	mustCollect(t, c, cl, Range{Topic: "t", Partition: 0, From: 0, Until: 10})
	between := time.Now()
	mustCollect(t, c, cl, Range{Topic: "t", Partition: 1, From: 0, Until: 10})
	if n := c.Len(); n != 2 {
		t.Fatalf("%d cached consumers, want 2", n)
	}
	c.mu.Lock()
	first := c.entries[cacheKey{cluster: cl.Key(), group: "sluice-test", topic: "t", partition: 0}]
	c.mu.Unlock()
	name := first.kc.String()

	if n := c.closeIdle(between); n != 1 {
		t.Fatalf("closeIdle closed %d consumers, want the one idle since before (partition 0)", n)
	}
	if n := c.Len(); n != 1 {
		t.Errorf("%d cached consumers after closeIdle, want 1", n)
	}
	c.Close()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.closed) != 2 || !slices.Contains(sink.closed, name) {
		t.Errorf("sink told of closed clients %v, want 2 with %s", sink.closed, name)
	}
}

// TestCacheRunWithoutStats: without statistics Run closes nothing and
// returns when ctx ends.
func TestCacheRunWithoutStats(t *testing.T) {
	c := NewCache(1, testLogger(t))
	t.Cleanup(c.Close)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(ctx); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestPoolStats: a pool's consumers of both kinds send statistics the
// worker's sink reads (librdkafka's fields: the records they fetched, by
// name), and the sink is told when one closes.
func TestPoolStats(t *testing.T) {
	statsInterval = 20 * time.Millisecond
	t.Cleanup(func() { statsInterval = StatsInterval })
	_, cl := newTestCluster(t, 2, "t")
	k := newKgo(t, cl)
	produce(t, k, "t", 0, keyed(0, 50))
	produce(t, k, "t", 1, keyed(0, 50))
	for _, kind := range poolKinds {
		t.Run(kind.name, func(t *testing.T) {
			sink := &recordingSink{}
			p := NewPool(1, testLogger(t), WithStats(sink))
			p.librdkafka = kind.librdkafka
			for i := range int64(10) {
				time.Sleep(3 * statsInterval)
				rs := []Range{{Topic: "t", Partition: 0, From: i * 5, Until: i*5 + 5}, {Topic: "t", Partition: 1, From: i * 5, Until: i*5 + 5}}
				if _, err := p.ReadRanges(testCtx(t), cl, "g", rs, func(*record.Record) error { return nil }); err != nil {
					t.Fatal(err)
				}
			}
			p.Close()
			sink.mu.Lock()
			defer sink.mu.Unlock()
			var last struct {
				Name   string `json:"name"`
				RxMsgs int64  `json:"rxmsgs"`
			}
			for _, js := range sink.stats {
				if err := json.Unmarshal([]byte(js), &last); err != nil {
					t.Fatalf("statistics %q: %v", js, err)
				}
			}
			if last.Name == "" || last.RxMsgs < 50 {
				t.Fatalf("last statistics %+v of %d, want a name and at least 50 records fetched", last, len(sink.stats))
			}
			if !slices.Contains(sink.closed, last.Name) {
				t.Errorf("closed clients %v do not name %s", sink.closed, last.Name)
			}
		})
	}
}
