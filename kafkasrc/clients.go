package kafkasrc

import (
	"sync/atomic"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// liveClients counts the librdkafka handles (producers, consumers) created
// by this package and not yet closed. An admin client is derived from a
// producer and shares its handle.
var liveClients atomic.Int64

// LiveClients returns the number of librdkafka client handles this process
// created through the package and has not closed yet: every one holds
// threads, connections and buffers, so tests use it to check that clients
// are released.
func LiveClients() int64 { return liveClients.Load() }

func newKafkaProducer(cm *kafka.ConfigMap) (*kafka.Producer, error) {
	p, err := kafka.NewProducer(cm)
	if err == nil {
		liveClients.Add(1)
	}
	return p, err
}

// closeKafkaProducer closes p; call it once per producer.
func closeKafkaProducer(p *kafka.Producer) {
	p.Close()
	liveClients.Add(-1)
}

func newKafkaConsumer(cm *kafka.ConfigMap) (*kafka.Consumer, error) {
	c, err := kafka.NewConsumer(cm)
	if err == nil {
		liveClients.Add(1)
	}
	return c, err
}

// closeKafkaConsumer closes c; call it once per consumer.
func closeKafkaConsumer(c *kafka.Consumer) error {
	err := c.Close()
	liveClients.Add(-1)
	return err
}
