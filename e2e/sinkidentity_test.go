package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// sinkRecord is one record of a sink topic as a read_committed reader sees
// it: its source position (the sluice-src header) and its batch's codec.
type sinkRecord struct {
	src         string
	compression uint8
}

// readSink reads topic from the start with read_committed until it has
// want records, failing the test if they do not come within the timeout;
// then it reads on for half a second to catch records beyond want.
func readSink(t *testing.T, brokers, topic string, want int, timeout time.Duration) []sinkRecord {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []sinkRecord
	deadline := time.Now().Add(timeout)
	var extra time.Time
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			rec := sinkRecord{compression: r.Attrs.CompressionType()}
			for _, h := range r.Headers {
				if h.Key == "sluice-src" {
					rec.src = string(h.Value)
				}
			}
			out = append(out, rec)
		})
		switch {
		case len(out) >= want && extra.IsZero():
			extra = time.Now().Add(500 * time.Millisecond)
		case !extra.IsZero() && time.Now().After(extra):
			return out
		case extra.IsZero() && time.Now().After(deadline):
			t.Fatalf("read %s: %d records after %s, want %d", topic, len(out), timeout, want)
		}
	}
}

// timesWritten counts, for every kept order, how many times a
// read_committed reader saw its output; it fails the test on output that
// matches no order.
func timesWritten(t *testing.T, o *orders, recs []sinkRecord) map[int]int {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]int{}
	for _, r := range recs {
		if _, ok := o.want[r.src]; !ok {
			t.Fatalf("output record from %q matches no kept order", r.src)
		}
		seen[r.src]++
	}
	hist := map[int]int{} // times written -> orders
	for src := range o.want {
		hist[seen[src]]++
	}
	return hist
}

// TestKafkaSinkResubmitWritesAgain: a transactional Kafka sink job deleted
// and submitted again under the same name is a new incarnation, with its
// own transactional ids and consumer group: it writes every record again
// (the old job's group offsets used to make it skip every range and write
// nothing).
func TestKafkaSinkResubmitWritesAgain(t *testing.T) {
	const in, out, parts = "again-in", "again-out", 2
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{in, out}})
	o := newOrders()
	o.produce(t, tc.Brokers, in, parts, 2000, 0)
	kept := len(o.want)
	ends := map[string]int64{in + "/0": 1000, in + "/1": 1000}
	spec := sinkJob("again", tc.Brokers, in, out, sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL)
	ctx := context.Background()

	first, err := tc.Client.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets(spec.GetName(), ends, 60*time.Second)
	if hist := timesWritten(t, o, readSink(t, tc.Brokers, out, kept, 30*time.Second)); hist[1] != kept {
		t.Fatalf("first incarnation: orders by times written %v, want all %d once", hist, kept)
	}
	if err := tc.Client.Delete(ctx, spec.GetName()); err != nil {
		t.Fatal(err)
	}
	second, err := tc.Client.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetIncarnation() == "" || first.GetIncarnation() == second.GetIncarnation() {
		t.Fatalf("incarnations %q then %q, want two different ones", first.GetIncarnation(), second.GetIncarnation())
	}
	tc.waitOffsets(spec.GetName(), ends, 60*time.Second)
	if hist := timesWritten(t, o, readSink(t, tc.Brokers, out, 2*kept, 30*time.Second)); hist[2] != kept {
		t.Fatalf("after the resubmit: orders by times written %v, want all %d twice (once per incarnation)", hist, kept)
	}

	// The job's transactions are the new incarnation's, one per source
	// partition.
	txns, err := tc.Client.Transactions(ctx, spec.GetName())
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("sluice:again:%s:", second.GetIncarnation())
	if len(txns) != parts {
		t.Errorf("%d transactions listed, want %d", len(txns), parts)
	}
	for _, tx := range txns {
		if !strings.HasPrefix(tx.GetTransactionalId(), prefix) {
			t.Errorf("transactional id %q, want the prefix %q", tx.GetTransactionalId(), prefix)
		}
	}
}

// TestKafkaSinkUpdatePropertiesTakesEffect: --update of a transactional
// sink's producer properties reaches the producers: records written after
// the update are gzip-compressed, those before it are not.
func TestKafkaSinkUpdatePropertiesTakesEffect(t *testing.T) {
	const in, out, parts = "upd-in", "upd-out", 2
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{in, out}})
	o := newOrders()
	spec := sinkJob("upd", tc.Brokers, in, out, sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL)
	spec.Sink.GetKafka().Properties = map[string]string{"compression.type": "none"}
	ctx := context.Background()
	if _, err := tc.Client.Submit(ctx, spec); err != nil {
		t.Fatal(err)
	}
	o.produce(t, tc.Brokers, in, parts, 1000, 0)
	tc.waitOffsets(spec.GetName(), map[string]int64{in + "/0": 500, in + "/1": 500}, 60*time.Second)
	spec.Sink.GetKafka().Properties = map[string]string{"compression.type": "gzip"}
	if _, err := tc.Client.Update(ctx, spec); err != nil {
		t.Fatal(err)
	}
	o.produce(t, tc.Brokers, in, parts, 1000, 0)
	tc.waitOffsets(spec.GetName(), map[string]int64{in + "/0": 1000, in + "/1": 1000}, 60*time.Second)

	recs := readSink(t, tc.Brokers, out, len(o.want), 30*time.Second)
	if hist := timesWritten(t, o, recs); hist[1] != len(o.want) {
		t.Fatalf("orders by times written %v, want all %d once", hist, len(o.want))
	}
	// codec by phase: before the update (source offsets below 500) and after.
	codecs := map[string]map[uint8]int{"before": {}, "after": {}}
	for _, r := range recs {
		var topic string
		var p, off int
		if _, err := fmt.Sscanf(strings.ReplaceAll(r.src, "/", " "), "%s %d %d", &topic, &p, &off); err != nil {
			t.Fatalf("sluice-src %q: %v", r.src, err)
		}
		phase := "after"
		if off < 500 {
			phase = "before"
		}
		codecs[phase][r.compression]++
	}
	const none, gzip = 0, 1
	if len(codecs["before"]) != 1 || codecs["before"][none] == 0 || len(codecs["after"]) != 1 || codecs["after"][gzip] == 0 {
		t.Errorf("records by compression codec (0 none, 1 gzip): %v, want before: none only, after: gzip only", codecs)
	}
}
