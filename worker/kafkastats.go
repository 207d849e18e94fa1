package worker

import (
	"encoding/json"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// librdkafkaStats is the part of a librdkafka statistics event (its
// STATISTICS.md) that the worker exports.
type librdkafkaStats struct {
	Name       string `json:"name"`
	ReplyQ     int64  `json:"replyq"`
	RxBytes    int64  `json:"rx_bytes"`
	RxMsgs     int64  `json:"rxmsgs"`
	RxMsgBytes int64  `json:"rxmsg_bytes"`
	Topics     map[string]struct {
		Partitions map[string]struct {
			FetchqCnt  int64 `json:"fetchq_cnt"`
			FetchqSize int64 `json:"fetchq_size"`
		} `json:"partitions"`
	} `json:"topics"`
}

// clientStats is what is kept of one client's latest statistics.
type clientStats struct {
	rxBytes, rxMsgs, rxMsgBytes   int64 // cumulative, as the client counts
	replyQ, fetchqCnt, fetchqSize int64
}

// kafkaStats exports selected librdkafka statistics of the worker's
// consumers: counters summed over every client the worker had, gauges
// over the clients open now (as of their latest event). It is the
// kafkasrc.StatsSink of the consumer cache and pool.
type kafkaStats struct {
	rxBytes, rxMsgs, rxMsgBytes            prometheus.Counter
	replyQ, fetchqCnt, fetchqSize, clients *prometheus.Desc

	mu     sync.Mutex
	latest map[string]clientStats
}

func newKafkaStats() *kafkaStats {
	return &kafkaStats{
		rxBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_worker_kafka_rx_bytes_total",
			Help: "Bytes the worker's Kafka consumers received from brokers (librdkafka rx_bytes)."}),
		rxMsgs: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_worker_kafka_rx_messages_total",
			Help: "Messages the worker's Kafka consumers fetched (librdkafka rxmsgs)."}),
		rxMsgBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_worker_kafka_rx_message_bytes_total",
			Help: "Bytes of the messages the worker's Kafka consumers fetched (librdkafka rxmsg_bytes)."}),
		replyQ: prometheus.NewDesc("sluice_worker_kafka_reply_queue_ops",
			"Operations waiting in the consumers' reply queues to be polled (librdkafka replyq), as of their latest statistics.", nil, nil),
		fetchqCnt: prometheus.NewDesc("sluice_worker_kafka_fetch_queue_messages",
			"Messages prefetched in the consumers' fetch queues (librdkafka fetchq_cnt), as of their latest statistics.", nil, nil),
		fetchqSize: prometheus.NewDesc("sluice_worker_kafka_fetch_queue_bytes",
			"Bytes prefetched in the consumers' fetch queues (librdkafka fetchq_size), as of their latest statistics.", nil, nil),
		clients: prometheus.NewDesc("sluice_worker_kafka_consumers",
			"Kafka consumers of the worker that reported statistics and are open.", nil, nil),
		latest: map[string]clientStats{},
	}
}

// Stats takes one statistics event; an event that does not parse is
// dropped (statistics only inform).
func (k *kafkaStats) Stats(raw string) {
	var s librdkafkaStats
	if err := json.Unmarshal([]byte(raw), &s); err != nil || s.Name == "" {
		return
	}
	cur := clientStats{rxBytes: s.RxBytes, rxMsgs: s.RxMsgs, rxMsgBytes: s.RxMsgBytes, replyQ: s.ReplyQ}
	for _, t := range s.Topics {
		for id, p := range t.Partitions {
			if id == "-1" { // librdkafka's internal unassigned partition
				continue
			}
			cur.fetchqCnt += p.FetchqCnt
			cur.fetchqSize += p.FetchqSize
		}
	}
	k.mu.Lock()
	prev := k.latest[s.Name]
	k.latest[s.Name] = cur
	k.mu.Unlock()
	k.rxBytes.Add(float64(delta(prev.rxBytes, cur.rxBytes)))
	k.rxMsgs.Add(float64(delta(prev.rxMsgs, cur.rxMsgs)))
	k.rxMsgBytes.Add(float64(delta(prev.rxMsgBytes, cur.rxMsgBytes)))
}

// delta is how much a client's cumulative count grew since prev; a count
// below prev is a client that started again under the same name.
func delta(prev, cur int64) int64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// Closed forgets a closed client's gauges; its counts stay in the totals.
func (k *kafkaStats) Closed(client string) {
	k.mu.Lock()
	delete(k.latest, client)
	k.mu.Unlock()
}

func (k *kafkaStats) Describe(ch chan<- *prometheus.Desc) {
	k.rxBytes.Describe(ch)
	k.rxMsgs.Describe(ch)
	k.rxMsgBytes.Describe(ch)
	ch <- k.replyQ
	ch <- k.fetchqCnt
	ch <- k.fetchqSize
	ch <- k.clients
}

func (k *kafkaStats) Collect(ch chan<- prometheus.Metric) {
	k.rxBytes.Collect(ch)
	k.rxMsgs.Collect(ch)
	k.rxMsgBytes.Collect(ch)
	var sum clientStats
	k.mu.Lock()
	n := len(k.latest)
	for _, s := range k.latest {
		sum.replyQ += s.replyQ
		sum.fetchqCnt += s.fetchqCnt
		sum.fetchqSize += s.fetchqSize
	}
	k.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(k.replyQ, prometheus.GaugeValue, float64(sum.replyQ))
	ch <- prometheus.MustNewConstMetric(k.fetchqCnt, prometheus.GaugeValue, float64(sum.fetchqCnt))
	ch <- prometheus.MustNewConstMetric(k.fetchqSize, prometheus.GaugeValue, float64(sum.fetchqSize))
	ch <- prometheus.MustNewConstMetric(k.clients, prometheus.GaugeValue, float64(n))
}
