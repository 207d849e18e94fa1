package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// speculated sums the speculative copies of a job's batches.
func speculated(batches []*sluicev1.Batch) (n int32) {
	for _, b := range batches {
		n += b.GetMetrics().GetSpeculativeTasks()
	}
	return n
}

// TestSpeculationRescuesASlowWorker: one of three in-process workers (the
// first to finish a task) holds every result for minutes. With default
// settings its tasks are copied to the other workers once they run three
// times longer than the batch's median, and the job commits through the
// copies with exact counts: far sooner than the slow worker would answer,
// so only the copies can have made it commit.
func TestSpeculationRescuesASlowWorker(t *testing.T) {
	const topic, parts = "stragglers", 8
	release := make(chan struct{})
	var slowOnce sync.Once
	var slow string
	opts := clusterOptions{workers: 3, partitions: parts, topics: []string{topic},
		worker: func(c *worker.Config) {
			id := c.ID
			c.BeforeResult = func(task *sluicev1.Task) {
				slowOnce.Do(func() { slow = id })
				if id != slow || task.GetSpeculative() {
					return
				}
				select { // deaf to cancels: a worker slow to report
				case <-release:
				case <-time.After(5 * time.Minute):
				}
			}
		}}
	logs := infoLogs(&opts)
	tc := newTestCluster(t, opts)
	t.Cleanup(func() { close(release) }) // before the workers stop
	l := newLedger(topic, parts)
	l.produce(t, tc.producer(), 4000, nil)
	spec := defaultJob("speculate", tc.Brokers, topic)
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets(spec.GetName(), l.ends(), 90*time.Second)
	if got, want := tc.mergedCounts(spec.GetName()), l.counts(nil); !maps.Equal(got, want) {
		t.Fatalf("counts differ from the ground truth:\n got %v\nwant %v", got, want)
	}
	batches := batchesAsc(t, tc.Client, spec.GetName())
	if n := speculated(batches); n < 1 {
		t.Fatalf("no speculative copy in %d batches, yet the slow worker never reported", len(batches))
	}
	if out := logs.String(); !strings.Contains(out, "speculative copy finished first") {
		t.Errorf("no speculative copy finished first:\n%s", lastLines(out, 40))
	}
	t.Logf("%d records, %d batches, %d speculative copies", sumCounts(l.counts(nil)), len(batches), speculated(batches))
}

// TestSpeculationFencesAFrozenWorker: a worker process of one slot is
// frozen (SIGSTOP) inside a Kafka sink transaction, its output produced
// and not committed. Only a speculative copy can finish the batch in time:
// the coordinator's heartbeat timeout and the task timeout are a minute
// (its gRPC keepalive would drop the frozen worker after some 10s). The
// copy runs on another worker with the same transactional id, whose
// InitTransactions fences the frozen one and aborts its transaction. After
// SIGCONT the frozen worker cannot commit, and a read_committed reader of
// the output sees every record exactly once.
//
// The worker runs batch 1's four tasks one after the other and freezes in
// the third, so that half of the batch has finished (what speculation
// waits for): the broker here (kfake) holds back every committed-offset
// read of the job's group while one transaction with offsets is open, so
// no task started after the freeze can finish before the copy's fencing.
func TestSpeculationFencesAFrozenWorker(t *testing.T) {
	const in, out, parts = "spec-in", "spec-out", 4
	pc := newProcCluster(t, 1)
	createTopic(t, pc.brokers, in, parts)
	createTopic(t, pc.brokers, out, 2)
	coord := startProcEnv(t, nil, sluiceBin, "coordinator", "--etcd-endpoints", pc.etcdAddr, "--grpc-addr", pc.coords[0],
		"--session-ttl", "2s", "--heartbeat-timeout", "60s", "--log-level", "info")
	frozen := startProcEnv(t, []string{"SLUICE_FAILPOINTS=mid-txn:3:stop"}, sluiceBin,
		"worker", "--coordinator", pc.coords[0], "--id", "frozen", "--slots", "1", "--log-level", "info")
	c := pc.client()
	waitServing(t, c)
	o := newOrders()
	o.produce(t, pc.brokers, in, parts, 4000, 0)
	spec := sinkJob("speculate-txn", pc.brokers, in, out, sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL)
	spec.Limits.TaskTimeout = durationpb.New(time.Minute)
	spec.Sink.GetKafka().TransactionTimeout = durationpb.New(time.Minute)
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	frozen.waitOutput(t, "failpoint mid-txn:3:stop reached", 60*time.Second)
	startProcEnv(t, nil, sluiceBin, "worker", "--coordinator", pc.coords[0], "--id", "healthy", "--log-level", "info")

	tc := &testCluster{t: t, Client: c}
	ends := func() map[string]int64 {
		o.mu.Lock()
		defer o.mu.Unlock()
		m := map[string]int64{}
		for i := range parts {
			m[fmt.Sprintf("%s/%d", in, i)] = int64(o.n/parts + boolInt(i < o.n%parts))
		}
		return m
	}
	// Well within the minute after which the frozen worker would be
	// dropped or its task timed out.
	tc.waitOffsets(spec.GetName(), ends(), 40*time.Second)
	if n := speculated(batchesAsc(t, c, spec.GetName())); n < 1 {
		t.Fatalf("the batch committed without a speculative copy:\n%s", lastLines(coord.out.String(), 30))
	}
	if !strings.Contains(coord.out.String(), "speculative copy finished first") {
		t.Errorf("the coordinator did not log the copy finishing first:\n%s", lastLines(coord.out.String(), 30))
	}

	// Thawed, the frozen worker's transaction cannot commit.
	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	frozen.waitOutput(t, "task failed: worker_id=frozen job=speculate-txn", 30*time.Second)
	o.produce(t, pc.brokers, in, parts, 1000, 0)
	tc.waitOffsets(spec.GetName(), ends(), 60*time.Second)
	o.mu.Lock()
	want := len(o.want)
	o.mu.Unlock()
	seen, values := readOutput(t, pc.brokers, out, want, 60*time.Second)
	checkOutput(t, o, seen, values, false)
	checkGroupOffsets(t, pc.brokers, c, spec.GetName())
	t.Logf("%d orders, %d written exactly once; %d speculative copies", o.n, want, speculated(batchesAsc(t, c, spec.GetName())))
}
