package kafkasrc

import "testing"

// TestPlanClientOnlyForPlainClusters: the coordinator's partition and
// offset questions go through franz-go only when it connects as librdkafka
// would; security, socket and broker-address options keep them on
// librdkafka.
func TestPlanClientOnlyForPlainClusters(t *testing.T) {
	tests := []struct {
		props map[string]string
		want  bool
	}{
		{nil, true},
		{map[string]string{"client.id": "x", "fetch.max.bytes": "1000000", "isolation.level": "read_committed"}, true},
		{map[string]string{"security.protocol": "PLAINTEXT"}, true},
		{map[string]string{"security.protocol": "SASL_SSL"}, false},
		{map[string]string{"sasl.mechanism": "PLAIN"}, false},
		{map[string]string{"ssl.ca.location": "/etc/ca.pem"}, false},
		{map[string]string{"socket.timeout.ms": "1000"}, false},
		{map[string]string{"broker.address.family": "v4"}, false},
		{map[string]string{" SASL.username": "u"}, false},
	}
	for _, tc := range tests {
		cl, err := newPlanClient(Cluster{Bootstrap: "127.0.0.1:1", Properties: tc.props})
		if err != nil {
			t.Fatalf("%v: %v", tc.props, err)
		}
		if got := cl != nil; got != tc.want {
			t.Errorf("%v: franz-go client %v, want %v", tc.props, got, tc.want)
		}
		if cl != nil {
			cl.Close()
		}
	}
}

// TestBriefList: errors about thousands of partitions stay one short line.
func TestBriefList(t *testing.T) {
	var tps []TopicPartition
	for p := range int32(10_000) {
		tps = append(tps, TopicPartition{"t", p})
	}
	for _, tc := range []struct {
		in   []TopicPartition
		want string
	}{
		{nil, "[]"},
		{tps[:2], "[t/0 t/1]"},
		{tps, "[t/0 t/1 t/2 t/3] and 9996 more"},
	} {
		if got := briefList(tc.in); got != tc.want {
			t.Errorf("briefList(%d partitions) = %q, want %q", len(tc.in), got, tc.want)
		}
	}
}
