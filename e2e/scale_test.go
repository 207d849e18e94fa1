package e2e

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestThousandPartitionsThroughKills: a default count-by-key job on a
// 1,024-partition topic, run by two coordinators and three workers as
// separate processes, with records produced to every partition before and
// while it runs. During the run the leading coordinator is killed (SIGKILL)
// just after dispatching a batch, every worker is armed to kill itself in
// the middle of its second task, and the test kills the next leader and a
// worker itself; each is restarted. At the end the per-key counts equal the
// ground truth, the committed offsets the end offsets of all 1,024
// partitions, and the batches' ranges tile every partition. The
// coordinators retain every batch, and the test checks that none was pruned.
func TestThousandPartitionsThroughKills(t *testing.T) {
	const topic, parts, job = "wide-kills", 1024, "wide-kills"
	pc := newProcCluster(t, 2)
	createTopic(t, pc.brokers, topic, parts)
	keep := chaosKeepBatches(3 * time.Minute)
	const afterDispatch = "after-dispatch:3:kill"
	// Coordinator 0 leads (it starts alone) and dies just after
	// dispatching its third batch: the batch is planned and running.
	pc.startRetainingCoordinator(0, keep, afterDispatch).waitOutput(t, "leading", 30*time.Second)
	pc.startRetainingCoordinator(1, keep, "")
	// Whichever worker runs a second task dies in the middle of it.
	const midTask = "mid-task:2:kill"
	workers := []string{"w1", "w2", "w3"}
	for _, w := range workers {
		pc.startWorker(w, midTask)
	}
	c := pc.client()
	waitServing(t, c)
	k := pc.killer(t, c, job, keep)

	pr, err := kgo.NewClient(kgo.SeedBrokers(pc.brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond), kgo.RecordRetries(100))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	counts, ends := map[string]int64{}, map[string]int64{}
	seed := 1
	produce := func(perPartition int) {
		t.Helper()
		produceKeyed(t, pr, topic, parts, perPartition*parts, seed, counts, ends)
		seed++
	}
	produce(20)
	if _, err := c.Submit(context.Background(), defaultJob(job, pc.brokers, topic)); err != nil {
		t.Fatalf("submit: %v", err)
	}

	// Rounds of records to every partition, each followed by a committed
	// batch, until both failpoints fired; then the test's own kills.
	for round := 0; k.fired[afterDispatch] == 0 || k.fired[midTask] == 0; round++ {
		if round == 12 {
			t.Fatalf("after %d rounds: failpoints fired %v, want %s and %s", round, k.fired, afterDispatch, midTask)
		}
		produce(8)
		k.progress()
	}
	produce(8)
	k.kill(k.leader())
	produce(8)
	k.progress()
	produce(8)
	k.kill(workers[rand.Intn(len(workers))])
	produce(8)
	k.progress()

	tc := &testCluster{t: t, Client: c}
	tc.waitOffsets(job, ends, 2*time.Minute)
	k.checkRetained()
	if got := tc.mergedCounts(job); !maps.Equal(got, counts) {
		var lost, dup int64
		for key, n := range counts {
			if d := got[key] - n; d < 0 {
				lost -= d
			} else {
				dup += d
			}
		}
		t.Fatalf("counts differ from the ground truth (%d keys, want %d): lost %d, duplicated %d", len(got), len(counts), lost, dup)
	}
	start := map[string]int64{}
	for key := range ends {
		start[key] = 0
	}
	batches := tc.checkRanges(job, start, ends)
	if j, err := c.Job(context.Background(), job); err != nil || j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("job after the kills: %v, %v", j, err)
	}
	var records int64
	for _, n := range counts {
		records += n
	}
	t.Logf("1,024 partitions, %d records, kills survived %v (by failpoints %v); %s", records, k.kills, k.fired, batchFigures(batches))
}

// startRetainingCoordinator starts coordinator i as startCoordinator does,
// retaining keep batches and any number of bytes (as TestChaos does), so
// that the counts can be checked over every batch of the run.
func (pc *procCluster) startRetainingCoordinator(i int, keep int64, failpoints string) *proc {
	pc.t.Helper()
	p := startProcEnv(pc.t, []string{"SLUICE_FAILPOINTS=" + failpoints}, sluiceBin, "coordinator",
		"--etcd-endpoints", pc.etcdAddr, "--grpc-addr", pc.coords[i],
		"--session-ttl", "2s", "--heartbeat-timeout", "3s", "--log-level", "info",
		"--keep-batches", fmt.Sprint(keep), "--keep-bytes", "0")
	pc.mu.Lock()
	pc.procs[fmt.Sprintf("coordinator-%d", i)] = p
	pc.mu.Unlock()
	return p
}

func (pc *procCluster) proc(name string) *proc {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.procs[name]
}

// killer kills and restarts a procCluster's coordinators and workers while
// a job runs, restarting (without failpoints) any that a failpoint killed.
type killer struct {
	t     *testing.T
	pc    *procCluster
	c     *client.Client
	etcd  *clientv3.Client
	job   string
	keep  int64
	last  int64          // the job's last batch id when progress last returned
	kills map[string]int // by process name, failpoints included
	fired map[string]int // failpoints that killed a process, by spec
}

func (pc *procCluster) killer(t *testing.T, c *client.Client, job string, keep int64) *killer {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{pc.etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return &killer{t: t, pc: pc, c: c, etcd: cli, job: job, keep: keep, kills: map[string]int{}, fired: map[string]int{}}
}

// restartExited restarts every coordinator and worker that exited.
func (k *killer) restartExited() {
	k.t.Helper()
	k.pc.mu.Lock()
	var dead []string
	for name, p := range k.pc.procs {
		select {
		case <-p.done:
			dead = append(dead, name)
		default:
		}
	}
	k.pc.mu.Unlock()
	sort.Strings(dead)
	for _, name := range dead {
		k.kills[name]++
		out := k.pc.proc(name).out.String()
		if i := strings.Index(out, "failpoint "); i >= 0 {
			if spec, _, ok := strings.Cut(out[i+len("failpoint "):], " reached"); ok {
				k.fired[spec]++
			}
		}
		k.restart(name)
	}
}

func (k *killer) restart(name string) {
	k.t.Helper()
	var i int
	switch {
	case name == "infra":
		k.t.Fatalf("etcd and the broker exited:\n%s", lastLines(k.pc.proc(name).out.String(), 30))
	case strings.HasPrefix(name, "coordinator-"):
		fmt.Sscanf(name, "coordinator-%d", &i)
		k.pc.startRetainingCoordinator(i, k.keep, "")
	default:
		k.pc.startWorker(name, "")
	}
}

// kill sends SIGKILL to a process, waits for its end and restarts it.
func (k *killer) kill(name string) {
	k.t.Helper()
	p := k.pc.proc(name)
	if err := p.cmd.Process.Kill(); err != nil {
		k.t.Fatalf("kill %s: %v", name, err)
	}
	<-p.done
	k.kills[name]++
	time.Sleep(300 * time.Millisecond)
	k.restart(name)
}

// leader names the leading coordinator's process: the election key with the
// lowest create revision, once the process at its address says it leads (a
// killed leader's key outlives it until its lease expires).
func (k *killer) leader() string {
	k.t.Helper()
	prefix := k.pc.store.ElectionPrefix()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := k.etcd.Get(ctx, prefix, clientv3.WithFirstCreate()...)
		cancel()
		if err == nil && len(resp.Kvs) == 1 {
			for i, addr := range k.pc.coords {
				name := fmt.Sprintf("coordinator-%d", i)
				if addr == string(resp.Kvs[0].Value) && strings.Contains(k.pc.proc(name).out.String(), "leading") {
					return name
				}
			}
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("no leading coordinator within 30s: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// progress restarts whatever exited until the job commits a batch after the
// last one seen.
func (k *killer) progress() {
	k.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		k.restartExited()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		j, err := k.c.Job(ctx, k.job)
		cancel()
		if err == nil && j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			k.t.Fatalf("job %s failed: %s", k.job, j.GetMessage())
		}
		if err == nil && j.GetLastBatchId() > k.last {
			k.last = j.GetLastBatchId()
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("job %s committed nothing after batch %d within 90s: %v %v", k.job, k.last, j, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkRetained fails the test if the coordinators pruned a batch of the
// job: the counts could not be checked over the whole run.
func (k *killer) checkRetained() {
	k.t.Helper()
	res, err := k.c.JobService().GetResults(context.Background(), &sluicev1.GetResultsRequest{Job: k.job, Limit: 1})
	if err != nil {
		k.t.Fatal(err)
	}
	if res.GetPruned() || res.GetOldestRetainedBatchId() != 1 {
		k.t.Fatalf("GetResults: pruned %v, oldest retained batch %d: the run outgrew --keep-batches %d, and the counts could not be checked",
			res.GetPruned(), res.GetOldestRetainedBatchId(), k.keep)
	}
}

// batchFigures sums up committed batches for the log: how many, their
// tasks and attempts, and their processing times (dispatch to the last
// result) and total delays (batch time to commit).
func batchFigures(batches []*sluicev1.Batch) string {
	var tasks, attempts, maxTasks int32
	var in int64
	var proc, total []time.Duration
	for _, b := range batches {
		m := b.GetMetrics()
		tasks += m.GetTasks()
		attempts += m.GetTaskAttempts()
		maxTasks = max(maxTasks, m.GetTasks())
		in += m.GetRecordsIn()
		proc = append(proc, m.GetProcessingTime().AsDuration())
		total = append(total, m.GetTotalDelay().AsDuration())
	}
	return fmt.Sprintf("%d batches, %d records in, %d tasks (at most %d a batch), %d task attempts; processing time %s; total delay %s",
		len(batches), in, tasks, maxTasks, attempts, quantiles(proc), quantiles(total))
}

// quantiles formats the p50, p90 and max of ds.
func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	q := func(f float64) time.Duration { return ds[min(int(f*float64(len(ds))), len(ds)-1)].Round(time.Millisecond) }
	return fmt.Sprintf("p50 %s p90 %s max %s", q(0.5), q(0.9), ds[len(ds)-1].Round(time.Millisecond))
}
