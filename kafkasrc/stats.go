package kafkasrc

import (
	"context"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// StatsSink receives the librdkafka statistics of a Cache's or a Pool's
// consumers (WithStats): the JSON of librdkafka's STATISTICS.md, every
// StatsInterval, from the goroutine polling the consumer; Closed names a
// client that is gone.
type StatsSink interface {
	Stats(json string)
	Closed(client string)
}

// StatsInterval is how often a consumer emits its statistics
// (statistics.interval.ms) when a StatsSink is set: often enough for a
// scrape every 15-30 s, rare enough to cost nothing.
const StatsInterval = 15 * time.Second

// statsInterval is StatsInterval; benchmarks shorten it.
var statsInterval = StatsInterval

// cacheIdleTimeout: with statistics on, a cached consumer no read took for
// this long is closed by Cache.Run. Nothing polls an idle consumer, and
// librdkafka queues a statistics event every StatsInterval until something
// does (as Spark's consumer cache, whose consumers time out after 5m).
const cacheIdleTimeout = 5 * time.Minute

// WithStats sends the statistics of a Cache's or a Pool's consumers to sink.
func WithStats(sink StatsSink) Option { return func(o *options) { o.stats = sink } }

// withStats turns statistics on in cm when sink is set.
func withStats(cm kafka.ConfigMap, sink StatsSink) {
	if sink != nil {
		cm["statistics.interval.ms"] = int(statsInterval / time.Millisecond)
	}
}

// deliverStats hands a polled statistics event to sink.
func deliverStats(sink StatsSink, ev *kafka.Stats) {
	if sink != nil {
		sink.Stats(ev.String())
	}
}

// Run closes, while statistics are on (WithStats), the cached consumers
// left idle for cacheIdleTimeout, until ctx ends. Without statistics it
// only waits for ctx.
func (c *Cache) Run(ctx context.Context) error {
	if c.stats == nil {
		<-ctx.Done()
		return nil
	}
	sweepIdle(ctx, cacheIdleTimeout, 5, c.closeIdle, c.logger, "cached consumers")
	return nil
}

// closeIdle closes the cached consumers not in use since before t and
// returns how many.
func (c *Cache) closeIdle(t time.Time) int {
	var old []*consumer
	c.mu.Lock()
	for _, e := range c.entries {
		if !e.inUse && e.idleSince.Before(t) {
			old = append(old, e)
		}
	}
	for _, e := range old {
		c.removeLocked(e)
	}
	c.mu.Unlock()
	for _, e := range old {
		c.closeLater(e)
	}
	return len(old)
}
