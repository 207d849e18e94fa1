package coordinator

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StartKafka starts a one-broker kfake cluster with topic of partitions
// partitions, closed at cleanup, and returns its address and a franz-go
// client of it (records go to the partition they name).
func StartKafka(t testing.TB, partitions int32, topic string) (string, *kgo.Client) {
	t.Helper()
	k, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.ListenAddrs()[0]
	kc, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	return brokers, kc
}
