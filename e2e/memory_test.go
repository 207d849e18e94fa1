package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// waitFailed waits until the job is FAILED and returns its message.
func (tc *testCluster) waitFailed(job string, timeout time.Duration) string {
	tc.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j, err := tc.Client.Job(context.Background(), job)
		if err == nil && j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			return j.GetMessage()
		}
		if time.Now().After(deadline) {
			tc.t.Fatalf("job %s is %v after %v (message %q, error %v), want FAILED", job, j.GetState(), timeout, j.GetMessage(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCollectOutputCapFailsJob: a collect job without aggregate whose task
// output passes limits.max_task_output_bytes fails at once, with a message
// naming the limit, the record and what to do, and commits nothing; a
// count job on the same cluster keeps committing exact counts.
func TestCollectOutputCapFailsJob(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: 1, topics: []string{"wide", "steady"}})
	pr := tc.producer()
	counts, ends := map[string]int64{}, map[string]int64{}
	produceKeyed(t, pr, "steady", 1, 1000, 1, counts, ends)
	if _, err := tc.Client.Submit(context.Background(), countJob("steady", tc.Brokers, "steady")); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets("steady", ends, 30*time.Second)

	// 3,000 records of 1 KiB: about 3 MiB of output, against 1 MiB.
	value := strings.Repeat("x", 1024)
	var rs []*kgo.Record
	for range 3000 {
		rs = append(rs, &kgo.Record{Topic: "wide", Value: []byte(value)})
	}
	if err := pr.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	spec := countJob("wide", tc.Brokers, "wide")
	spec.Aggregate = nil
	spec.Limits = &sluicev1.Limits{MaxTaskOutputBytes: 1 << 20}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	msg := tc.waitFailed("wide", 60*time.Second)
	for _, s := range []string{"exceeds limits.max_task_output_bytes 1048576", "topic wide partition 0 at offset", "lower limits.max_records_per_batch", "aggregate"} {
		if !strings.Contains(msg, s) {
			t.Errorf("job message %q does not say %q", msg, s)
		}
	}
	resp, err := tc.Client.Offsets(context.Background(), "wide")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.GetPartitions() {
		if p.GetCommitted() > 0 {
			t.Errorf("the failed job committed %s/%d up to %d", p.GetTopic(), p.GetPartition(), p.GetCommitted())
		}
	}

	produceKeyed(t, pr, "steady", 1, 1000, 2, counts, ends)
	tc.waitOffsets("steady", ends, 30*time.Second)
	if got := tc.mergedCounts("steady"); !maps.Equal(got, counts) {
		t.Fatalf("steady counts differ from the ground truth:\n got %v\nwant %v", got, counts)
	}
	t.Logf("wide failed with: %s", msg)
}

// commitHold holds the first transactional commit of a test cluster in its
// BeforeCommit hook until released, and says which worker holds it.
type commitHold struct {
	once    sync.Once
	held    chan struct{}
	release chan struct{}
	worker  string
}

func newCommitHold() *commitHold {
	return &commitHold{held: make(chan struct{}), release: make(chan struct{})}
}

func (h *commitHold) configure(c *worker.Config) {
	id := c.ID
	c.BeforeCommit = func(*sluicev1.Task) {
		first := false
		h.once.Do(func() {
			first = true
			h.worker = id
			close(h.held)
		})
		if first {
			<-h.release
		}
	}
}

// countOutput reads topic until it has want records (or 30 s pass), with
// read_committed or not, and counts them by sluice-src.
func countOutput(t *testing.T, brokers, topic string, committed bool, want int) map[string]int {
	t.Helper()
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(iso),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen, total := map[string]int{}, 0
	for total < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			total++
			for _, h := range r.Headers {
				if h.Key == "sluice-src" {
					seen[string(h.Value)]++
				}
			}
		})
	}
	return seen
}

// stableEnd sums topic's last stable offsets: what read_committed readers
// may read.
func stableEnd(t *testing.T, brokers, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).ListCommittedOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	offs.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	return sum
}

// TestKafkaSinkChunkedExactlyOnce: a transactional Kafka-sink job whose one
// task writes 30,000 records (many chunks) produces them into its open
// transaction: while the commit is held, read_uncommitted readers see all
// of them and read_committed readers none. Its worker then stops, the
// transaction is aborted, the task runs again on the other worker, and
// read_committed readers see every record exactly once.
func TestKafkaSinkChunkedExactlyOnce(t *testing.T) {
	const n = 30000
	hold := newCommitHold()
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: 1, topics: []string{"bulk-in", "bulk-out"}, worker: hold.configure})
	pr := tc.producer()
	for i := 0; i < n; i += 1000 {
		var rs []*kgo.Record
		for j := i; j < i+1000; j++ {
			rs = append(rs, &kgo.Record{Topic: "bulk-in", Value: fmt.Appendf(nil, "%08d-%s", j, strings.Repeat("v", 190))})
		}
		if err := pr.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	spec := &sluicev1.JobSpec{
		Name: "bulk",
		Source: &sluicev1.KafkaSource{
			BootstrapServers: tc.Brokers, Topics: []string{"bulk-in"},
			StartingOffsets: &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}},
		},
		BatchInterval: durationpb.New(200 * time.Millisecond),
		Steps:         []*sluicev1.Step{{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{Value: "value + '!'"}}}},
		Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
			Topic: "bulk-out", Mode: sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL, TransactionTimeout: durationpb.New(time.Minute),
		}}},
		// One task of the whole backlog.
		Limits: &sluicev1.Limits{InitialRate: 10_000_000, TaskTimeout: durationpb.New(time.Minute), SpeculationMultiplier: -1},
	}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hold.held:
	case <-time.After(60 * time.Second):
		t.Fatal("no task reached its commit in 60 s")
	}
	uncommitted := countOutput(t, tc.Brokers, "bulk-out", false, n)
	if len(uncommitted) != n {
		t.Fatalf("read_uncommitted sees %d of the %d records of the open transaction", len(uncommitted), n)
	}
	if end := stableEnd(t, tc.Brokers, "bulk-out"); end != 0 {
		t.Fatalf("last stable offset %d while the transaction is open, want 0", end)
	}
	// The worker stops: its task's context ends before its commit.
	tc.workers[hold.worker]()
	close(hold.release)

	tc.waitOffsets("bulk", map[string]int64{"bulk-in/0": n}, 90*time.Second)
	seen := countOutput(t, tc.Brokers, "bulk-out", true, n)
	dups := 0
	for i := range n {
		switch c := seen[fmt.Sprintf("bulk-in/0/%d", i)]; {
		case c == 0:
			t.Fatalf("source offset %d: not in the committed output", i)
		case c > 1:
			dups++
		}
	}
	if dups > 0 || len(seen) != n {
		t.Fatalf("committed output: %d sources (want %d), %d duplicated", len(seen), n, dups)
	}
	checkGroupOffsets(t, tc.Brokers, tc.Client, "bulk")
	// The aborted attempt's records stay in the log, invisible to
	// read_committed readers.
	if end := stableEnd(t, tc.Brokers, "bulk-out"); end < 2*n {
		t.Errorf("last stable offset %d, want at least %d (both attempts' records)", end, 2*n)
	}
	t.Logf("worker %s held the first attempt; %d records committed once", hold.worker, n)
}
