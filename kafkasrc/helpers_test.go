package kafkasrc

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-stream/sluice/record"
)

// testLogWriter sends log lines to t.Log until the test's cleanup ends it,
// so that a late librdkafka log line never reaches a finished test.
type testLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// testLogger returns a logger writing to t.Log at level Warn, or at the level
// named by $SLUICE_TEST_LOG (e.g. debug).
func testLogger(t testing.TB) hclog.Logger {
	t.Helper()
	w := &testLogWriter{t: t}
	t.Cleanup(func() { // registered first: runs after every other cleanup
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	level := hclog.Warn
	if s := os.Getenv("SLUICE_TEST_LOG"); s != "" {
		level = hclog.LevelFromString(s)
	}
	return hclog.New(&hclog.LoggerOptions{Name: "kafkasrc", Output: w, Level: level})
}

// newTestCluster starts an in-process kfake broker with the given topics,
// each with partitions partitions.
func newTestCluster(t testing.TB, partitions int32, topics ...string) (*kfake.Cluster, Cluster) {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(partitions, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kfake.NewCluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c, Cluster{Bootstrap: strings.Join(c.ListenAddrs(), ",")}
}

// newKgo returns a franz-go client of the cluster, closed at cleanup: the
// ground truth that does not trust the code under test.
func newKgo(t testing.TB, cl Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts = append([]kgo.Opt{
		kgo.SeedBrokers(strings.Split(cl.Bootstrap, ",")...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
	}, opts...)
	k, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	t.Cleanup(k.Close)
	return k
}

// want is the ground truth of one record.
type want struct {
	Offset  int64
	Key     string
	Value   string
	Headers []record.Header
	Time    time.Time
}

func (w want) String() string { return fmt.Sprintf("%d:%s=%s", w.Offset, w.Key, w.Value) }

// produce writes records to topic/partition with kgo and returns them with
// the offsets the broker gave them.
func produce(t testing.TB, k *kgo.Client, topic string, partition int32, rs []*kgo.Record) []want {
	t.Helper()
	for _, r := range rs {
		r.Topic, r.Partition = topic, partition
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := k.ProduceSync(ctx, rs...)
	if err := res.FirstErr(); err != nil {
		t.Fatalf("produce to %s/%d: %v", topic, partition, err)
	}
	out := make([]want, 0, len(res))
	for _, pr := range res {
		r := pr.Record
		w := want{Offset: r.Offset, Key: string(r.Key), Value: string(r.Value), Time: r.Timestamp}
		for _, h := range r.Headers {
			w.Headers = append(w.Headers, record.Header{Key: h.Key, Value: h.Value})
		}
		out = append(out, w)
	}
	return out
}

// keyed returns n records with keys k<i> and values v<i>, i from start.
func keyed(start, n int) []*kgo.Record {
	rs := make([]*kgo.Record, 0, n)
	for i := start; i < start+n; i++ {
		rs = append(rs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)})
	}
	return rs
}

// collect reads r through c and returns what it delivered (copied).
func collect(t testing.TB, ctx context.Context, c *Cache, cl Cluster, r Range) ([]want, ReadStats, error) {
	t.Helper()
	var got []want
	st, err := c.Read(ctx, cl, "sluice-test", r, func(rec *record.Record) error {
		if rec.Topic != r.Topic || rec.Partition != r.Partition {
			return fmt.Errorf("record of %s/%d in a read of %s", rec.Topic, rec.Partition, r)
		}
		w := want{Offset: rec.Offset, Key: string(rec.Key), Value: string(rec.Value), Time: rec.Timestamp}
		for _, h := range rec.Headers {
			w.Headers = append(w.Headers, record.Header{Key: h.Key, Value: append([]byte(nil), h.Value...)})
		}
		got = append(got, w)
		return nil
	})
	return got, st, err
}

// mustCollect is collect with a 30 s deadline that fails the test on error.
func mustCollect(t testing.TB, c *Cache, cl Cluster, r Range) ([]want, ReadStats) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	got, st, err := collect(t, ctx, c, cl, r)
	if err != nil {
		t.Fatalf("Read(%s): %v", r, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("slow Read(%s): %v, %+v", r, d, st)
	}
	return got, st
}

// sameRecords compares offsets, keys, values and headers.
func sameRecords(t testing.TB, what string, got, wantRecs []want) {
	t.Helper()
	if len(got) != len(wantRecs) {
		t.Fatalf("%s: got %d records, want %d\ngot:  %v\nwant: %v", what, len(got), len(wantRecs), abbrev(got), abbrev(wantRecs))
	}
	for i := range got {
		g, w := got[i], wantRecs[i]
		if g.Offset != w.Offset || g.Key != w.Key || g.Value != w.Value || !sameHeaders(g.Headers, w.Headers) {
			t.Fatalf("%s: record %d: got %v %v, want %v %v", what, i, g, g.Headers, w, w.Headers)
		}
	}
}

func sameHeaders(a, b []record.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || string(a[i].Value) != string(b[i].Value) {
			return false
		}
	}
	return true
}

func abbrev(ws []want) string {
	if len(ws) <= 20 {
		return fmt.Sprint(ws)
	}
	return fmt.Sprint(ws[:10], " ... ", ws[len(ws)-10:])
}

// between returns the records of ws with from <= offset < until.
func between(ws []want, from, until int64) []want {
	var out []want
	for _, w := range ws {
		if w.Offset >= from && w.Offset < until {
			out = append(out, w)
		}
	}
	return out
}

// deleteRecords moves the log start offset of topic/partition to offset,
// with a raw DeleteRecords request (kadm is not a dependency).
func deleteRecords(t testing.TB, k *kgo.Client, topic string, partition int32, offset int64) {
	t.Helper()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = partition, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	resp, err := req.RequestWith(context.Background(), k)
	if err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				t.Fatalf("DeleteRecords %s/%d: %v", rt.Topic, rp.Partition, err)
			}
		}
	}
}

// createPartitions raises the partition count of topic to count, with a raw
// CreatePartitions request.
func createPartitions(t testing.TB, k *kgo.Client, topic string, count int32) {
	t.Helper()
	req := kmsg.NewPtrCreatePartitionsRequest()
	rt := kmsg.NewCreatePartitionsRequestTopic()
	rt.Topic, rt.Count = topic, count
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	resp, err := req.RequestWith(context.Background(), k)
	if err != nil {
		t.Fatalf("CreatePartitions: %v", err)
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			t.Fatalf("CreatePartitions %s: %v", rt.Topic, err)
		}
	}
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
