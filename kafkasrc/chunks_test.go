package kafkasrc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// endOffsets sums topic's end offsets over its partitions: the high
// watermarks, or with committed the last stable offsets (an open
// transaction holds them at its first record).
func endOffsets(t testing.TB, cl Cluster, topic string, committed bool) int64 {
	t.Helper()
	k := newKgo(t, cl)
	meta, err := kadm.NewClient(k).Metadata(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrListOffsetsRequest()
	if committed {
		req.IsolationLevel = 1
	}
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range meta.Topics[topic].Partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = p.Partition, -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), k)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				t.Fatalf("list offsets of %s/%d: %v", topic, rp.Partition, err)
			}
			sum += rp.Offset
		}
	}
	return sum
}

// waitEnd waits until endOffsets reaches at least want.
func waitEnd(t testing.TB, cl Cluster, topic string, committed bool, want int64) int64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := endOffsets(t, cl, topic, committed)
		if got >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s end offsets (committed %v) %d, want at least %d", topic, committed, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupOffset reads the group's committed offset of src/0 with franz-go.
func groupOffset(t testing.TB, cl Cluster, group string) int64 {
	t.Helper()
	offs, err := kadm.NewClient(newKgo(t, cl)).FetchOffsets(testCtx(t), group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	o, ok := offs.Lookup("src", 0)
	if !ok {
		return -1
	}
	return o.At
}

// TestTxnWriteChunks writes 20,000 records as 20 chunks into one
// transaction through a producer whose queue holds 500 records: producing
// waits for deliveries instead of failing, the records reach the brokers
// before the commit (read_uncommitted sees them, read_committed does not),
// and the commit makes exactly all of them visible with the group's offset.
// A second attempt at the same range writes nothing.
func TestTxnWriteChunks(t *testing.T) {
	_, cl := newTestCluster(t, 3, "src", "out")
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	task := txnTask(cl, "j", "i1", 7)
	task.Properties = map[string]string{"queue.buffering.max.messages": "500"}
	tw, skipped, err := s.BeginTxn(ctx, task)
	if err != nil || skipped {
		t.Fatalf("BeginTxn = %v, %v", skipped, err)
	}
	defer tw.Close()
	const chunks, per = 20, 1000
	for i := range chunks {
		if err := tw.Write(ctx, messages("out", fmt.Sprintf("c%d", i), per, 200)); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	// Only the last chunk can still be queued.
	if got := waitEnd(t, cl, "out", false, chunks*per-500); got > chunks*per {
		t.Fatalf("high watermarks %d, above the %d records written", got, chunks*per)
	}
	if got := endOffsets(t, cl, "out", true); got != 0 {
		t.Fatalf("last stable offsets %d before the commit, want 0", got)
	}
	if got := groupOffset(t, cl, task.Group); got != -1 {
		t.Fatalf("group offset %d before the commit, want none", got)
	}
	if err := tw.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	got := countRecords(t, cl, "out", chunks*per)
	for i := range chunks {
		if n := got[fmt.Sprintf("c%d", i)]; n != per {
			t.Errorf("chunk %d: %d records committed, want %d", i, n, per)
		}
	}
	if off := groupOffset(t, cl, task.Group); off != 7 {
		t.Errorf("group offset %d, want 7", off)
	}
	hw := endOffsets(t, cl, "out", false)

	again, skipped, err := s.BeginTxn(ctx, task)
	if err != nil || !skipped || again != nil {
		t.Fatalf("BeginTxn of a committed range = %v, %v, %v; want skipped", again, skipped, err)
	}
	if n := endOffsets(t, cl, "out", false); n != hw {
		t.Errorf("the skipped attempt moved the high watermarks from %d to %d", hw, n)
	}
	if txns, _, _ := s.Clients(); txns != 1 {
		t.Errorf("%d writers after a skip, want 1 (released for reuse)", txns)
	}
}

// TestTxnWriteCloseAborts: a task that fails after writing chunks (its
// read failed, it was cancelled) closes its write: the transaction is
// aborted, nothing of it is ever read committed, and the next attempt of
// the range writes and commits with the same writer.
func TestTxnWriteCloseAborts(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out")
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	task := txnTask(cl, "j", "i1", 3)
	tw, _, err := s.BeginTxn(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := tw.Write(ctx, messages("out", "lost", 100, 10)); err != nil {
			t.Fatal(err)
		}
	}
	waitEnd(t, cl, "out", false, 300) // in the log, not only queued
	tw.Close()
	if err := tw.Write(ctx, messages("out", "late", 1, 10)); !errors.Is(err, errTxnNotOpen) {
		t.Errorf("Write after Close = %v, want errTxnNotOpen", err)
	}
	tw.Close() // twice is fine
	tw, skipped, err := s.BeginTxn(ctx, task)
	if err != nil || skipped {
		t.Fatalf("BeginTxn after the abort = %v, %v", skipped, err)
	}
	if err := tw.Write(ctx, messages("out", "kept", 50, 10)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	// 300 aborted records and a marker precede the 50.
	waitEnd(t, cl, "out", true, 352)
	if got := countRecords(t, cl, "out", 50); got["kept"] != 50 || got["lost"] != 0 {
		t.Errorf("committed records by prefix: %v, want kept:50 only", got)
	}
	if txns, _, _ := s.Clients(); txns != 1 {
		t.Errorf("%d writers, want the one writer reused", txns)
	}
}

// TestTxnWriteFencedMidway: a second attempt of the range begins while the
// first is between chunks; the first is fenced and can neither write on
// nor commit, and only the second attempt's records are committed.
func TestTxnWriteFencedMidway(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out")
	zombie, next := NewSinks(testLogger(t)), NewSinks(testLogger(t))
	t.Cleanup(zombie.Close)
	t.Cleanup(next.Close)
	ctx := testCtx(t)
	task := txnTask(cl, "j", "i1", 5)
	old, _, err := zombie.BeginTxn(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Write(ctx, messages("out", "zombie", 100, 10)); err != nil {
		t.Fatal(err)
	}
	waitEnd(t, cl, "out", false, 100)
	cur, skipped, err := next.BeginTxn(ctx, task)
	if err != nil || skipped {
		t.Fatalf("BeginTxn of the second attempt = %v, %v", skipped, err)
	}
	if err := cur.Write(ctx, messages("out", "next", 100, 10)); err != nil {
		t.Fatal(err)
	}
	if err := cur.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	cur.Close()
	err = old.Write(ctx, messages("out", "zombie2", 100, 10))
	if err == nil {
		err = old.Commit(ctx)
	}
	// The broker says "fenced" or "invalid transactional state" depending
	// on timing; either way the attempt fails.
	if err == nil {
		t.Fatal("the fenced attempt committed")
	}
	t.Logf("the fenced attempt: %v", err)
	got := countRecords(t, cl, "out", 100)
	if got["next"] != 100 || got["zombie"]+got["zombie2"] != 0 {
		t.Errorf("committed records by prefix: %v, want next:100 only", got)
	}
}

// TestTxnWriteDeliveryFailure: a record the broker refuses in an early
// chunk fails the write permanently, naming its topic, at a later chunk or
// at the commit; nothing is committed.
func TestTxnWriteDeliveryFailure(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out", "small")
	setTopicConfig(t, newKgo(t, cl), "small", "max.message.bytes", "1000")
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	tw, _, err := s.BeginTxn(ctx, txnTask(cl, "j", "i1", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Close()
	err = tw.Write(ctx, []Message{{Topic: "small", Partition: -1, Value: make([]byte, 5000)}})
	for i := 0; err == nil && i < 1000; i++ {
		err = tw.Write(ctx, messages("out", "after", 10, 10))
	}
	if err == nil {
		err = tw.Commit(ctx)
	}
	if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), "small") {
		t.Fatalf("error %v, want a permanent error naming topic small", err)
	}
	if n, hw := endOffsets(t, cl, "out", true), endOffsets(t, cl, "out", false); n != hw {
		t.Errorf("last stable offsets %d, high watermarks %d: transaction left open after the failure", n, hw)
	}
	if err := tw.Commit(ctx); !errors.Is(err, errTxnNotOpen) {
		t.Errorf("Commit after the failure = %v, want errTxnNotOpen", err)
	}
}

// TestIdemWriteChunks: chunks through an idempotent producer whose queue
// holds 100 records are all delivered; Flush waits for them.
func TestIdemWriteChunks(t *testing.T) {
	_, cl := newTestCluster(t, 2, "out")
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	w, err := s.OpenIdempotent(IdempotentTask{Job: "j", Cluster: cl, Properties: map[string]string{"queue.buffering.max.messages": "100"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 10 {
		if err := w.Write(ctx, messages("out", fmt.Sprintf("c%d", i), 1000, 100)); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := endOffsets(t, cl, "out", false); n != 10000 {
		t.Errorf("high watermarks %d after Flush, want 10000", n)
	}
}

// TestIdemWriteQueueFullCancel: while the brokers hold every produce
// request, a write larger than the producer's queue waits for room; its
// context ends the wait with the context's error.
func TestIdemWriteQueueFullCancel(t *testing.T) {
	c, cl := newTestCluster(t, 1, "out")
	gate, held := make(chan struct{}), make(chan struct{}, 1)
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		select {
		case held <- struct{}{}:
		default:
		}
		c.SleepControl(func() { <-gate })
		return nil, nil, false
	})
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	t.Cleanup(func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	})
	w, err := s.OpenIdempotent(IdempotentTask{Job: "j", Cluster: cl, Properties: map[string]string{"queue.buffering.max.messages": "10"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() { errc <- w.Write(ctx, messages("out", "a", 1000, 10)) }()
	// The write cannot finish while the brokers hold the records: 1,000
	// records do not fit in a queue of 10.
	<-held
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Write = %v, want context.Canceled", err)
	}
	close(gate)
}
