package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// procCluster is a Sluice cluster of separate processes: `sluice dev
// --infra-only` (etcd and the broker), coordinators and workers.
type procCluster struct {
	t        *testing.T
	brokers  string
	etcdAddr string
	coords   []string // coordinator addresses
	mu       sync.Mutex
	procs    map[string]*proc
	store    *offsetstore.Store
}

func newProcCluster(t *testing.T, coordinators int) *procCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	pc := &procCluster{t: t, procs: map[string]*proc{}}
	pc.brokers, pc.etcdAddr = freeAddr(t), freeAddr(t)
	pc.procs["infra"] = startProc(t, sluiceBin, "dev", "--infra-only", "--data-dir", t.TempDir(),
		"--kafka-addr", pc.brokers, "--etcd-addr", pc.etcdAddr, "--etcd-peer-addr", freeAddr(t))
	for range coordinators {
		pc.coords = append(pc.coords, freeAddr(t))
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{pc.etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	pc.store = offsetstore.New(cli, offsetstore.Options{})
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("infra not up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return pc
}

// startCoordinator starts coordinator i with optional failpoints.
func (pc *procCluster) startCoordinator(i int, failpoints string) *proc {
	pc.t.Helper()
	cmd := []string{"coordinator", "--etcd-endpoints", pc.etcdAddr, "--grpc-addr", pc.coords[i],
		"--session-ttl", "2s", "--heartbeat-timeout", "3s", "--log-level", "info"}
	p := startProcEnv(pc.t, []string{"SLUICE_FAILPOINTS=" + failpoints}, sluiceBin, cmd...)
	pc.mu.Lock()
	pc.procs[fmt.Sprintf("coordinator-%d", i)] = p
	pc.mu.Unlock()
	return p
}

func (pc *procCluster) startWorker(id, failpoints string) *proc {
	pc.t.Helper()
	p := startProcEnv(pc.t, []string{"SLUICE_FAILPOINTS=" + failpoints}, sluiceBin,
		"worker", "--coordinator", strings.Join(pc.coords, ","), "--id", id, "--log-level", "info")
	pc.mu.Lock()
	pc.procs[id] = p
	pc.mu.Unlock()
	return p
}

func (pc *procCluster) client(addrs ...string) *client.Client {
	pc.t.Helper()
	if len(addrs) == 0 {
		addrs = pc.coords
	}
	c, err := client.Dial(addrs)
	if err != nil {
		pc.t.Fatal(err)
	}
	pc.t.Cleanup(func() { c.Close() })
	return c
}

func startProcEnv(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	old := os.Environ()
	cmd := exec.Command(name, args...)
	cmd.Env = append(old, env...)
	p := &proc{cmd: cmd, out: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	p.done = done
	go func() {
		p.waitErr = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("output of %v:\n%s", args[:min(len(args), 3)], lastLines(p.out.String(), 60))
		}
	})
	return p
}

// waitExit waits for the process to end by itself (a failpoint's kill -9).
func (p *proc) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		// A goroutine dump says where it is stuck.
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		<-p.done
		t.Fatalf("process did not exit within %s:\n%s", timeout, p.out.String())
	}
}

// waitOutput waits until the process printed s.
func (p *proc) waitOutput(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %s:\n%s", s, timeout, lastLines(p.out.String(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stream produces keyed records while the test breaks things.
type stream struct {
	mu     sync.Mutex
	counts map[string]int64
	ends   map[string]int64
	n      int
}

func newStream() *stream { return &stream{counts: map[string]int64{}, ends: map[string]int64{}} }

// produce writes n records to topic with ProduceSync batches of 100 (so the
// ground truth only holds acknowledged records), pacing at about rate per second.
func (s *stream) produce(t *testing.T, brokers, topic string, parts int32, n, rate int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordRetries(100), kgo.RequestTimeoutOverhead(5*time.Second))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	start := time.Now()
	for sent := 0; sent < n; {
		var batch []*kgo.Record
		for i := 0; i < 100 && sent < n; i++ {
			s.mu.Lock()
			idx := s.n
			s.n++
			s.mu.Unlock()
			key := fmt.Sprintf("k%02d", (idx*7+idx/13)%41)
			batch = append(batch, &kgo.Record{Topic: topic, Partition: int32(idx) % parts, Key: []byte(key), Value: []byte("v")})
			sent++
		}
		if err := cl.ProduceSync(context.Background(), batch...).FirstErr(); err != nil {
			t.Errorf("produce: %v", err)
			return
		}
		s.mu.Lock()
		for _, r := range batch {
			s.counts[string(r.Key)]++
			s.ends[fmt.Sprintf("%s/%d", r.Topic, r.Partition)]++
		}
		s.mu.Unlock()
		if rate > 0 {
			if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
}

func createTopic(t *testing.T, brokers, topic string, parts int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := kadm.NewClient(cl).CreateTopic(context.Background(), parts, 1, nil, topic)
		if err == nil || strings.Contains(err.Error(), "TOPIC_ALREADY_EXISTS") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("create topic: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// verifyExact waits until the job committed the stream's end offsets and
// checks that every key was counted exactly once, and that the batches tile
// every partition.
func verifyExact(t *testing.T, c *client.Client, job string, s *stream, timeout time.Duration) []*sluicev1.Batch {
	t.Helper()
	tc := &testCluster{t: t, Client: c}
	s.mu.Lock()
	ends := maps.Clone(s.ends)
	want := maps.Clone(s.counts)
	s.mu.Unlock()
	tc.waitOffsets(job, ends, timeout)
	if got := tc.mergedCounts(job); !maps.Equal(got, want) {
		var lost, dup int64
		for k, n := range want {
			if d := got[k] - n; d < 0 {
				lost -= d
			} else {
				dup += d
			}
		}
		t.Fatalf("counts differ from ground truth: lost %d, duplicated %d\n got %v\nwant %v", lost, dup, got, want)
	}
	start := map[string]int64{}
	for k := range ends {
		start[k] = 0
	}
	return tc.checkRanges(job, start, ends)
}

func chaosJob(brokers, topic string) *sluicev1.JobSpec {
	spec := countJob("chaos-count", brokers, topic)
	spec.BatchInterval = durationpb.New(200 * time.Millisecond)
	spec.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 1500, TaskTimeout: durationpb.New(10 * time.Second)}
	return spec
}

// TestCoordinatorKilledAtEachPoint kills the coordinator with SIGKILL at
// every point of the batch lifecycle, restarts it, and checks that the
// counts are exact, no batch was skipped or committed twice, and a batch that
// was planned at the crash was re-run with the same id and ranges.
func TestCoordinatorKilledAtEachPoint(t *testing.T) {
	for _, point := range []string{"before-plan-log", "after-plan-logged", "after-dispatch", "before-commit", "after-commit"} {
		t.Run(point, func(t *testing.T) {
			const topic = "crash"
			pc := newProcCluster(t, 1)
			createTopic(t, pc.brokers, topic, 4)
			coord := pc.startCoordinator(0, point+":3")
			pc.startWorker("w1", "")
			pc.startWorker("w2", "")
			c := pc.client()
			waitServing(t, c)
			s := newStream()
			// Enough for four batches of at most 1500: the failpoint is at the third.
			s.produce(t, pc.brokers, topic, 4, 6000, 0)
			spec := chaosJob(pc.brokers, topic)
			if _, err := c.Submit(context.Background(), spec); err != nil {
				t.Fatal(err)
			}
			coord.waitExit(t, 30*time.Second)
			if !strings.Contains(coord.out.String(), "failpoint "+point+":3 reached") {
				t.Fatalf("coordinator exited but not at the failpoint:\n%s", lastLines(coord.out.String(), 20))
			}
			// What etcd holds at the crash.
			last, err := pc.store.LastBatch(context.Background(), spec.GetName())
			if err != nil {
				t.Fatal(err)
			}
			atCrash := last.Value
			t.Logf("at the crash: batch %d %v", atCrash.GetId(), atCrash.GetState())

			pc.startCoordinator(0, "")
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.produce(t, pc.brokers, topic, 4, 3000, 3000)
			}()
			wg.Wait()
			batches := verifyExact(t, c, spec.GetName(), s, 60*time.Second)
			if atCrash.GetState() == sluicev1.BatchState_BATCH_STATE_PLANNED {
				b := batches[atCrash.GetId()-1]
				if fmt.Sprint(b.GetRanges()) != fmt.Sprint(atCrash.GetRanges()) {
					t.Errorf("batch %d re-run with ranges %v, planned %v", b.GetId(), b.GetRanges(), atCrash.GetRanges())
				}
			}
		})
	}
}

// TestLeaderFailoverFencing freezes the leading coordinator (SIGSTOP) just
// before a commit, past its lease; the standby takes over, re-runs the batch
// and goes on; when the old leader resumes, its commit is refused.
func TestLeaderFailoverFencing(t *testing.T) {
	const topic = "fence"
	pc := newProcCluster(t, 2)
	createTopic(t, pc.brokers, topic, 4)
	a := pc.startCoordinator(0, "before-commit:3:stop")
	a.waitOutput(t, "leading", 30*time.Second)
	b := pc.startCoordinator(1, "")
	for i := range 3 {
		pc.startWorker(fmt.Sprintf("w%d", i+1), "")
	}
	cb := pc.client(pc.coords[1]) // a frozen coordinator would hang reads
	waitServing(t, cb)
	s := newStream()
	s.produce(t, pc.brokers, topic, 4, 6000, 0)
	spec := chaosJob(pc.brokers, topic)
	if _, err := cb.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	a.waitOutput(t, "failpoint before-commit:3:stop reached", 60*time.Second)
	frozen := time.Now()
	go s.produce(t, pc.brokers, topic, 4, 2000, 2000)

	// The standby leads and commits the frozen batch and more.
	b.waitOutput(t, "leading", 30*time.Second)
	var failover time.Duration
	for deadline := time.Now().Add(60 * time.Second); ; {
		j, err := cb.Job(context.Background(), spec.GetName())
		if err == nil && j.GetLastBatchId() >= 3 && failover == 0 {
			failover = time.Since(frozen)
		}
		if err == nil && j.GetLastBatchId() >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby did not take over: job %v, err %v", j, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("failover: the standby committed the frozen leader's batch %s after the freeze (lease 2s)", failover.Round(time.Millisecond))

	// The old leader wakes up: its commit must not count. The fence refuses
	// it; if its stale etcd connection fails the request first, the commit
	// fails without being applied. Either way the counts below are exact
	// (offsetstore's fence tests cover the refusal itself).
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Or, when the plan's log was in flight at the freeze (collect jobs log
	// it while their tasks run), the old leader gives up before committing.
	a.waitOutput(t, "commit ", 20*time.Second)
	if out := a.out.String(); strings.Contains(out, "commit refused") {
		t.Logf("the old leader's commit was refused by the fence")
	} else if strings.Contains(out, "commit abandoned") {
		t.Logf("the old leader did not commit: %s", lastLines(out, 3))
	} else {
		t.Logf("the old leader's commit failed before reaching etcd: %s", lastLines(out, 3))
	}
	verifyExact(t, cb, spec.GetName(), s, 60*time.Second)
}

// TestWorkerFailureMidTask kills one worker (SIGKILL) and freezes another
// (SIGSTOP) in the middle of a task: their tasks are re-run elsewhere with
// the same ranges, and the frozen worker's late results, after SIGCONT, are
// ignored.
func TestWorkerFailureMidTask(t *testing.T) {
	const topic = "workers"
	pc := newProcCluster(t, 1)
	createTopic(t, pc.brokers, topic, 4)
	pc.startCoordinator(0, "")
	killed := pc.startWorker("w-killed", "mid-task:2:kill")
	frozen := pc.startWorker("w-frozen", "mid-task:2:stop")
	pc.startWorker("w-ok", "")
	c := pc.client()
	waitServing(t, c)
	s := newStream()
	s.produce(t, pc.brokers, topic, 4, 6000, 0)
	spec := chaosJob(pc.brokers, topic)
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	go s.produce(t, pc.brokers, topic, 4, 3000, 1500)
	killed.waitExit(t, 60*time.Second)
	frozen.waitOutput(t, "failpoint mid-task:2:stop reached", 60*time.Second)
	time.Sleep(2 * time.Second)
	verifyExact(t, c, spec.GetName(), s, 60*time.Second)

	// Wake the frozen worker: whatever it sends for its old task is ignored.
	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	s.produce(t, pc.brokers, topic, 4, 1000, 0)
	batches := verifyExact(t, c, spec.GetName(), s, 60*time.Second)
	var retried int32
	for _, b := range batches {
		retried += b.GetMetrics().GetTaskAttempts() - b.GetMetrics().GetTasks()
	}
	if retried < 2 {
		t.Errorf("task attempts beyond one per task = %d, want at least 2 (one per broken worker)", retried)
	}
}
