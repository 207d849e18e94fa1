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

// Go channel sizes of a producer, unless its configuration sets them.
// confluent-kafka-go makes both 1,000,000 deep by default: 23 MiB of Go
// memory per producer, allocated at creation, which a worker caching
// dozens of transactional producers (and replacing them task after task on
// a job of many partitions) multiplied into gigabytes. Sluice never sends
// through the produce channel, and drains the events channel as it fills.
const (
	producerEventsChannel  = 10_000
	producerProduceChannel = 1
)

func newKafkaProducer(cm *kafka.ConfigMap) (*kafka.Producer, error) {
	if _, ok := (*cm)["go.events.channel.size"]; !ok {
		(*cm)["go.events.channel.size"] = producerEventsChannel
	}
	if _, ok := (*cm)["go.produce.channel.size"]; !ok {
		(*cm)["go.produce.channel.size"] = producerProduceChannel
	}
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
