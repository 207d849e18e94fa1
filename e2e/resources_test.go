package e2e

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// Client caches of TestClientsReleased, small so that the first cycles
// fill them.
const (
	resAdmins    = 4 // coordinator: one admin client per source client.id
	resConsumers = 4 // per worker
)

// resourceJob is cycle i's job: the same name every time (a job deleted and
// submitted again), a new source client.id (so new Kafka clients), and a
// Kafka sink on one cycle in five, transactional or idempotent.
func resourceJob(i int, brokers, in, out string) *sluicev1.JobSpec {
	spec := &sluicev1.JobSpec{
		Name: "cycle",
		Source: &sluicev1.KafkaSource{
			BootstrapServers: brokers, Topics: []string{in},
			Properties:      map[string]string{"client.id": fmt.Sprintf("cycle-%d", i)},
			StartingOffsets: &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}},
		},
		BatchInterval: durationpb.New(20 * time.Millisecond),
		Aggregate:     &sluicev1.Aggregate{},
	}
	mode := sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL
	switch i % 10 {
	case 7:
		mode = sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT
		fallthrough
	case 2:
		spec.Aggregate = nil
		spec.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
			Topic: out, Mode: mode, TransactionTimeout: durationpb.New(10 * time.Second),
		}}}
	}
	return spec
}

// settled waits until the number of live librdkafka clients has not changed
// for a second, and returns it with the goroutine count then.
func settled(t *testing.T) (clients int64, goroutines int) {
	t.Helper()
	last, since := kafkasrc.LiveClients(), time.Now()
	for deadline := time.Now().Add(60 * time.Second); time.Since(since) < time.Second; {
		if time.Now().After(deadline) {
			t.Fatalf("live librdkafka clients still changing after a minute: %d", last)
		}
		time.Sleep(50 * time.Millisecond)
		if n := kafkasrc.LiveClients(); n != last {
			last, since = n, time.Now()
		}
	}
	return last, runtime.NumGoroutine()
}

// TestClientsReleased runs 1,000 submit/delete cycles of a small job, each
// with a new source client.id and a Kafka sink on some: the librdkafka
// clients (coordinator admin clients, worker consumers, sink producers and
// group clients) and the goroutines do not grow with the cycles. After the
// first 50 cycles every cache is full; after the 1,000th there are no more
// clients than then, and never more than the caches hold.
func TestClientsReleased(t *testing.T) {
	const in, out, cycles, early = "res-in", "res-out", 1000, 50
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: 1, topics: []string{in, out},
		coord:  func(c *coordinator.Config) { c.KafkaAdminClients = resAdmins },
		worker: func(c *worker.Config) { c.ConsumerCacheSize = resConsumers },
	})
	k := tc.producer()
	for i := range 10 {
		if err := k.ProduceSync(context.Background(), &kgo.Record{Topic: in, Value: fmt.Appendf(nil, "%d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	base := kafkasrc.LiveClients()
	var earlyClients int64
	var earlyGoroutines int
	start := time.Now()
	waited := 0
	for i := range cycles {
		spec := resourceJob(i, tc.Brokers, in, out)
		if _, err := tc.Client.Submit(ctx, spec); err != nil {
			t.Fatalf("cycle %d: submit: %v", i, err)
		}
		// A job with a sink runs its first batch (reading, writing to
		// Kafka) before it is deleted; the others may not get that far.
		if spec.GetSink() != nil {
			waitFirstBatch(t, tc, spec.GetName(), i)
			waited++
		}
		if err := tc.Client.Delete(ctx, spec.GetName()); err != nil {
			t.Fatalf("cycle %d: delete: %v", i, err)
		}
		if i+1 == early {
			earlyClients, earlyGoroutines = settled(t)
			t.Logf("after %d cycles: %d live librdkafka clients (%d before), %d goroutines", early, earlyClients, base, earlyGoroutines)
		}
	}
	elapsed := time.Since(start)
	clients, goroutines := settled(t)
	t.Logf("after %d cycles (%d with a batch run, %s): %d live librdkafka clients, %d goroutines", cycles, waited, elapsed.Round(time.Second), clients, goroutines)

	// What the caches may hold: the coordinator's admin clients; per
	// worker, its consumers and, as the job is always the same, one sink's
	// clients (a transactional writer and its group client, or an
	// idempotent producer).
	capacity := base + resAdmins + int64(len(tc.workers))*(resConsumers+2)
	if clients > capacity {
		t.Errorf("%d live librdkafka clients after %d cycles, more than the caches hold (%d)", clients, cycles, capacity)
	}
	const clientSlack, goroutineSlack = 4, 100
	if clients > earlyClients+clientSlack {
		t.Errorf("live librdkafka clients grew from %d after %d cycles to %d after %d", earlyClients, early, clients, cycles)
	}
	if goroutines > earlyGoroutines+goroutineSlack {
		t.Errorf("goroutines grew from %d after %d cycles to %d after %d", earlyGoroutines, early, goroutines, cycles)
	}
}

// waitFirstBatch waits until the job committed a batch.
func waitFirstBatch(t *testing.T, tc *testCluster, job string, cycle int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := tc.Client.Job(context.Background(), job)
		if err == nil && j.GetLastBatchId() >= 1 {
			return
		}
		if err == nil && j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			t.Fatalf("cycle %d: job failed: %s", cycle, j.GetMessage())
		}
		if time.Now().After(deadline) {
			t.Fatalf("cycle %d: no batch committed after 30s (job %v, %v)", cycle, j, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
