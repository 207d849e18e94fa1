package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluice-stream/sluice/bench"
	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/kafkasrc"
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
	k.watchMemory(workerMemoryBound)

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
	// A backlog above the first batch's initial-rate cap (100,000): batches of
	// several packed tasks, on several workers.
	produce(100)
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

	k.waitOffsets(ends, 2*time.Minute)
	k.checkRetained()
	tc := &testCluster{t: t, Client: c}
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
	t.Logf("1,024 partitions, %d records, kills survived %v (by failpoints %v); %s; worker peak RSS %s",
		records, k.kills, k.fired, batchFigures(batches), k.peaks())
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

	mu   sync.Mutex
	peak map[string]int64 // workers' peak RSS over their restarts, by id
	over string           // the first worker above the memory bound
}

func (pc *procCluster) killer(t *testing.T, c *client.Client, job string, keep int64) *killer {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{pc.etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return &killer{t: t, pc: pc, c: c, etcd: cli, job: job, keep: keep, kills: map[string]int{}, fired: map[string]int{}, peak: map[string]int64{}}
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
	k.checkMemory()
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
	// An armed worker may have killed itself a moment ago.
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
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

// waitOffsets waits until the job's committed offsets equal want, as
// testCluster.waitOffsets does, stopping early if a worker outgrew the
// memory bound.
func (k *killer) waitOffsets(want map[string]int64, timeout time.Duration) {
	k.t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		k.checkMemory()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := k.c.Offsets(ctx, k.job)
		cancel()
		if err != nil {
			continue
		}
		got := map[string]int64{}
		for _, p := range resp.GetPartitions() {
			got[fmt.Sprintf("%s/%d", p.GetTopic(), p.GetPartition())] = p.GetCommitted()
		}
		if equalOffsets(got, want) {
			return
		}
	}
	// How far the job got, then a failure saying where the offsets are and
	// what state the job is in.
	if batches, err := k.c.Batches(context.Background(), k.job, 100_000); err == nil {
		k.t.Logf("job %s after %s: %s; worker peak RSS %s", k.job, timeout, batchFigures(batches), k.peaks())
	}
	(&testCluster{t: k.t, Client: k.c}).waitOffsets(k.job, want, time.Second)
}

// workerMemoryBound is a worker's peak RSS that no test here should come
// near: per the README a worker holds, per slot, a chunk of sink output and
// a 16 MiB producer queue, and prefetches within --consumer-memory (128 MiB)
// plus a few MB per cached consumer.
const workerMemoryBound = 1 << 30

// watchMemory samples the peak RSS (VmHWM) of every worker process every
// 200ms until the test ends. A worker above limit fails the test, and every
// worker is killed at once rather than left to grow on a machine shared
// with other tests; the killer's waits then stop the test.
func (k *killer) watchMemory(limit int64) {
	stop, done := make(chan struct{}), make(chan struct{})
	k.t.Cleanup(func() {
		close(stop)
		<-done
	})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			k.pc.mu.Lock()
			procs := maps.Clone(k.pc.procs)
			k.pc.mu.Unlock()
			for name, p := range procs {
				if name == "infra" || strings.HasPrefix(name, "coordinator-") {
					continue
				}
				rss, err := bench.PeakRSS(p.cmd.Process.Pid)
				if err != nil {
					continue // exited
				}
				k.mu.Lock()
				k.peak[name] = max(k.peak[name], rss)
				first := rss > limit && k.over == ""
				if first {
					k.over = fmt.Sprintf("worker %s (pid %d): peak RSS %d MiB, above %d MiB", name, p.cmd.Process.Pid, rss>>20, limit>>20)
				}
				k.mu.Unlock()
				if first {
					for n, q := range procs {
						if n != "infra" && !strings.HasPrefix(n, "coordinator-") {
							_ = q.cmd.Process.Kill()
						}
					}
				}
			}
		}
	}()
}

// checkMemory stops the test if a worker outgrew the memory bound.
func (k *killer) checkMemory() {
	k.t.Helper()
	k.mu.Lock()
	over := k.over
	k.mu.Unlock()
	if over != "" {
		k.t.Fatalf("%s; all workers were killed to stop the growth (peaks %s)", over, k.peaks())
	}
}

// peaks formats the workers' peak RSS.
func (k *killer) peaks() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(k.peak)) {
		parts = append(parts, fmt.Sprintf("%s %d MiB", name, k.peak[name]>>20))
	}
	return strings.Join(parts, ", ")
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
	q := func(f float64) time.Duration {
		return ds[min(int(f*float64(len(ds))), len(ds)-1)].Round(time.Millisecond)
	}
	return fmt.Sprintf("p50 %s p90 %s max %s", q(0.5), q(0.9), ds[len(ds)-1].Round(time.Millisecond))
}

// TestKafkaSinkExactlyOnce256Partitions is TestKafkaSinkExactlyOnceThroughKills
// on a 256-partition input topic: a Kafka-to-Kafka job (filter + map,
// transactional sink, one transactional id per input partition: 256
// transactions per batch) while a worker, the leading coordinator and
// another worker are killed with SIGKILL as orders are produced. A
// read_committed reader of the output sees every expected record exactly
// once, the job's group offsets equal its committed offsets, and no worker
// outgrows workerMemoryBound.
func TestKafkaSinkExactlyOnce256Partitions(t *testing.T) {
	const in, out, parts, job = "orders-wide", "doubled-wide", 256, "orders-wide-doubled"
	pc := newProcCluster(t, 2)
	createTopic(t, pc.brokers, in, parts)
	createTopic(t, pc.brokers, out, 3)
	pc.startRetainingCoordinator(0, 100_000, "").waitOutput(t, "leading", 30*time.Second)
	pc.startRetainingCoordinator(1, 100_000, "")
	workers := []string{"w1", "w2", "w3"}
	for _, w := range workers {
		pc.startWorker(w, "")
	}
	c := pc.client()
	waitServing(t, c)
	k := pc.killer(t, c, job, 100_000)
	k.watchMemory(workerMemoryBound)
	spec := sinkJob(job, pc.brokers, in, out, sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_UNSPECIFIED)
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	// 12 orders a partition over about 3 seconds, and three kills while
	// they are produced and worked off: a worker, the leader, another
	// worker. Few orders a partition: a batch of this job costs 256
	// transactions whatever its size, and backpressure sizes its batches
	// by the records per second that buys (see the README, Performance):
	// this test is about exactly-once at 256 partitions, not throughput.
	o := newOrders()
	const n, rate = 12 * parts, 1_000
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.produce(t, pc.brokers, in, parts, n, rate)
	}()
	for _, victim := range []string{workers[0], "leader", workers[1]} {
		time.Sleep(2500 * time.Millisecond)
		k.restartExited()
		if victim == "leader" {
			victim = k.leader()
		}
		k.kill(victim)
	}
	<-done
	o.mu.Lock()
	ends := map[string]int64{}
	for i := range parts {
		ends[fmt.Sprintf("%s/%d", in, i)] = int64(o.n/parts + boolInt(i < o.n%parts))
	}
	want := len(o.want)
	o.mu.Unlock()
	k.waitOffsets(ends, 2*time.Minute)
	seen, values := readOutput(t, pc.brokers, out, want, 60*time.Second)
	checkOutput(t, o, seen, values, false)
	checkGroupOffsets(t, pc.brokers, c, job)
	k.checkMemory()
	batches, err := c.Batches(context.Background(), job, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("256 partitions, %d orders, %d written exactly once, kills survived %v; %s; worker peak RSS %s",
		o.n, want, k.kills, batchFigures(batches), k.peaks())
}

// TestSinkProducerGoHeap: a Kafka sink producer's records wait in
// librdkafka's queue (queue.buffering.max.kbytes, 16 MiB by default), not in
// Go: an idle producer holds well under 1 MiB of Go heap. The workers cache
// up to kafkasrc.DefaultSinkCapacity transactional writers (and a job on
// many partitions replaces them task after task), so what each one holds
// is multiplied by dozens and, as garbage, by every task.
func TestSinkProducerGoHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	k, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	const n = 8
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var ps []*kafkasrc.Producer
	for i := range n {
		p, err := kafkasrc.NewProducer(kafkasrc.Cluster{Bootstrap: k.ListenAddrs()[0]},
			map[string]string{"transactional.id": fmt.Sprintf("heap-%d", i), "enable.idempotence": "true", "acks": "all"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	for _, p := range ps {
		p.Close()
	}
	if per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n; per > 1<<20 {
		t.Fatalf("an idle producer holds %.1f MiB of Go heap (%d producers: %d MiB), want under 1 MiB",
			float64(per)/(1<<20), n, (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>20)
	}
}
