package kafkasrc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestProducer(t *testing.T) {
	_, cl := newTestCluster(t, 3, "out")
	p, err := NewProducer(cl, map[string]string{"acks": "all"}, testLogger(t))
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	t.Cleanup(p.Close)
	ctx := testCtx(t)

	const n = 1000
	want := make([]string, 0, n+10)
	for i := range n {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
		if err := p.Produce(ctx, "out", -1, []byte(k), []byte(v)); err != nil {
			t.Fatalf("Produce %d: %v", i, err)
		}
		want = append(want, k+"="+v)
	}
	for i := range 10 { // explicit partition
		k, v := fmt.Sprintf("p2-%d", i), fmt.Sprintf("x%d", i)
		if err := p.Produce(ctx, "out", 2, []byte(k), []byte(v)); err != nil {
			t.Fatalf("Produce to partition 2: %v", err)
		}
		want = append(want, k+"="+v)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}

	// Read everything back with kgo.
	k := newKgo(t, cl, kgo.ConsumeTopics("out"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []string
	keyPartition := map[string]int32{}
	for len(got) < len(want) {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		fs := k.PollFetches(fctx)
		err := fctx.Err()
		cancel()
		if err != nil {
			t.Fatalf("read back: got %d of %d records: %v", len(got), len(want), err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got = append(got, string(r.Key)+"="+string(r.Value))
			keyPartition[string(r.Key)] = r.Partition
		})
	}
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read back %d records, want %d; first got %v, first want %v", len(got), len(want), got[:5], want[:5])
	}
	for i := range 10 {
		if p := keyPartition[fmt.Sprintf("p2-%d", i)]; p != 2 {
			t.Errorf("record p2-%d in partition %d, want 2", i, p)
		}
	}
	// Keyed records are spread over the partitions by key.
	used := map[int32]bool{}
	for i := range n {
		used[keyPartition[fmt.Sprintf("k%d", i)]] = true
	}
	if len(used) != 3 {
		t.Errorf("keyed records used partitions %v, want all 3", used)
	}

	if err := p.Flush(ctx); err != nil {
		t.Errorf("Flush with nothing to deliver: %v", err)
	}
	p.Close()
	if err := p.Produce(ctx, "out", 0, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Produce after Close = %v, want ErrClosed", err)
	}
	if err := p.Flush(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
}

func TestProducerDeliveryError(t *testing.T) {
	_, cl := newTestCluster(t, 1, "out")
	p, err := NewProducer(cl, map[string]string{"message.timeout.ms": "1000"}, testLogger(t))
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	t.Cleanup(p.Close)
	ctx := testCtx(t)
	// kfake does not create topics on produce: delivery times out.
	if err := p.Produce(ctx, "missing", 0, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("Produce: %v", err)
	}
	err = p.Flush(ctx)
	if err == nil {
		t.Fatal("Flush = nil, want the delivery error")
	}
	t.Logf("delivery error: %v", err)
	if err := p.Flush(ctx); err != nil {
		t.Errorf("second Flush = %v, want nil (the error was reported once)", err)
	}
}

func TestProducerFlushContext(t *testing.T) {
	_, cl := newTestCluster(t, 1, "out")
	p, err := NewProducer(cl, nil, testLogger(t))
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	t.Cleanup(p.Close)
	if err := p.Produce(context.Background(), "missing", 0, nil, []byte("v")); err != nil {
		t.Fatalf("Produce: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := p.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush = %v, want context.DeadlineExceeded", err)
	}
}

func TestNewProducerRefusesProperties(t *testing.T) {
	cl := Cluster{Bootstrap: "127.0.0.1:1"}
	if _, err := NewProducer(cl, map[string]string{"go.delivery.reports": "false"}, nil); !errors.Is(err, ErrReservedProperty) {
		t.Errorf("NewProducer(go.delivery.reports) = %v, want ErrReservedProperty", err)
	}
	cl.Properties = map[string]string{"bootstrap.servers": "x:1"}
	if _, err := NewProducer(cl, nil, nil); !errors.Is(err, ErrReservedProperty) {
		t.Errorf("NewProducer(cluster with bootstrap.servers) = %v, want ErrReservedProperty", err)
	}
}
