package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/jobspec"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// orders writes JSON orders and remembers, by source position, the output
// record the sink job must write for each order it keeps.
type orders struct {
	mu   sync.Mutex
	want map[string]string // "topic/partition/offset" -> expected output value
	n    int
}

func newOrders() *orders { return &orders{want: map[string]string{}} }

// produce writes n orders; amounts below 10 are filtered out by the job.
func (o *orders) produce(t *testing.T, brokers, topic string, parts int32, n, rate int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RecordRetries(100))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	rng := rand.New(rand.NewSource(int64(n)))
	start := time.Now()
	for sent := 0; sent < n; {
		var batch []*kgo.Record
		for i := 0; i < 100 && sent < n; i++ {
			o.mu.Lock()
			idx := o.n
			o.n++
			o.mu.Unlock()
			amount := rng.Intn(100)
			batch = append(batch, &kgo.Record{Topic: topic, Partition: int32(idx) % parts,
				Key: fmt.Appendf(nil, "c%d", idx%17), Value: fmt.Appendf(nil, `{"n":%d,"amount":%d}`, idx, amount)})
			sent++
		}
		res := cl.ProduceSync(context.Background(), batch...)
		if err := res.FirstErr(); err != nil {
			t.Errorf("produce: %v", err)
			return
		}
		o.mu.Lock()
		for _, r := range res {
			var n, amount int
			fmt.Sscanf(string(r.Record.Value), `{"n":%d,"amount":%d}`, &n, &amount)
			if amount >= 10 {
				o.want[fmt.Sprintf("%s/%d/%d", r.Record.Topic, r.Record.Partition, r.Record.Offset)] = fmt.Sprint(amount * 2)
			}
		}
		o.mu.Unlock()
		if rate > 0 {
			if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
}

func sinkJob(name, brokers, in, out string, mode sluicev1.KafkaSinkMode) *sluicev1.JobSpec {
	return &sluicev1.JobSpec{
		Name: name,
		Source: &sluicev1.KafkaSource{
			BootstrapServers: brokers, Topics: []string{in},
			StartingOffsets: &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}},
		},
		BatchInterval: durationpb.New(200 * time.Millisecond),
		Steps: []*sluicev1.Step{
			{Kind: &sluicev1.Step_Filter{Filter: "json.amount >= 10"}},
			{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{Key: `"customer-" + key`, Value: "json.amount * 2.0"}}},
		},
		Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
			Topic: out, Mode: mode, TransactionTimeout: durationpb.New(10 * time.Second),
		}}},
		Limits: &sluicev1.Limits{MaxRecordsPerBatch: 1500, TaskTimeout: durationpb.New(10 * time.Second)},
	}
}

// readOutput reads the output topic with read_committed until it has seen
// at least want records and then stays quiet for a second; it returns the
// number of times each sluice-src was seen and the values.
func readOutput(t *testing.T, brokers, topic string, want int, timeout time.Duration) (map[string]int, map[string]string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen, values := map[string]int{}, map[string]string{}
	total := 0
	deadline := time.Now().Add(timeout)
	quietUntil := time.Time{}
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			total++
			var src string
			for _, h := range r.Headers {
				if h.Key == "sluice-src" {
					src = string(h.Value)
				}
			}
			seen[src]++
			values[src] = string(r.Value)
			quietUntil = time.Time{}
		})
		if total >= want {
			if quietUntil.IsZero() {
				quietUntil = time.Now().Add(time.Second)
			} else if time.Now().After(quietUntil) {
				break
			}
		}
	}
	return seen, values
}

// checkOutput compares what a read_committed reader saw with the ground
// truth: every kept order exactly once (or, with dedup, at least once), with
// the mapped value.
func checkOutput(t *testing.T, o *orders, seen map[string]int, values map[string]string, dedup bool) (dups int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	var missing, wrong int
	for src, v := range o.want {
		switch n := seen[src]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
		if seen[src] > 0 && values[src] != v {
			wrong++
		}
	}
	extra := 0
	for src := range seen {
		if _, ok := o.want[src]; !ok {
			extra++
		}
	}
	if missing > 0 || wrong > 0 || extra > 0 || (!dedup && dups > 0) {
		t.Fatalf("output vs ground truth (%d records): missing %d, duplicated %d, wrong value %d, unexpected %d", len(o.want), missing, dups, wrong, extra)
	}
	return dups
}

// stopAbortsTransactions checks that job has an ongoing transaction (of
// ids starting with prefix, which every listed id must), stops it, and
// waits until none is ongoing.
func stopAbortsTransactions(t *testing.T, c *client.Client, job, prefix string) {
	t.Helper()
	ongoing := func() []string {
		txns, err := c.Transactions(context.Background(), job)
		if err != nil {
			t.Fatalf("list transactions: %v", err)
		}
		var ids []string
		for _, tx := range txns {
			if !strings.HasPrefix(tx.GetTransactionalId(), prefix) {
				t.Errorf("listed %s, not an id of the job (%s...)", tx.GetTransactionalId(), prefix)
			}
			if tx.GetState() == "Ongoing" {
				ids = append(ids, tx.GetTransactionalId())
			}
		}
		return ids
	}
	if ids := ongoing(); len(ids) == 0 {
		t.Fatalf("no ongoing transaction while the worker is frozen mid-transaction")
	}
	if _, err := c.Stop(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(ongoing()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("transactions still open 30s after stop: %v", ongoing())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// killRandomly kills -9 a random coordinator or worker (one of workers)
// every one to two seconds for d, restarting each 300 ms later, and
// returns how many it killed.
func (pc *procCluster) killRandomly(workers []string, d time.Duration) int {
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	kills := 0
	for end := time.Now().Add(d); time.Now().Before(end); kills++ {
		time.Sleep(time.Duration(1000+rng.Intn(1000)) * time.Millisecond)
		victim := rng.Intn(len(pc.coords) + len(workers))
		name := fmt.Sprintf("coordinator-%d", victim)
		if victim >= len(pc.coords) {
			name = workers[victim-len(pc.coords)]
		}
		p := pc.proc(name)
		_ = p.cmd.Process.Kill()
		<-p.done
		time.Sleep(300 * time.Millisecond)
		if victim < len(pc.coords) {
			pc.startCoordinator(victim, "")
		} else {
			pc.startWorker(name, "")
		}
	}
	return kills
}

// checkGroupOffsets reads the job's consumer group with a standard client
// and compares it with the committed offsets.
func checkGroupOffsets(t *testing.T, brokers string, c *client.Client, job string) {
	t.Helper()
	resp, err := c.Offsets(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	j, err := c.Job(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	group := j.GetKafkaGroup()
	if group == "" {
		group = "sluice-" + job // a job without an incarnation
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
		mismatch := ""
		if err != nil {
			mismatch = err.Error()
		} else {
			for _, p := range resp.GetPartitions() {
				o, ok := offs.Lookup(p.GetTopic(), p.GetPartition())
				if !ok || o.At != p.GetCommitted() {
					mismatch = fmt.Sprintf("%s/%d: group %d, committed %d", p.GetTopic(), p.GetPartition(), o.At, p.GetCommitted())
				}
			}
		}
		if mismatch == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s offsets differ from the committed offsets: %s", group, mismatch)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKafkaSinkExactlyOnceThroughKills: a Kafka-to-Kafka job (filter + map,
// transactional sink) while workers and coordinators are killed with
// SIGKILL; a read_committed reader of the output sees every expected record
// exactly once, and the job's group offsets equal its committed offsets.
func TestKafkaSinkExactlyOnceThroughKills(t *testing.T) {
	const in, out, parts = "orders", "doubled", 4
	pc := newProcCluster(t, 2)
	createTopic(t, pc.brokers, in, parts)
	createTopic(t, pc.brokers, out, 3)
	pc.startCoordinator(0, "")
	pc.startCoordinator(1, "")
	workers := []string{"w1", "w2", "w3"}
	for _, w := range workers {
		pc.startWorker(w, "")
	}
	c := pc.client()
	waitServing(t, c)
	spec := sinkJob("orders-doubled", pc.brokers, in, out, sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_UNSPECIFIED)
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	o := newOrders()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		o.produce(t, pc.brokers, in, parts, 20000, 2000)
	}()
	kills := pc.killRandomly(workers, 8*time.Second)
	wg.Wait()
	tc := &testCluster{t: t, Client: c}
	o.mu.Lock()
	ends := map[string]int64{}
	for i := range parts {
		ends[fmt.Sprintf("%s/%d", in, i)] = int64(o.n/parts + boolInt(i < o.n%parts))
	}
	want := len(o.want)
	o.mu.Unlock()
	tc.waitOffsets(spec.GetName(), ends, 90*time.Second)
	seen, values := readOutput(t, pc.brokers, out, want, 60*time.Second)
	checkOutput(t, o, seen, values, false)
	checkGroupOffsets(t, pc.brokers, c, spec.GetName())
	t.Logf("%d kills survived; %d orders, %d written exactly once", kills, o.n, want)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sinkScenario is a Kafka-to-Kafka job on 2 source partitions with 4,000
// orders, run by a coordinator, a worker armed with failpoints and a healthy
// worker.
type sinkScenario struct {
	pc     *procCluster
	faulty *proc
	c      *client.Client
	o      *orders
	spec   *sluicev1.JobSpec
	in     string
}

func startSinkScenario(t *testing.T, name string, mode sluicev1.KafkaSinkMode, failpoints string) *sinkScenario {
	t.Helper()
	sc := &sinkScenario{in: name + "-in", pc: newProcCluster(t, 1), o: newOrders()}
	out := name + "-out"
	createTopic(t, sc.pc.brokers, sc.in, 2)
	createTopic(t, sc.pc.brokers, out, 2)
	sc.pc.startCoordinator(0, "")
	sc.faulty = sc.pc.startWorker("faulty", failpoints)
	sc.pc.startWorker("healthy", "")
	sc.c = sc.pc.client()
	waitServing(t, sc.c)
	sc.o.produce(t, sc.pc.brokers, sc.in, 2, 4000, 0)
	sc.spec = sinkJob(name, sc.pc.brokers, sc.in, out, mode)
	if _, err := sc.c.Submit(context.Background(), sc.spec); err != nil {
		t.Fatal(err)
	}
	return sc
}

// finish waits until every source record is committed and reads the output.
func (sc *sinkScenario) finish(t *testing.T) (map[string]int, map[string]string) {
	t.Helper()
	tc := &testCluster{t: t, Client: sc.c}
	tc.waitOffsets(sc.spec.GetName(), map[string]int64{sc.in + "/0": 2000, sc.in + "/1": 2000}, 60*time.Second)
	return readOutput(t, sc.pc.brokers, sc.spec.GetSink().GetKafka().GetTopic(), len(sc.o.want), 30*time.Second)
}

// TestKafkaSinkZombieFenced freezes a worker in the middle of a transaction
// (output produced, not committed); its task is re-run elsewhere, whose
// InitTransactions fences it; after SIGCONT the zombie cannot commit, and
// the output has every record once.
func TestKafkaSinkZombieFenced(t *testing.T) {
	sc := startSinkScenario(t, "zombie", sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL, "mid-txn:2:stop")
	sc.faulty.waitOutput(t, "failpoint mid-txn:2:stop reached", 20*time.Second)
	tc := &testCluster{t: t, Client: sc.c}
	tc.waitOffsets(sc.spec.GetName(), map[string]int64{sc.in + "/0": 2000, sc.in + "/1": 2000}, 60*time.Second)
	if err := sc.faulty.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Its transaction can no longer commit. The broker says so as "fenced"
	// or "invalid transactional state" depending on timing; either way the
	// attempt fails, and the output check below proves nothing of it landed.
	sc.faulty.waitOutput(t, "task failed: worker_id=faulty job=zombie", 30*time.Second)
	seen, values := sc.finish(t)
	checkOutput(t, sc.o, seen, values, false)
}

// TestKafkaSinkIdempotentDedup: in idempotent mode a worker killed after
// writing and before reporting makes its task run again, writing duplicates;
// every record carries sluice-job, sluice-batch and sluice-src, and
// de-duplicating by sluice-src gives exactly the ground truth.
func TestKafkaSinkIdempotentDedup(t *testing.T) {
	sc := startSinkScenario(t, "idem", sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT, "after-sink-write:1:kill")
	sc.faulty.waitExit(t, 60*time.Second)
	seen, values := sc.finish(t)
	dups := checkOutput(t, sc.o, seen, values, true)
	if dups == 0 {
		t.Errorf("no duplicates: the kill after the write should have made the task write twice")
	}
	checkGroupOffsets(t, sc.pc.brokers, sc.c, sc.spec.GetName())
	t.Logf("%d records, %d duplicates, de-duplicated by sluice-src to exactly the ground truth", len(sc.o.want), dups)
}

// TestKafkaSinkStopAbortsTransactions: a job stopped while a worker is
// frozen in a transaction leaves no transaction open (sluice txn list shows
// none ongoing), and the transaction timeout is checked at submit.
func TestKafkaSinkStopAbortsTransactions(t *testing.T) {
	const in, out, parts = "sin", "sout", 2
	pc := newProcCluster(t, 1)
	createTopic(t, pc.brokers, in, parts)
	createTopic(t, pc.brokers, out, 2)
	pc.startCoordinator(0, "")
	frozen := pc.startWorker("frozen", "mid-txn:1:stop")
	c := pc.client()
	waitServing(t, c)

	// The broker's transaction.max.timeout.ms is 15 minutes.
	bad := sinkJob("too-long", pc.brokers, in, out, sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL)
	bad.Sink.GetKafka().TransactionTimeout = durationpb.New(30 * time.Minute)
	_, err := c.Submit(context.Background(), bad)
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "transaction.max.timeout.ms") {
		t.Fatalf("submit with a 30m transaction timeout: %v, want InvalidArgument naming transaction.max.timeout.ms", err)
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && br.GetFieldViolations()[0].GetField() != "sink.kafka.transaction_timeout" {
			t.Errorf("field = %q", br.GetFieldViolations()[0].GetField())
		}
	}

	o := newOrders()
	o.produce(t, pc.brokers, in, parts, 1000, 0)
	spec := sinkJob("stopme", pc.brokers, in, out, sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL)
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	frozen.waitOutput(t, "failpoint mid-txn:1:stop reached", 60*time.Second)
	// The frozen worker runs both partitions' tasks at once: one or both
	// may be inside a transaction.
	stopAbortsTransactions(t, c, spec.GetName(), "")
	out2 := run(t, sluiceBin, "txn", "list", "--job", spec.GetName(), "--coordinator", pc.coords[0])
	j, err := c.Job(context.Background(), spec.GetName())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out2, "Ongoing") || !strings.Contains(out2, jobspec.TransactionalIDPrefix(spec, j.GetIncarnation())+"sin") {
		t.Errorf("sluice txn list after stop:\n%s", out2)
	}
	_ = frozen.cmd.Process.Signal(syscall.SIGCONT)
}
