package worker

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// statsEvent is a librdkafka consumer statistics event, trimmed to the
// shape of its STATISTICS.md (the internal partition -1 included).
func statsEvent(name string, rxBytes, rxMsgs, rxMsgBytes, replyq, fetchqCnt, fetchqSize int64) string {
	return fmt.Sprintf(`{"name":%q,"client_id":"rdkafka","type":"consumer","ts":1,"time":1,"replyq":%d,
"msg_cnt":0,"msg_size":0,"tx":10,"tx_bytes":900,"rx":10,"rx_bytes":%d,"txmsgs":0,"rxmsgs":%d,"rxmsg_bytes":%d,
"brokers":{"127.0.0.1:9092/1":{"name":"127.0.0.1:9092/1","state":"UP","rx":10}},
"topics":{"events":{"topic":"events","partitions":{
 "0":{"partition":0,"fetchq_cnt":%d,"fetchq_size":%d,"consumer_lag":5},
 "-1":{"partition":-1,"fetchq_cnt":99,"fetchq_size":9999}}}}}`,
		name, replyq, rxBytes, rxMsgs, rxMsgBytes, fetchqCnt, fetchqSize)
}

func TestKafkaStats(t *testing.T) {
	k := newKafkaStats()
	reg := prometheus.NewRegistry()
	reg.MustRegister(k)
	steps := []struct {
		name string
		do   func()
		want map[string]float64
	}{
		{"first event of a client counts from its start", func() {
			k.Stats(statsEvent("c1", 1000, 10, 800, 1, 4, 400))
		}, map[string]float64{
			"sluice_worker_kafka_rx_bytes_total": 1000, "sluice_worker_kafka_rx_messages_total": 10,
			"sluice_worker_kafka_rx_message_bytes_total": 800, "sluice_worker_kafka_reply_queue_ops": 1,
			"sluice_worker_kafka_fetch_queue_messages": 4, "sluice_worker_kafka_fetch_queue_bytes": 400,
			"sluice_worker_kafka_consumers": 1,
		}},
		{"a second client adds up", func() {
			k.Stats(statsEvent("c2", 500, 5, 400, 0, 2, 200))
		}, map[string]float64{
			"sluice_worker_kafka_rx_bytes_total": 1500, "sluice_worker_kafka_rx_messages_total": 15,
			"sluice_worker_kafka_fetch_queue_messages": 6, "sluice_worker_kafka_fetch_queue_bytes": 600,
			"sluice_worker_kafka_consumers": 2,
		}},
		{"a later event adds its growth; gauges are its latest", func() {
			k.Stats(statsEvent("c1", 1600, 16, 1300, 0, 0, 0))
		}, map[string]float64{
			"sluice_worker_kafka_rx_bytes_total": 2100, "sluice_worker_kafka_rx_messages_total": 21,
			"sluice_worker_kafka_rx_message_bytes_total": 1700,
			"sluice_worker_kafka_fetch_queue_messages":   2, "sluice_worker_kafka_fetch_queue_bytes": 200,
		}},
		{"a closed client leaves the gauges, not the totals", func() {
			k.Closed("c2")
		}, map[string]float64{
			"sluice_worker_kafka_rx_bytes_total": 2100, "sluice_worker_kafka_fetch_queue_messages": 0,
			"sluice_worker_kafka_consumers": 1,
		}},
		{"a client started again under a name counts from zero", func() {
			k.Stats(statsEvent("c1", 100, 1, 50, 0, 0, 0))
		}, map[string]float64{
			"sluice_worker_kafka_rx_bytes_total": 2200, "sluice_worker_kafka_rx_messages_total": 22,
		}},
		{"an event that does not parse is dropped", func() {
			k.Stats(`{"name":`)
			k.Stats(`{"rx_bytes":5}`)
		}, map[string]float64{
			"sluice_worker_kafka_rx_bytes_total": 2200, "sluice_worker_kafka_consumers": 1,
		}},
	}
	for _, st := range steps {
		st.do()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				got[mf.GetName()] = c.GetValue()
			} else {
				got[mf.GetName()] = m.GetGauge().GetValue()
			}
		}
		for name, v := range st.want {
			if got[name] != v {
				t.Errorf("%s: %s = %v, want %v", st.name, name, got[name], v)
			}
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP sluice_worker_kafka_consumers Kafka consumers of the worker that reported statistics and are open.
# TYPE sluice_worker_kafka_consumers gauge
sluice_worker_kafka_consumers 1
`), "sluice_worker_kafka_consumers"); err != nil {
		t.Error(err)
	}
}
