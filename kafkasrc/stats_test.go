package kafkasrc

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
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
