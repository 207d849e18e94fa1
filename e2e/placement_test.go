package e2e

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// ranOn records which workers ran each partition's tasks.
type ranOn struct {
	mu  sync.Mutex
	ran map[string]map[int32]map[string]bool // job -> partition -> worker ids
}

func newRanOn() *ranOn { return &ranOn{ran: map[string]map[int32]map[string]bool{}} }

// hook is a worker's BeforeResult that records the task.
func (r *ranOn) hook(id string) func(*sluicev1.Task) {
	return func(task *sluicev1.Task) {
		r.mu.Lock()
		defer r.mu.Unlock()
		job, p := task.GetKey().GetJob(), task.GetRange().GetPartition()
		if r.ran[job] == nil {
			r.ran[job] = map[int32]map[string]bool{}
		}
		if r.ran[job][p] == nil {
			r.ran[job][p] = map[string]bool{}
		}
		r.ran[job][p][id] = true
	}
}

// workers returns the sorted ids of the workers that ran the job's
// partition p.
func (r *ranOn) workers(job string, p int32) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.ran[job][p]))
}

// TestFixedPlacement: partitions 0 and 1 go to the workers labelled "a",
// the others to those labelled "b". With no "a" worker alive the batch
// waits and the job's message says why; once one joins, the batch commits
// with exact counts, and every task ran on a worker with its label.
func TestFixedPlacement(t *testing.T) {
	const topic, parts = "placed", 4
	ran := newRanOn()
	labels := map[string][]string{"w1": {"b"}, "w2": {"b", "zone=eu-1"}, "w3": {"a"}}
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic},
		worker: func(c *worker.Config) {
			c.Labels = labels[c.ID]
			c.BeforeResult = ran.hook(c.ID)
		}})
	l := newLedger(topic, parts)
	l.produce(t, tc.producer(), 2000, nil)
	spec := countJob("fixed", tc.Brokers, topic)
	spec.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED, Fixed: []*sluicev1.FixedPlacement{
		{Topic: topic, WorkerLabel: "b"},
		{Topic: topic, Partitions: []int32{0, 1}, WorkerLabel: "a"},
	}}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	const why = `no live worker has label "a" (placement.fixed for placed/`
	j := waitJob(t, tc.Client, spec.GetName(), 30*time.Second, "message about label a", func(j *sluicev1.Job) bool {
		return strings.Contains(j.GetMessage(), why)
	})
	if j.GetLastBatchId() != 0 || len(ran.workers(spec.GetName(), 0)) != 0 {
		t.Fatalf("batch %d committed, partition 0 ran on %v, while no worker may run partitions 0 and 1",
			j.GetLastBatchId(), ran.workers(spec.GetName(), 0))
	}
	t.Logf("waiting: %s", j.GetMessage())

	tc.startWorker("w3", hclog.NewNullLogger())
	tc.waitOffsets(spec.GetName(), l.ends(), 60*time.Second)
	if got, want := tc.mergedCounts(spec.GetName()), l.counts(nil); !maps.Equal(got, want) {
		t.Fatalf("counts differ from the ground truth:\n got %v\nwant %v", got, want)
	}
	for p := range int32(parts) {
		got := ran.workers(spec.GetName(), p)
		want := "b"
		if p < 2 {
			want = "a"
		}
		for _, id := range got {
			if !slices.Contains(labels[id], want) {
				t.Errorf("partition %d ran on %s, whose labels %v lack %q", p, id, labels[id], want)
			}
		}
		if len(got) == 0 {
			t.Errorf("partition %d ran nowhere", p)
		}
	}
	if j := waitJob(t, tc.Client, spec.GetName(), 10*time.Second, "message cleared", func(j *sluicev1.Job) bool {
		return j.GetMessage() == ""
	}); j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Errorf("job %v", j)
	}
}

// TestBrokersPlacement: kfake's broker is on 127.0.0.1; of three workers
// only w2 says it runs on that host, so every task of a brokers-placed job
// runs on w2. The same topic under consistent placement spreads over the
// workers (the control: w2 is not everyone's preferred worker anyway).
func TestBrokersPlacement(t *testing.T) {
	const topic, parts = "near", 8
	ran := newRanOn()
	hosts := map[string]string{"w1": "elsewhere-1", "w2": "127.0.0.1", "w3": "elsewhere-3"}
	opts := clusterOptions{workers: 3, partitions: parts, topics: []string{topic},
		worker: func(c *worker.Config) {
			c.Host = hosts[c.ID]
			c.Slots = parts // the host's worker never lacks a slot
			c.BeforeResult = ran.hook(c.ID)
		}}
	logs := infoLogs(&opts)
	tc := newTestCluster(t, opts)
	// Placement is among the workers connected when a batch runs.
	waitRegistered(t, logs, 3)
	l := newLedger(topic, parts)
	l.produce(t, tc.producer(), 2000, nil)
	near := countJob("near", tc.Brokers, topic)
	near.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_BROKERS}
	spread := countJob("spread", tc.Brokers, topic)
	for _, spec := range []*sluicev1.JobSpec{near, spread} {
		if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
	}
	for _, spec := range []*sluicev1.JobSpec{near, spread} {
		tc.waitOffsets(spec.GetName(), l.ends(), 60*time.Second)
		if got, want := tc.mergedCounts(spec.GetName()), l.counts(nil); !maps.Equal(got, want) {
			t.Fatalf("%s: counts differ from the ground truth:\n got %v\nwant %v", spec.GetName(), got, want)
		}
	}
	used := map[string]bool{}
	for p := range int32(parts) {
		if got := ran.workers(near.GetName(), p); !slices.Equal(got, []string{"w2"}) {
			t.Errorf("brokers placement ran partition %d on %v, want only w2 (on the leader's host)", p, got)
		}
		for _, id := range ran.workers(spread.GetName(), p) {
			used[id] = true
		}
	}
	if len(used) < 2 {
		t.Errorf("consistent placement ran every partition on %v: the control says nothing", slices.Sorted(maps.Keys(used)))
	}
	t.Logf("consistent placement used %v", slices.Sorted(maps.Keys(used)))
}

// waitRegistered waits until the coordinator has logged n worker
// registrations (infoLogs).
func waitRegistered(t *testing.T, logs *syncBuffer, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(logs.String(), "worker registered") < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d workers registered within 30s:\n%s", n, lastLines(logs.String(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
