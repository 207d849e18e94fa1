package kafkasrc

import (
	"strings"
	"testing"
)

// TestPlanClientOnlyWhenTranslatable: the coordinator's partition and
// offset questions go through franz-go when it connects as librdkafka
// would: plaintext, or the TLS and SASL settings franzOptions translates.
// Other security, socket and broker-address options keep them on
// librdkafka; invalid security settings are errors naming the property.
func TestPlanClientOnlyWhenTranslatable(t *testing.T) {
	tests := []struct {
		props map[string]string
		want  bool
		err   string
	}{
		{props: nil, want: true},
		{props: map[string]string{"client.id": "x", "fetch.max.bytes": "1000000", "isolation.level": "read_committed"}, want: true},
		{props: map[string]string{"security.protocol": "PLAINTEXT"}, want: true},
		{props: map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": "p"}, want: true},
		{props: map[string]string{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u"}, want: true},
		{props: map[string]string{"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"}, want: true},
		{props: map[string]string{"sasl.mechanism": "PLAIN"}, want: true},        // ignored in plaintext, as librdkafka does
		{props: map[string]string{"security.protocol": "SASL_SSL"}, want: false}, // GSSAPI
		{props: map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}, want: false},
		{props: map[string]string{"security.protocol": "SSL", "ssl.cipher.suites": "ECDHE-RSA-AES256-GCM-SHA384"}, want: false},
		{props: map[string]string{"socket.timeout.ms": "1000"}, want: false},
		{props: map[string]string{"broker.address.family": "v4"}, want: false},
		{props: map[string]string{"security.protocol": "SSL", " SSL.ca.location": "/etc/ca.pem"}, want: false},
		{props: map[string]string{"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"}, err: `property "ssl.ca.location"`},
		{props: map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}, err: `property "sasl.username": required by SASL mechanism PLAIN`},
	}
	for _, tc := range tests {
		cl, err := newPlanClient(Cluster{Bootstrap: "127.0.0.1:1", Properties: tc.props}, testLogger(t))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want one containing %q", tc.props, err, tc.err)
			}
			continue
		}
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
