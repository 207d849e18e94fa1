package jobspec

import (
	"reflect"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestSinkCluster: the sink's connection properties (security, sockets)
// reach every client of the sink's cluster, over the source's when the sink
// shares it; producer tuning stays with the producers.
func TestSinkCluster(t *testing.T) {
	src := map[string]string{"security.protocol": "SASL_SSL", "sasl.username": "reader", "fetch.max.bytes": "1000"}
	sink := map[string]string{"sasl.username": "writer", "ssl.ca.location": "/k/ca.pem", "compression.type": "lz4", "acks": "all"}
	spec := func(bootstrap string, sinkProps map[string]string) *sluicev1.JobSpec {
		return &sluicev1.JobSpec{
			Source: &sluicev1.KafkaSource{BootstrapServers: "src:9092", Properties: src},
			Sink:   &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{BootstrapServers: bootstrap, Properties: sinkProps}}},
		}
	}
	for _, tc := range []struct {
		name      string
		spec      *sluicev1.JobSpec
		bootstrap string
		props     map[string]string
	}{
		{"own cluster", spec("dst:9092", sink), "dst:9092", map[string]string{"sasl.username": "writer", "ssl.ca.location": "/k/ca.pem"}},
		{"own cluster, no connection properties", spec("dst:9092", map[string]string{"acks": "1"}), "dst:9092", nil},
		{"the source's cluster", spec("", sink), "src:9092", map[string]string{"security.protocol": "SASL_SSL", "sasl.username": "writer", "ssl.ca.location": "/k/ca.pem", "fetch.max.bytes": "1000"}},
		{"the source's cluster, its properties", spec("", nil), "src:9092", src},
	} {
		c := Sink(tc.spec)
		if c.Bootstrap != tc.bootstrap || !reflect.DeepEqual(c.Properties, tc.props) || c.ReadCommitted {
			t.Errorf("%s: Sink = %+v, want bootstrap %s, properties %v, read uncommitted", tc.name, c, tc.bootstrap, tc.props)
		}
	}
	if src["sasl.username"] != "reader" {
		t.Errorf("Sink changed the source's properties: %v", src)
	}
}
