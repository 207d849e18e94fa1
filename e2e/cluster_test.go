// Package e2e tests Sluice end to end with real parts: an embedded etcd, the
// kfake Kafka broker, real gRPC on loopback, a coordinator and workers, and
// the sluice and grpcurl binaries as child processes.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/dev"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// sluiceBin is the sluice binary built once for the tests that run it.
var sluiceBin string

func TestMain(m *testing.M) {
	code := func() int {
		if !testingShort() {
			dir, err := os.MkdirTemp("", "sluice-e2e-bin")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			sluiceBin = filepath.Join(dir, "sluice")
			out, err := exec.Command("go", "build", "-o", sluiceBin, "../cmd/sluice").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build sluice: %v\n%s", err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func testingShort() bool {
	for _, a := range os.Args {
		if a == "-test.short=true" || a == "-test.short" {
			return true
		}
	}
	return false
}

// testCluster is a whole Sluice cluster in this process.
type testCluster struct {
	t       testing.TB
	Kafka   *kfake.Cluster
	Brokers string
	Etcd    *clientv3.Client
	EtcdURL string
	Addr    string // coordinator gRPC
	Coord   *coordinator.Coordinator
	Client  *client.Client
	cancel  context.CancelFunc
	workers map[string]context.CancelFunc
	ctx     context.Context
	// workerOpt adjusts every worker's config.
	workerOpt func(*worker.Config)
}

type clusterOptions struct {
	workers    int
	partitions int32
	topics     []string
	coord      func(*coordinator.Config)
	worker     func(*worker.Config)
	kafka      []kfake.Opt // more kfake options (TLS, SASL)
	// dial are the options of the cluster's Client (TLS, a token).
	dial []grpc.DialOption
}

// newTestCluster starts etcd, kfake (with the topics), a coordinator and
// the workers; everything stops at the end of the test.
func newTestCluster(t testing.TB, opts clusterOptions) *testCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	if opts.workers == 0 {
		opts.workers = 2
	}
	if opts.partitions == 0 {
		opts.partitions = 8
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &testCluster{t: t, cancel: cancel, ctx: ctx, workers: map[string]context.CancelFunc{}}

	kopts := []kfake.Opt{kfake.NumBrokers(1)}
	if len(opts.topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(opts.partitions, opts.topics...))
	}
	kopts = append(kopts, opts.kafka...)
	k, err := kfake.NewCluster(kopts...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(k.Close)
	tc.Kafka, tc.Brokers = k, k.ListenAddrs()[0]

	clientAddr, peerAddr := freeAddr(t), freeAddr(t)
	e, err := dev.StartEtcd(ctx, dev.EtcdConfig{Dir: t.TempDir(), ClientAddr: clientAddr, PeerAddr: peerAddr})
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	t.Cleanup(e.Close)
	tc.EtcdURL = clientAddr
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	tc.Etcd = cli

	logger := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: testWriter{t}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc.Addr = lis.Addr().String()
	ccfg := coordinator.DefaultConfig()
	ccfg.Etcd = cli
	ccfg.AdvertiseAddr = tc.Addr
	ccfg.Logger = logger
	ccfg.SessionTTL = 2 * time.Second
	ccfg.HeartbeatTimeout = 3 * time.Second
	ccfg.KeepBatches = 100000
	if opts.coord != nil {
		opts.coord(&ccfg)
	}
	c, err := coordinator.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.Coord = c
	gs := coordinator.NewGRPCServer(c)
	done := make(chan struct{}, 2)
	go func() {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("grpc serve: %v", err)
		}
		done <- struct{}{}
	}()
	go func() {
		if err := c.Run(ctx); err != nil {
			t.Errorf("coordinator: %v", err)
		}
		done <- struct{}{}
	}()
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		<-done
		<-done
	})
	tc.workerOpt = opts.worker
	for i := range opts.workers {
		tc.startWorker(fmt.Sprintf("w%d", i+1), logger)
	}
	cl, err := client.Dial([]string{tc.Addr}, opts.dial...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	tc.Client = cl
	return tc
}

func (tc *testCluster) startWorker(id string, logger hclog.Logger) {
	wcfg := worker.DefaultConfig()
	wcfg.Coordinators = []string{tc.Addr}
	wcfg.ID = id
	wcfg.Logger = logger
	if tc.workerOpt != nil {
		tc.workerOpt(&wcfg)
	}
	w, err := worker.New(wcfg)
	if err != nil {
		tc.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(tc.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			tc.t.Errorf("worker %s: %v", id, err)
		}
	}()
	tc.workers[id] = cancel
	tc.t.Cleanup(func() {
		cancel()
		<-done
	})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	a, err := dev.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// producer returns a franz-go client for writing ground truth: the tests do
// not trust Sluice's own Kafka code to write what they check against.
func (tc *testCluster) producer(opts ...kgo.Opt) *kgo.Client {
	tc.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(tc.Brokers),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	}, opts...)...)
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(cl.Close)
	return cl
}

// waitOffsets waits until the job's committed offsets equal want for every
// partition, failing the test with the job's state if it does not happen.
func (tc *testCluster) waitOffsets(job string, want map[string]int64, timeout time.Duration) {
	tc.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]int64
	for time.Now().Before(deadline) {
		resp, err := tc.Client.Offsets(context.Background(), job)
		if err == nil {
			last = map[string]int64{}
			for _, p := range resp.GetPartitions() {
				last[fmt.Sprintf("%s/%d", p.GetTopic(), p.GetPartition())] = p.GetCommitted()
			}
			if equalOffsets(last, want) {
				return
			}
		}
		j, err := tc.Client.Job(context.Background(), job)
		if err == nil && j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			tc.t.Fatalf("job %s failed: %s", job, j.GetMessage())
		}
		time.Sleep(50 * time.Millisecond)
	}
	j, _ := tc.Client.Job(context.Background(), job)
	tc.t.Fatalf("job %s: committed offsets %v, want %v (state %v, message %q)", job, last, want, j.GetState(), j.GetMessage())
}

func equalOffsets(got, want map[string]int64) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// mergedCounts reads every committed batch's results and sums the counts.
func (tc *testCluster) mergedCounts(job string) map[string]int64 {
	tc.t.Helper()
	resp, err := tc.Client.Results(context.Background(), job, 0, 0, true)
	if err != nil {
		tc.t.Fatalf("results: %v", err)
	}
	got := map[string]int64{}
	for _, a := range resp.GetMerged() {
		got[a.GetKey()] = a.GetCount()
	}
	return got
}

// checkRanges audits a job's committed batches: per partition the ranges
// tile [start, end) with no gap and no overlap, and the batch ids are
// consecutive from 1.
func (tc *testCluster) checkRanges(job string, start, end map[string]int64) []*sluicev1.Batch {
	tc.t.Helper()
	batches, err := tc.Client.Batches(context.Background(), job, 100000)
	if err != nil {
		tc.t.Fatalf("batches: %v", err)
	}
	sort.Slice(batches, func(i, j int) bool { return batches[i].GetId() < batches[j].GetId() })
	next := map[string]int64{}
	for k, v := range start {
		next[k] = v
	}
	for i, b := range batches {
		if b.GetId() != int64(i+1) {
			tc.t.Fatalf("batch ids not consecutive: position %d has id %d", i, b.GetId())
		}
		if b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED {
			tc.t.Fatalf("batch %d is %v, want committed", b.GetId(), b.GetState())
		}
		for _, r := range b.GetRanges() {
			k := fmt.Sprintf("%s/%d", r.GetTopic(), r.GetPartition())
			if r.GetFromOffset() != next[k] {
				tc.t.Fatalf("batch %d: range %s starts at %d, want %d (gap or overlap)", b.GetId(), k, r.GetFromOffset(), next[k])
			}
			if r.GetUntilOffset() <= r.GetFromOffset() {
				tc.t.Fatalf("batch %d: empty or negative range %s [%d, %d)", b.GetId(), k, r.GetFromOffset(), r.GetUntilOffset())
			}
			next[k] = r.GetUntilOffset()
		}
	}
	if !equalOffsets(next, end) {
		tc.t.Fatalf("ranges end at %v, want %v", next, end)
	}
	return batches
}
