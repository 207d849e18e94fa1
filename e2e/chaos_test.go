package e2e

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"sync"
	"testing"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestChaos runs an etcd and a broker (`sluice dev --infra-only`), two
// coordinators and three workers as separate processes, produces a known
// stream, and every few seconds kills a random coordinator or worker with
// SIGKILL and restarts it. At the end the committed per-key counts must equal
// the ground truth and the offsets the end offsets: nothing lost, nothing
// counted twice. CHAOS_DURATION sets how long the chaos lasts (default 15s;
// scripts/chaos.sh runs it longer).
//
// The counts are checked over every batch of the run, so the coordinators
// retain them all (--keep-batches sized for the run, --keep-bytes 0) and the
// check asserts that GetResults pruned nothing: a run too long for the
// retention fails saying so, never by a wrong count.
func TestChaos(t *testing.T) {
	duration := 15 * time.Second
	if d := os.Getenv("CHAOS_DURATION"); d != "" {
		v, err := time.ParseDuration(d)
		if err != nil {
			t.Fatalf("CHAOS_DURATION: %v", err)
		}
		duration = v
	}
	const topic, parts = "chaos", 6
	pc := newProcCluster(t, 2)
	createTopic(t, pc.brokers, topic, parts)
	// At most one batch per 200ms tick, over the chaos and the drain after it.
	keep := chaosKeepBatches(duration + 3*time.Minute)
	startCoordinator := func(i int) {
		pc.t.Helper()
		p := startProcEnv(pc.t, nil, sluiceBin, "coordinator", "--etcd-endpoints", pc.etcdAddr, "--grpc-addr", pc.coords[i],
			"--session-ttl", "2s", "--heartbeat-timeout", "3s", "--log-level", "info",
			"--keep-batches", fmt.Sprint(keep), "--keep-bytes", "0")
		pc.mu.Lock()
		pc.procs[fmt.Sprintf("coordinator-%d", i)] = p
		pc.mu.Unlock()
	}
	startCoordinator(0)
	startCoordinator(1)
	workers := []string{"w1", "w2", "w3"}
	for _, w := range workers {
		pc.startWorker(w, "")
	}
	c := pc.client()
	waitServing(t, c)
	spec := chaosJob(pc.brokers, topic)
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}

	s := newStream()
	rate := 2000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.produce(t, pc.brokers, topic, parts, int(duration.Seconds())*rate, rate)
	}()

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	kills := map[string]int{}
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(1500+rng.Intn(1500)) * time.Millisecond)
		victim := rng.Intn(len(pc.coords) + len(workers))
		var name string
		if victim < len(pc.coords) {
			name = fmt.Sprintf("coordinator-%d", victim)
		} else {
			name = workers[victim-len(pc.coords)]
		}
		pc.mu.Lock()
		p := pc.procs[name]
		pc.mu.Unlock()
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatalf("kill %s: %v", name, err)
		}
		<-p.done
		kills[name]++
		time.Sleep(time.Duration(200+rng.Intn(800)) * time.Millisecond)
		if victim < len(pc.coords) {
			startCoordinator(victim)
		} else {
			pc.startWorker(name, "")
		}
	}
	wg.Wait()
	var total int
	for _, n := range kills {
		total += n
	}
	// Wait for the end offsets, check that every batch is retained, then
	// the exact counts and the tiling of the ranges (verifyExact).
	s.mu.Lock()
	ends := maps.Clone(s.ends)
	s.mu.Unlock()
	(&testCluster{t: t, Client: c}).waitOffsets(spec.GetName(), ends, 120*time.Second)
	res, err := c.JobService().GetResults(context.Background(), &sluicev1.GetResultsRequest{Job: spec.GetName(), Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetPruned() || res.GetOldestRetainedBatchId() != 1 {
		t.Fatalf("GetResults: pruned %v, oldest retained batch %d: the run outgrew --keep-batches %d, and the counts could not be checked",
			res.GetPruned(), res.GetOldestRetainedBatchId(), keep)
	}
	batches := verifyExact(t, c, spec.GetName(), s, 120*time.Second)
	var in int64
	var attempts, tasks int32
	for _, b := range batches {
		in += b.GetMetrics().GetRecordsIn()
		attempts += b.GetMetrics().GetTaskAttempts()
		tasks += b.GetMetrics().GetTasks()
	}
	j, err := c.Job(context.Background(), spec.GetName())
	if err != nil || j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("job after chaos: %v, %v", j, err)
	}
	fmt.Printf("chaos: %s, kills survived %d %v, records %d, batches %d (all retained, none pruned), task attempts %d for %d tasks, lost 0, duplicated 0\n",
		duration, total, kills, in, len(batches), attempts, tasks)
}

// chaosKeepBatches is a retention that holds every batch of a chaos run of
// this length (chaosJob: at most one batch per 200ms tick), with room to spare.
func chaosKeepBatches(run time.Duration) int64 {
	return 2*int64(run/(200*time.Millisecond)) + 1000
}
