package dev

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestStartKafkaOnAnotherAddress starts the embedded broker on an address
// other than 127.0.0.1, as the multi-host test does on a namespace's own
// address: it listens there and advertises that address to clients.
func TestStartKafkaOnAnotherAddress(t *testing.T) {
	free, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(free)
	addr := net.JoinHostPort("127.0.0.2", port)
	k, err := StartKafka(KafkaConfig{Addr: addr})
	if err != nil {
		t.Fatalf("StartKafka(%s): %v", addr, err)
	}
	defer k.Close()
	if got := k.ListenAddrs(); len(got) != 1 || got[0] != addr {
		t.Fatalf("broker listens on %v, want [%s]", got, addr)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).BrokerMetadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 1 || md.Brokers[0].Host != "127.0.0.2" {
		t.Fatalf("metadata advertises %v, want host 127.0.0.2", md.Brokers)
	}
}

func TestStartKafkaRefusesAHostName(t *testing.T) {
	_, err := StartKafka(KafkaConfig{Addr: "broker.invalid:9092"})
	if err == nil || !strings.Contains(err.Error(), `kafka address "broker.invalid:9092"`) {
		t.Fatalf("StartKafka(broker.invalid:9092) error = %v, want one naming the address", err)
	}
}
