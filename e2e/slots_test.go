package e2e

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/coordinator"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// infoLogs sends the coordinator's and the workers' logs, from info up,
// to one buffer the test can read.
func infoLogs(opts *clusterOptions) *syncBuffer {
	buf := &syncBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: buf})
	coord, work := opts.coord, opts.worker
	opts.coord = func(c *coordinator.Config) {
		c.Logger = logger
		if coord != nil {
			coord(c)
		}
	}
	opts.worker = func(c *worker.Config) {
		c.Logger = logger
		if work != nil {
			work(c)
		}
	}
	return buf
}

// TestMoreTasksThanSlots: a default-settings job on two workers of one slot
// each, with eight partitions, whose first batch's tasks each take longer
// than the coordinator's heartbeat timeout (3s). The coordinator queues
// what the slots cannot take, the workers keep answering pings while their
// tasks run, and the batch commits with exact counts: no worker leaves and
// no task is re-run.
func TestMoreTasksThanSlots(t *testing.T) {
	const topic, parts = "slots", 8
	const taskTime = 4 * time.Second
	opts := clusterOptions{workers: 2, partitions: parts, topics: []string{topic},
		worker: func(c *worker.Config) {
			c.Slots = 1
			c.BeforeResult = func(task *sluicev1.Task) {
				if task.GetKey().GetBatchId() == 1 {
					time.Sleep(taskTime)
				}
			}
		}}
	logs := infoLogs(&opts)
	tc := newTestCluster(t, opts)
	if taskTime <= 3*time.Second {
		t.Fatalf("tasks of %s are not longer than the heartbeat timeout", taskTime)
	}
	// A worker may dial before the coordinator leads and reconnect: only
	// what the logs say once both are registered counts.
	waitRegistered(t, logs, 2)
	registered := len(logs.String())
	l := newLedger(topic, parts)
	l.produce(t, tc.producer(), 80_000, nil) // 10,000 a partition: ranges too big to be packed
	spec := defaultJob("slots", tc.Brokers, topic)
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets(spec.GetName(), l.ends(), 180*time.Second)
	// Read before the cluster stops: its workers leave then.
	out := logs.String()[registered:]

	if got, want := tc.mergedCounts(spec.GetName()), l.counts(nil); !maps.Equal(got, want) {
		t.Fatalf("counts differ from the ground truth:\n got %v\nwant %v", got, want)
	}
	batches := batchesAsc(t, tc.Client, spec.GetName())
	if n := batches[0].GetMetrics().GetTasks(); n != parts {
		t.Errorf("batch 1 has %d tasks, want %d: more tasks than the %d slots", n, parts, 2)
	}
	for _, b := range batches {
		m := b.GetMetrics()
		if m.GetTaskAttempts() != m.GetTasks()+m.GetSpeculativeTasks() {
			t.Errorf("batch %d: %d attempts for %d tasks and %d speculative copies: a task was re-run",
				b.GetId(), m.GetTaskAttempts(), m.GetTasks(), m.GetSpeculativeTasks())
		}
	}
	for _, bad := range []string{"worker left", "missed heartbeats", "re-running task", "coordinator stream ended"} {
		if strings.Contains(out, bad) {
			t.Errorf("the logs say %q:\n%s", bad, lastLines(out, 40))
		}
	}
	t.Logf("%d records in %d batches; batch 1: %d tasks on 2 slots, %s each, processed in %s",
		sumCounts(l.counts(nil)), len(batches), batches[0].GetMetrics().GetTasks(), taskTime,
		batches[0].GetMetrics().GetProcessingTime().AsDuration().Round(time.Millisecond))
}
