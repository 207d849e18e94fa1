package kafkasrc

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestValidateProperties(t *testing.T) {
	tests := []struct {
		name    string
		props   map[string]string
		wantErr string // substring naming the property; "" = no error
	}{
		{name: "nil", props: nil},
		{name: "empty", props: map[string]string{}},
		{name: "allowed", props: map[string]string{
			"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
			"fetch.wait.max.ms": "50", "queued.min.messages": "1000", "client.id": "me",
		}},
		{name: "group.id", props: map[string]string{"group.id": "g"}, wantErr: `"group.id"`},
		{name: "enable.auto.commit", props: map[string]string{"enable.auto.commit": "true"}, wantErr: `"enable.auto.commit"`},
		{name: "auto.commit.enable alias", props: map[string]string{"auto.commit.enable": "true"}, wantErr: `"auto.commit.enable"`},
		{name: "enable.auto.offset.store", props: map[string]string{"enable.auto.offset.store": "true"}, wantErr: `"enable.auto.offset.store"`},
		{name: "auto.offset.reset", props: map[string]string{"auto.offset.reset": "earliest"}, wantErr: `"auto.offset.reset"`},
		{name: "isolation.level", props: map[string]string{"isolation.level": "read_uncommitted"}, wantErr: `"isolation.level"`},
		{name: "bootstrap.servers", props: map[string]string{"bootstrap.servers": "x:9092"}, wantErr: `"bootstrap.servers"`},
		{name: "metadata.broker.list alias", props: map[string]string{"metadata.broker.list": "x:9092"}, wantErr: `"metadata.broker.list"`},
		{name: "enable.partition.eof", props: map[string]string{"enable.partition.eof": "true"}, wantErr: `"enable.partition.eof"`},
		{name: "go.logs.channel.enable", props: map[string]string{"go.logs.channel.enable": "false"}, wantErr: `"go.logs.channel.enable"`},
		{name: "go.events.channel.enable", props: map[string]string{"go.events.channel.enable": "true"}, wantErr: `"go.events.channel.enable"`},
		{name: "transactional.id", props: map[string]string{"transactional.id": "t"}, wantErr: `"transactional.id"`},
		{name: "surrounding spaces", props: map[string]string{" group.id ": "g"}, wantErr: `" group.id "`},
		{name: "empty name", props: map[string]string{"": "x"}, wantErr: `""`},
		{name: "one bad among good", props: map[string]string{"client.id": "a", "isolation.level": "x", "linger.ms": "5"}, wantErr: `"isolation.level"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateProperties(tc.props)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateProperties(%v) = %v, want nil", tc.props, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateProperties(%v) = nil, want an error naming %s", tc.props, tc.wantErr)
			}
			if !errors.Is(err, ErrReservedProperty) {
				t.Errorf("ValidateProperties(%v) = %v, want it to wrap ErrReservedProperty", tc.props, err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ValidateProperties(%v) = %q, want it to name %s", tc.props, err, tc.wantErr)
			}
		})
	}
}

func TestClusterKey(t *testing.T) {
	base := Cluster{Bootstrap: "a:1,b:2", Properties: map[string]string{"x": "1", "y": "2", "z": "3"}}
	same := Cluster{Bootstrap: "a:1,b:2", Properties: map[string]string{"z": "3", "y": "2", "x": "1"}}
	for i := 0; i < 20; i++ { // map iteration order varies between runs
		if got, want := same.Key(), base.Key(); got != want {
			t.Fatalf("Key() of the same cluster: got %q, want %q", got, want)
		}
	}
	tests := []struct {
		name string
		c    Cluster
	}{
		{"other bootstrap", Cluster{Bootstrap: "a:1", Properties: base.Properties}},
		{"read committed", Cluster{Bootstrap: base.Bootstrap, Properties: base.Properties, ReadCommitted: true}},
		{"other value", Cluster{Bootstrap: base.Bootstrap, Properties: map[string]string{"x": "1", "y": "2", "z": "4"}}},
		{"fewer properties", Cluster{Bootstrap: base.Bootstrap, Properties: map[string]string{"x": "1", "y": "2"}}},
		{"separator in value", Cluster{Bootstrap: base.Bootstrap, Properties: map[string]string{"x": "1 \"y\"=\"2\"", "z": "3"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.c.Key() == base.Key() {
				t.Errorf("Key() = %q for both %+v and %+v, want different keys", base.Key(), tc.c, base)
			}
		})
	}
}

func TestValidateProducerProperties(t *testing.T) {
	tests := []struct {
		name    string
		props   map[string]string
		wantErr bool
	}{
		{"acks and transactional.id", map[string]string{"acks": "all", "transactional.id": "t", "linger.ms": "10"}, false},
		{"bootstrap", map[string]string{"bootstrap.servers": "x:1"}, true},
		{"go.delivery.reports", map[string]string{"go.delivery.reports": "false"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateProducerProperties(tc.props)
			if got := err != nil; got != tc.wantErr {
				t.Errorf("validateProducerProperties(%v) = %v, want error %v", tc.props, err, tc.wantErr)
			}
		})
	}
}

// A consumer's prefetch properties follow its share of the worker's
// consumer memory: half for the queue, half for one fetch. Properties that
// ask for more are lowered and reported, smaller ones are kept, and an
// alias is folded into its property.
func TestConsumerConfigPrefetch(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name    string
		share   int64
		props   map[string]string
		want    map[string]string // property -> value in the config
		clamped []string
		absent  []string
	}{
		{name: "default share", share: DefaultConsumerMemory / 64, want: map[string]string{
			"queued.max.messages.kbytes": "1024", "queued.min.messages": "4096", "fetch.max.bytes": "1048576", "max.partition.fetch.bytes": "1048576",
		}, absent: []string{"message.max.bytes"}},
		{name: "below the minimum share", share: 1000, want: map[string]string{
			"queued.max.messages.kbytes": "1024", "fetch.max.bytes": "1048576",
		}},
		{name: "large share", share: 64 * mib, want: map[string]string{
			"queued.max.messages.kbytes": "32768", "queued.min.messages": "131072", "fetch.max.bytes": "33554432", "max.partition.fetch.bytes": "33554432",
		}},
		{name: "user asks for more", share: 4 * mib, props: map[string]string{
			"queued.max.messages.kbytes": "65536", "queued.min.messages": "100000", "fetch.max.bytes": "52428800", "max.partition.fetch.bytes": "10485760", "message.max.bytes": "10000000",
		}, want: map[string]string{
			"queued.max.messages.kbytes": "2048", "queued.min.messages": "8192", "fetch.max.bytes": "2097152", "max.partition.fetch.bytes": "2097152", "message.max.bytes": "2097152",
		}, clamped: []string{
			"queued.max.messages.kbytes=2048 (asked for 65536)", "queued.min.messages=8192 (asked for 100000)", "fetch.max.bytes=2097152 (asked for 52428800)",
			"max.partition.fetch.bytes=2097152 (asked for 10485760)", "message.max.bytes=2097152 (asked for 10000000)",
		}},
		{name: "user asks for less", share: 4 * mib, props: map[string]string{
			"queued.max.messages.kbytes": "100", "queued.min.messages": "10", "max.partition.fetch.bytes": "65536", "message.max.bytes": "1000000",
		}, want: map[string]string{
			"queued.max.messages.kbytes": "100", "queued.min.messages": "10", "fetch.max.bytes": "2097152", "max.partition.fetch.bytes": "65536", "message.max.bytes": "1000000",
		}},
		{name: "alias", share: 2 * mib, props: map[string]string{"fetch.message.max.bytes": "50000000"},
			want:    map[string]string{"max.partition.fetch.bytes": "1048576"},
			clamped: []string{"fetch.message.max.bytes=1048576 (asked for 50000000)"},
			absent:  []string{"fetch.message.max.bytes"}},
		{name: "not a number is left to librdkafka", share: 2 * mib, props: map[string]string{"fetch.max.bytes": "lots"},
			want: map[string]string{"fetch.max.bytes": "lots"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cm, clamped := consumerConfig(Cluster{Bootstrap: "b:9092", Properties: tc.props}, "g", tc.share)
			for k, v := range tc.want {
				if got := fmt.Sprint(cm[k]); got != v {
					t.Errorf("%s = %s, want %s", k, got, v)
				}
			}
			for _, k := range tc.absent {
				if _, ok := cm[k]; ok {
					t.Errorf("%s is set", k)
				}
			}
			sort.Strings(clamped)
			want := slices.Clone(tc.clamped)
			sort.Strings(want)
			if !slices.Equal(clamped, want) {
				t.Errorf("clamped = %q, want %q", clamped, want)
			}
		})
	}
}

// librdkafka accepts the prefetch settings of every share, and refuses a
// property that is not a number with a message naming it.
func TestConsumerConfigAccepted(t *testing.T) {
	for _, share := range []int64{0, MinConsumerShare, 3<<20 + 17, DefaultConsumerMemory} {
		cm, _ := consumerConfig(Cluster{Bootstrap: "127.0.0.1:1", Properties: map[string]string{"message.max.bytes": "50000000"}}, "g", share)
		kc, err := newKafkaConsumer(&cm)
		if err != nil {
			t.Fatalf("share %d: %v", share, err)
		}
		_ = closeKafkaConsumer(kc)
	}
	cm, _ := consumerConfig(Cluster{Bootstrap: "127.0.0.1:1", Properties: map[string]string{"fetch.max.bytes": "lots"}}, "g", MinConsumerShare)
	if kc, err := newKafkaConsumer(&cm); err == nil {
		_ = closeKafkaConsumer(kc)
		t.Fatal("fetch.max.bytes=lots accepted")
	} else if !strings.Contains(err.Error(), "fetch.max.bytes") {
		t.Errorf("error %q does not name fetch.max.bytes", err)
	}
}
