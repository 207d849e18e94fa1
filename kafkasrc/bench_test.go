package kafkasrc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/record"
)

const benchRecords = 200_000

// BenchmarkRead compares reading 200k small records from kfake through
// Cache.Read with a bare confluent-kafka-go consumer loop over the same
// records, with the same consumer settings. Each iteration uses a new
// consumer (creation and connection are timed, closing is not). Compare the
// records/s metrics: the project's target is cache >= 90% of bare.
func BenchmarkRead(b *testing.B) {
	_, cl := newTestCluster(b, 1, "bench")
	k := newKgo(b, cl, kgo.ProducerBatchMaxBytes(1<<20))
	for i := 0; i < benchRecords; i += 10_000 {
		rs := make([]*kgo.Record, 0, 10_000)
		for j := i; j < i+10_000; j++ {
			rs = append(rs, &kgo.Record{Topic: "bench", Key: fmt.Appendf(nil, "key-%07d", j), Value: fmt.Appendf(nil, "value-%07d", j)})
		}
		if err := k.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
			b.Fatalf("produce: %v", err)
		}
	}
	logger := testLogger(b)
	bareRead(b, cl) // warm up the broker, untimed

	b.Run("bare", func(b *testing.B) {
		var bytes int
		for b.Loop() {
			bytes += bareRead(b, cl)
		}
		reportRate(b, bytes)
	})

	for _, ranges := range []int64{1, 10} {
		b.Run(fmt.Sprintf("cache/%d-ranges", ranges), func(b *testing.B) {
			var bytes int
			fn := func(r *record.Record) error {
				bytes += len(r.Key) + len(r.Value)
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			for b.Loop() {
				c := NewCache(1, logger)
				step := benchRecords / ranges
				for from := int64(0); from < benchRecords; from += step {
					st, err := c.Read(ctx, cl, "bench-cache", Range{Topic: "bench", Partition: 0, From: from, Until: from + step}, fn)
					if err != nil {
						b.Fatal(err)
					}
					if st.Records != step {
						b.Fatalf("read %d records, want %d", st.Records, step)
					}
				}
				b.StopTimer()
				c.Close()
				b.StartTimer()
			}
			reportRate(b, bytes)
		})
	}
}

func reportRate(b *testing.B, bytes int) {
	b.Helper()
	if bytes == 0 {
		b.Fatal("no bytes read")
	}
	b.ReportMetric(float64(benchRecords)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(0, "ns/op")
}

// bareRead reads the benchmark's records with a bare confluent-kafka-go
// consumer loop, with the consumer settings Cache uses, and returns the bytes
// of keys and values read. Closing the consumer is not timed.
func bareRead(b *testing.B, cl Cluster) int {
	cm := consumerConfig(cl, "bench-bare")
	cm["log_level"] = 4
	kc, err := kafka.NewConsumer(&cm)
	if err != nil {
		b.Fatal(err)
	}
	topic := "bench"
	if err := kc.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: 0, Offset: 0}}); err != nil {
		b.Fatal(err)
	}
	bytes := 0
	for n := 0; n < benchRecords; {
		switch e := kc.Poll(100).(type) {
		case *kafka.Message:
			if e.TopicPartition.Error != nil {
				b.Fatal(e.TopicPartition.Error)
			}
			bytes += len(e.Key) + len(e.Value)
			n++
		case kafka.Error:
			b.Fatal(e)
		}
	}
	b.StopTimer()
	kc.Close()
	b.StartTimer()
	return bytes
}
