package kafkasrc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/record"
)

const benchRecords = 200_000

// BenchmarkRead compares reading 200k small records from kfake through
// Cache.Read with a bare confluent-kafka-go consumer loop over the same
// records, with the cache's settings but librdkafka's default 64 MiB queue
// (its default fetch.queue.backoff.ms of 1 s would halve the bare rate). The cache's
// consumer has a default worker's share of its consumer memory
// (DefaultConsumerMemory over 64 consumers: 2 MiB). Each read uses a new consumer
// (creation and connection are timed, closing is not); the cache reads the
// records as 10 consecutive ranges (10 tasks) through its cached consumer.
//
// The side-by-side case alternates the two in every iteration and reports
// both rates and their ratio, which is what to look at on a busy machine
// (the project's target is cache >= 90% of bare).
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
	bareRead(b, cl) // warm up the broker

	b.Run("bare", func(b *testing.B) {
		var d time.Duration
		for b.Loop() {
			d += bareRead(b, cl)
		}
		b.ReportMetric(float64(benchRecords*b.N)/d.Seconds(), "records/s")
	})
	b.Run("cache", func(b *testing.B) {
		var d time.Duration
		for b.Loop() {
			d += cacheRead(b, cl, logger, 10)
		}
		b.ReportMetric(float64(benchRecords*b.N)/d.Seconds(), "records/s")
	})
	b.Run("side-by-side", func(b *testing.B) {
		var bare, cache time.Duration
		i := 0
		for b.Loop() {
			if i%2 == 0 {
				bare += bareRead(b, cl)
				cache += cacheRead(b, cl, logger, 10)
			} else {
				cache += cacheRead(b, cl, logger, 10)
				bare += bareRead(b, cl)
			}
			i++
		}
		reportRates(b, benchRecords, bare, cache, "cache")
	})
}

// reportRates reports the rates of the bare reads and of the reads of
// name, which took bare and took over b.N reads of records each, and their
// ratio in per cent.
func reportRates(b *testing.B, records int, bare, took time.Duration, name string) {
	bareRate := float64(records*b.N) / bare.Seconds()
	rate := float64(records*b.N) / took.Seconds()
	b.ReportMetric(bareRate, "bare-records/s")
	b.ReportMetric(rate, name+"-records/s")
	b.ReportMetric(100*rate/bareRate, name+"/bare-%")
}

// bareRead reads the benchmark's records with a bare confluent-kafka-go
// consumer loop, with the cache's settings but a 64 MiB queue, and returns
// how long it took, without closing the consumer.
func bareRead(b *testing.B, cl Cluster) time.Duration {
	b.Helper()
	start := time.Now()
	cm, _ := consumerConfig(cl, "bench-bare", 128<<20)
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
	d := time.Since(start)
	if bytes == 0 {
		b.Fatal("no bytes read")
	}
	b.StopTimer()
	kc.Close()
	b.StartTimer()
	return d
}

// cacheRead reads the benchmark's records through a new Cache in the given
// number of consecutive ranges and returns how long it took, without closing
// the cache.
func cacheRead(b *testing.B, cl Cluster, logger hclog.Logger, ranges int64) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bytes := 0
	fn := func(r *record.Record) error {
		bytes += len(r.Key) + len(r.Value)
		return nil
	}
	start := time.Now()
	c := NewCache(1, logger, WithMemory(DefaultConsumerMemory/64))
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
	d := time.Since(start)
	if bytes == 0 {
		b.Fatal("no bytes read")
	}
	b.StopTimer()
	c.Close()
	b.StartTimer()
	return d
}

// Wide reads: a backlog of wideRecords records of about 100 bytes spread
// over widePartitions partitions, read in wideBatches consecutive batches
// of one range per partition (as tasks of a job on a wide topic read it:
// 700 records a range, about what a task of make bench's (e) reads of each
// of its partitions in a batch).
const (
	widePartitions = 128
	wideRecords    = 358_400
	wideBatches    = 4
)

// BenchmarkReadRangesWide compares reading a backlog on 128 partitions
// through Pool.ReadRanges, in consecutive batches of a range per partition
// with one pool consumer, with one bare librdkafka consumer assigned all 128
// partitions, for both kinds of pool consumers. The two alternate in every
// iteration; look at the ratio, and at fetched/record: the records the
// pool's consumer fetched (librdkafka's statistics' rxmsgs, franz-go's fetch
// hook) per record delivered, above 1 when a partition paused with a fetch
// in flight drops it and fetches it again.
func BenchmarkReadRangesWide(b *testing.B) {
	statsInterval = 50 * time.Millisecond
	b.Cleanup(func() { statsInterval = StatsInterval })
	_, cl := newTestCluster(b, widePartitions, "wide")
	produceWide(b, cl)
	logger := testLogger(b)
	for _, kind := range poolKinds {
		b.Run(kind.name, func(b *testing.B) {
			compareWide(b, cl, "pool", func(i int, perPart int64) (time.Duration, int64) {
				return poolReadWide(b, cl, logger, kind.librdkafka, fmt.Sprintf("bench-pool-%d", i), perPart)
			})
		})
	}
}

// compareWide alternates read with a bare consumer's read of the wide
// backlog in every iteration, and reports both rates, their ratio and the
// records read fetched for each record it delivered.
func compareWide(b *testing.B, cl Cluster, name string, read func(i int, perPart int64) (time.Duration, int64)) {
	b.Helper()
	perPart := int64(wideRecords / widePartitions)
	var bare, took time.Duration
	var fetched int64
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			bare += bareReadWide(b, cl)
		}
		d, n := read(i, perPart)
		took, fetched = took+d, fetched+n
		if i%2 == 1 {
			bare += bareReadWide(b, cl)
		}
	}
	reportRates(b, wideRecords, bare, took, name)
	b.ReportMetric(float64(fetched)/float64(wideRecords*b.N), "fetched/record")
}

// produceWide writes the wide backlog.
func produceWide(b *testing.B, cl Cluster) {
	b.Helper()
	// Uncompressed batches, as a busy producer of many partitions makes
	// them (make bench's (e) backlog: 4 to 92 KB, median 14 KB). Snappy
	// batches of one repeated value, as before, made the 64 KiB partition
	// fetch bring whole partitions, and fetched/record measured that.
	k := newKgo(b, cl, kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(100_000))
	value := bytes.Repeat([]byte("v"), 100)
	var failed atomic.Pointer[error]
	for i := range wideRecords {
		k.Produce(context.Background(), &kgo.Record{Topic: "wide", Partition: int32(i % widePartitions), Key: fmt.Appendf(nil, "key-%07d", i), Value: value},
			func(_ *kgo.Record, err error) {
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			})
	}
	if err := k.Flush(context.Background()); err != nil {
		b.Fatalf("produce: %v", err)
	}
	if e := failed.Load(); e != nil {
		b.Fatalf("produce: %v", *e)
	}
}

func bareReadWide(b *testing.B, cl Cluster) time.Duration {
	b.Helper()
	start := time.Now()
	cm, _ := consumerConfig(cl, "bench-bare", multiConsumerShare)
	cm["log_level"] = 4
	kc, err := kafka.NewConsumer(&cm)
	if err != nil {
		b.Fatal(err)
	}
	topic := "wide"
	var tps []kafka.TopicPartition
	for p := range int32(widePartitions) {
		tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p, Offset: 0})
	}
	if err := kc.Assign(tps); err != nil {
		b.Fatal(err)
	}
	for n := 0; n < wideRecords; {
		switch e := kc.Poll(100).(type) {
		case *kafka.Message:
			if e.TopicPartition.Error != nil {
				b.Fatal(e.TopicPartition.Error)
			}
			n++
		case kafka.Error:
			b.Fatal(e)
		}
	}
	d := time.Since(start)
	b.StopTimer()
	kc.Close()
	b.StartTimer()
	return d
}

// poolReadWide reads the wide backlog through a new Pool in wideBatches
// batches and returns how long it took, and how many records its consumer
// fetched, without closing the pool.
func poolReadWide(b *testing.B, cl Cluster, logger hclog.Logger, librdkafka bool, group string, perPart int64) (time.Duration, int64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := 0
	fn := func(*record.Record) error { n++; return nil }
	start := time.Now()
	rx := &rxCounter{}
	p := NewPool(1, logger, WithStats(rx))
	p.librdkafka = librdkafka
	step := perPart / wideBatches
	for from := int64(0); from < perPart; from += step {
		ranges := make([]Range, widePartitions)
		for i := range ranges {
			ranges[i] = Range{Topic: "wide", Partition: int32(i), From: from, Until: min(from+step, perPart)}
		}
		if _, err := p.ReadRanges(ctx, cl, group, ranges, fn); err != nil {
			b.Fatal(err)
		}
	}
	d := time.Since(start)
	if n != wideRecords {
		b.Fatalf("read %d records, want %d", n, wideRecords)
	}
	b.StopTimer()
	// The statistics of the end: a one-record read polls them.
	time.Sleep(3 * statsInterval)
	last := []Range{{Topic: "wide", Partition: 0, From: perPart - 1, Until: perPart}}
	if _, err := p.ReadRanges(ctx, cl, group, last, func(*record.Record) error { return nil }); err != nil {
		b.Fatal(err)
	}
	p.Close()
	b.StartTimer()
	return d, rx.fetched.Load()
}

// rxCounter keeps the highest rxmsgs of the statistics it is sent.
type rxCounter struct{ fetched atomic.Int64 }

func (c *rxCounter) Stats(js string) {
	var s struct {
		RxMsgs int64 `json:"rxmsgs"`
	}
	if json.Unmarshal([]byte(js), &s) == nil && s.RxMsgs > c.fetched.Load() {
		c.fetched.Store(s.RxMsgs)
	}
}

func (c *rxCounter) Closed(string) {}
