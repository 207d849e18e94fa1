// Package bench holds the workloads of `make bench`: the click-stream
// job on a backlog against bare librdkafka consumers, the sustained input rate
// search and the coordination overhead per batch. Each drives a running
// cluster through its public API only (the client SDK and Kafka clients), so
// the figures are what a user would see. cmd/sluice-bench runs them against
// separate processes and prints the table; e2e's benchmarks reuse them
// in-process.
package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Pages is how many distinct pages the events visit: the aggregate's keys.
const Pages = 1000

// eventTypes are drawn uniformly: one event in four is a click.
var eventTypes = [...]string{"click", "view", "view", "scroll", "click", "view", "purchase", "hover"}

var devices = [...]string{"mobile", "desktop", "tablet"}

// Agg is the ground truth of one page: the clicks on it and the sum of their ms.
type Agg struct {
	Count int64
	Sum   int64
}

// Truth is what the click job must report: per page ("/p/123") the count
// and the sum of ms of its click events.
type Truth map[string]Agg

// eventGen writes the events of one partition, deterministically from its seed.
type eventGen struct {
	rng    *rand.Rand
	ts     int64
	counts [Pages]Agg
}

func newEventGen(seed uint64, partition int32) *eventGen {
	return &eventGen{rng: rand.New(rand.NewPCG(seed, uint64(partition))), ts: 1_767_225_600_000}
}

// next appends one JSON event of about 100 bytes to buf, like
// {"type":"click","page":"/p/123","ms":1234,"user":"u-04567","dev":"mobile","ts":1767225600123,"ref":"/p/77"},
// and counts it in the truth when it is a click.
func (g *eventGen) next(buf []byte) []byte {
	typ := eventTypes[g.rng.IntN(len(eventTypes))]
	page := g.rng.IntN(Pages)
	ms := g.rng.IntN(2000)
	g.ts += int64(g.rng.IntN(20))
	if typ == "click" {
		g.counts[page].Count++
		g.counts[page].Sum += int64(ms)
	}
	buf = append(buf, `{"type":"`...)
	buf = append(buf, typ...)
	buf = append(buf, `","page":"/p/`...)
	buf = strconv.AppendInt(buf, int64(page), 10)
	buf = append(buf, `","ms":`...)
	buf = strconv.AppendInt(buf, int64(ms), 10)
	buf = append(buf, `,"user":"u-`...)
	u := g.rng.IntN(100000)
	for d := 10000; d > 1 && u < d; d /= 10 {
		buf = append(buf, '0')
	}
	buf = strconv.AppendInt(buf, int64(u), 10)
	buf = append(buf, `","dev":"`...)
	buf = append(buf, devices[g.rng.IntN(len(devices))]...)
	buf = append(buf, `","ts":`...)
	buf = strconv.AppendInt(buf, g.ts, 10)
	buf = append(buf, `,"ref":"/p/`...)
	buf = strconv.AppendInt(buf, int64(g.rng.IntN(Pages)), 10)
	buf = append(buf, `"}`...)
	return buf
}

// addTo adds the clicks this generator wrote to t.
func (g *eventGen) addTo(t Truth) {
	for p, a := range g.counts {
		if a.Count == 0 {
			continue
		}
		k := PageKey(p)
		cur := t[k]
		t[k] = Agg{Count: cur.Count + a.Count, Sum: cur.Sum + a.Sum}
	}
}

// PageKey is the aggregate key of page p.
func PageKey(p int) string { return "/p/" + strconv.Itoa(p) }

// PartitionCounts splits n records over partitions round-robin: record i goes
// to partition i % partitions.
func PartitionCounts(n int64, partitions int32) []int64 {
	out := make([]int64, partitions)
	for p := range out {
		out[p] = n / int64(partitions)
		if int64(p) < n%int64(partitions) {
			out[p]++
		}
	}
	return out
}

// Produced describes a backlog written by ProduceEvents.
type Produced struct {
	Topic string
	// Ends are the end offsets of the partitions (the topic was new, so
	// also their record counts).
	Ends  []int64
	Truth Truth
	Bytes int64
	Took  time.Duration
}

// Records is the number of records produced.
func (p Produced) Records() int64 {
	var n int64
	for _, e := range p.Ends {
		n += e
	}
	return n
}

// ProducerOpts are the kgo options of the backlog producers: large
// uncompressed batches, idempotent (so a retried request does not write a
// record twice and the ground truth stays exact).
func ProducerOpts(brokers string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.MaxBufferedRecords(200_000),
	}
}

// CreateTopic creates topic with the given partitions (replication 1); it
// fails if the topic exists, so that a backlog's offsets start at 0.
func CreateTopic(ctx context.Context, brokers, topic string, partitions int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s with %d partitions: %w", topic, partitions, err)
	}
	return nil
}

// ProduceEvents creates topic with partitions and writes n click-stream
// events round-robin over its partitions, from several producers at once,
// and returns the ground truth of the click job. The end offsets are read
// back from the broker and must match. With inTurn, each producer writes
// its partitions one after the other instead, so that their record
// batches fill to ProducerBatchMaxBytes however many partitions there are
// (round-robin over 1,024 partitions makes batches of 4 to 92 KB).
func ProduceEvents(ctx context.Context, brokers, topic string, partitions int32, n int64, seed uint64, inTurn bool) (Produced, error) {
	if err := CreateTopic(ctx, brokers, topic, partitions); err != nil {
		return Produced{}, err
	}
	counts := PartitionCounts(n, partitions)
	const producers = 4
	start := time.Now()
	gens := make([]*eventGen, partitions)
	var bytes atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, producers)
	for w := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = producePartitions(ctx, brokers, topic, w, producers, counts, seed, gens, &bytes, inTurn)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Produced{}, err
	}
	took := time.Since(start)
	truth := Truth{}
	for _, g := range gens {
		g.addTo(truth)
	}
	if err := checkEnds(ctx, brokers, topic, counts); err != nil {
		return Produced{}, err
	}
	return Produced{Topic: topic, Ends: counts, Truth: truth, Bytes: bytes.Load(), Took: took}, nil
}

// producePartitions writes the events of the partitions p with p % of == w.
func producePartitions(ctx context.Context, brokers, topic string, w, of int, counts []int64, seed uint64, gens []*eventGen, bytes *atomic.Int64, inTurn bool) error {
	cl, err := kgo.NewClient(append(ProducerOpts(brokers), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		return fmt.Errorf("kafka producer: %w", err)
	}
	defer cl.Close()
	var firstErr atomic.Pointer[error]
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			firstErr.CompareAndSwap(nil, &err)
		}
	}
	var mine []int32
	for p := range counts {
		if p%of == w {
			mine = append(mine, int32(p))
			gens[p] = newEventGen(seed, int32(p))
		}
	}
	var total int64
	produce := func(p int32) {
		v := gens[p].next(make([]byte, 0, 112))
		total += int64(len(v))
		cl.Produce(ctx, &kgo.Record{Partition: p, Value: v}, done)
	}
	if inTurn {
		for _, p := range mine {
			for range counts[p] {
				produce(p)
			}
			if e := firstErr.Load(); e != nil {
				return fmt.Errorf("produce to %s: %w", topic, *e)
			}
		}
	} else {
		// Interleave the partitions so that every partition's batches fill at once.
		for i := int64(0); ; i++ {
			wrote := false
			for _, p := range mine {
				if i < counts[p] {
					wrote = true
					produce(p)
				}
			}
			if !wrote {
				break
			}
			if e := firstErr.Load(); e != nil {
				return fmt.Errorf("produce to %s: %w", topic, *e)
			}
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("produce to %s: flush: %w", topic, err)
	}
	if e := firstErr.Load(); e != nil {
		return fmt.Errorf("produce to %s: %w", topic, *e)
	}
	bytes.Add(total)
	return nil
}

// checkEnds fails unless the partitions' end offsets are want.
func checkEnds(ctx context.Context, brokers, topic string, want []int64) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	for p, w := range want {
		o, ok := ends.Lookup(topic, int32(p))
		if !ok || o.Err != nil || o.Offset != w {
			return fmt.Errorf("partition %s/%d ends at %d (%v), want %d records", topic, p, o.Offset, o.Err, w)
		}
	}
	return nil
}
