package kafkasrc

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StatsSink receives the librdkafka statistics of a Cache's or a Pool's
// consumers (WithStats): the JSON of librdkafka's STATISTICS.md, every
// StatsInterval, from the goroutine polling the consumer (a Pool's
// franz-go consumers send its rxmsgs, rxmsg_bytes, rx_bytes and fetch
// queue fields, see fetchStats); Closed names a client that is gone.
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

// fetchStats counts what a franz-go consumer fetched (its hooks) and sends
// it to a StatsSink every statsInterval in librdkafka's statistics format,
// the fields the sink reads: rxmsgs, rxmsg_bytes and rx_bytes, and as the
// fetch queue what the client has buffered.
type fetchStats struct {
	sink                        StatsSink
	name                        string
	rxMsgs, rxMsgBytes, rxBytes atomic.Int64
	last                        time.Time // owned by the consumer's reads
}

var fetchStatsClients atomic.Int64

func newFetchStats(sink StatsSink) *fetchStats {
	return &fetchStats{sink: sink, name: fmt.Sprintf("sluice#pool-%d", fetchStatsClients.Add(1)), last: time.Now()}
}

func (s *fetchStats) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	s.rxMsgs.Add(int64(m.NumRecords))
	s.rxMsgBytes.Add(int64(m.UncompressedBytes))
}

func (s *fetchStats) OnBrokerRead(_ kgo.BrokerMetadata, _ int16, bytesRead int, _, _ time.Duration, _ error) {
	s.rxBytes.Add(int64(bytesRead))
}

// maybeSend sends the statistics when statsInterval has passed since the
// last; a nil s does nothing.
func (s *fetchStats) maybeSend(kc *kgo.Client) {
	if s == nil || time.Since(s.last) < statsInterval {
		return
	}
	s.last = time.Now()
	type part struct {
		FetchqCnt  int64 `json:"fetchq_cnt"`
		FetchqSize int64 `json:"fetchq_size"`
	}
	type topic struct {
		Partitions map[string]part `json:"partitions"`
	}
	js, err := json.Marshal(struct {
		Name       string           `json:"name"`
		RxBytes    int64            `json:"rx_bytes"`
		RxMsgs     int64            `json:"rxmsgs"`
		RxMsgBytes int64            `json:"rxmsg_bytes"`
		Topics     map[string]topic `json:"topics"`
	}{s.name, s.rxBytes.Load(), s.rxMsgs.Load(), s.rxMsgBytes.Load(),
		map[string]topic{"": {Partitions: map[string]part{"0": {kc.BufferedFetchRecords(), kc.BufferedFetchBytes()}}}}})
	if err == nil {
		s.sink.Stats(string(js))
	}
}
