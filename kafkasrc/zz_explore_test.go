package kafkasrc

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestExploreFetch(t *testing.T) {
	if os.Getenv("EXPLORE") == "" {
		t.Skip()
	}
	_, cl := newTestCluster(t, 1, "bench")
	k := newKgo(t, cl, kgo.ProducerBatchMaxBytes(1<<20))
	for i := 0; i < benchRecords; i += 10_000 {
		rs := make([]*kgo.Record, 0, 10_000)
		for j := i; j < i+10_000; j++ {
			rs = append(rs, &kgo.Record{Topic: "bench", Key: fmt.Appendf(nil, "key-%07d", j), Value: fmt.Appendf(nil, "value-%07d", j)})
		}
		if err := k.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	for _, extra := range strings.Split(os.Getenv("EXPLORE"), ";") {
		cm := consumerConfig(cl, "x")
		if extra == "defaults" {
			for _, p := range []string{"fetch.wait.max.ms", "queued.min.messages", "queued.max.messages.kbytes"} {
				delete(cm, p)
			}
		} else if extra != "" {
			for _, kv := range strings.Split(extra, ",") {
				p := strings.SplitN(kv, "=", 2)
				cm[p[0]] = p[1]
			}
		}
		kc, err := kafka.NewConsumer(&cm)
		if err != nil {
			t.Fatal(err)
		}
		topic := "bench"
		start := time.Now()
		kc.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: 0, Offset: 0}})
		polls := 0
		for n := 0; n < benchRecords; {
			polls++
			switch e := kc.Poll(100).(type) {
			case *kafka.Message:
				n++
			case kafka.Error:
				t.Fatal(e)
			}
		}
		d := time.Since(start)
		t.Logf("%q: %v, %.0f rec/s, polls %d", extra, d, benchRecords/d.Seconds(), polls)
		kc.Close()
	}
}

func TestExploreUnknown(t *testing.T) {
	if os.Getenv("EXPLORE2") == "" {
		t.Skip()
	}
	_, cl := newTestCluster(t, 1, "t")
	produce(t, newKgo(t, cl), "t", 0, keyed(0, 10))
	c := newTestCache(t, 2)
	for _, r := range []Range{{Topic: "t", Partition: 5, From: 0, Until: 10}, {Topic: "nope", Partition: 0, From: 0, Until: 10}} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		start := time.Now()
		_, st, err := collect(t, ctx, c, cl, r)
		cancel()
		t.Logf("%s: %v after %v, %+v", r, err, time.Since(start), st)
	}
}
