package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/dev"
	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// One embedded etcd serves the package's server tests; each test has a
// prefix of its own.
var (
	etcdOnce sync.Once
	etcdAddr string
	etcdErr  error
	etcdStop func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	if etcdStop != nil {
		etcdStop()
	}
	os.Exit(code)
}

func startEtcd() (string, error) {
	dir, err := os.MkdirTemp("", "coordinator-etcd-")
	if err != nil {
		return "", err
	}
	var lastErr error
	for attempt := range 3 { // a free port may be taken before etcd binds it
		clientAddr, err := dev.FreeAddr()
		if err != nil {
			return "", err
		}
		peerAddr, err := dev.FreeAddr()
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		e, err := dev.StartEtcd(ctx, dev.EtcdConfig{Dir: fmt.Sprintf("%s/%d", dir, attempt), ClientAddr: clientAddr, PeerAddr: peerAddr})
		cancel()
		if err == nil {
			etcdStop = func() { e.Close(); os.RemoveAll(dir) }
			return clientAddr, nil
		}
		lastErr = err
	}
	os.RemoveAll(dir)
	return "", lastErr
}

// server is a coordinator serving gRPC over the package's etcd, not
// leading: the JobService reads and writes etcd without it.
type server struct {
	coord  *coordinator.Coordinator
	store  *offsetstore.Store
	etcd   *clientv3.Client
	client *client.Client
}

var (
	prefixMu sync.Mutex
	prefixes = map[*testing.T]string{}
	runSeq   atomic.Int64
)

// testPrefix is the etcd prefix of t's coordinators: shared by those of
// one test (a leader and its standby), and new on each run, so that
// -count=N starts each run afresh.
func testPrefix(t *testing.T) string {
	prefixMu.Lock()
	defer prefixMu.Unlock()
	p, ok := prefixes[t]
	if !ok {
		p = fmt.Sprintf("/t-%s-%d/", strings.ReplaceAll(t.Name(), "/", "_"), runSeq.Add(1))
		prefixes[t] = p
	}
	return p
}

// newServer starts a coordinator under a prefix of the test's own; tweak
// may change its etcd client (before the coordinator holds it) and config.
func newServer(t *testing.T, tweak func(cli *clientv3.Client, cfg *coordinator.Config)) *server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs an embedded etcd; skipped under -short")
	}
	etcdOnce.Do(func() { etcdAddr, etcdErr = startEtcd() })
	if etcdErr != nil {
		t.Fatalf("start embedded etcd: %v", etcdErr)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdAddr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := coordinator.DefaultConfig()
	cfg.Etcd = cli
	cfg.AdvertiseAddr = lis.Addr().String()
	cfg.Prefix = testPrefix(t)
	if tweak != nil {
		tweak(cli, &cfg)
	}
	c, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := coordinator.NewGRPCServer(c)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cl, err := client.Dial([]string{lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return &server{coord: c, store: c.Store(), etcd: cli, client: cl}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func jobSpec(name, brokers string) *sluicev1.JobSpec {
	return &sluicev1.JobSpec{
		Name: name,
		Source: &sluicev1.KafkaSource{
			BootstrapServers: brokers, Topics: []string{"t"},
			StartingOffsets: &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}},
		},
		BatchInterval: durationpb.New(time.Second),
		Aggregate:     &sluicev1.Aggregate{},
	}
}

// createJob stores a job and its starting offsets; it returns the offsets' revision.
func (s *server) createJob(t *testing.T, ctx context.Context, name string) int64 {
	t.Helper()
	if _, err := s.client.Submit(ctx, jobSpec(name, "127.0.0.1:1")); err != nil {
		t.Fatalf("submit %s: %v", name, err)
	}
	// Stopped: no runner would touch it (none runs: this coordinator does not lead).
	if _, err := s.client.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	offs := &sluicev1.CommittedOffsets{Offsets: []*sluicev1.PartitionOffset{{Topic: "t", Partition: 0, Offset: 0}}}
	if err := s.store.InitOffsets(ctx, name, offs); err != nil {
		t.Fatal(err)
	}
	v, err := s.store.Offsets(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return v.ModRevision
}

// commit plans and commits batch id of job, reading [10(id-1), 10id) of t/0,
// with a result of aggs (none if nil), keeping keep batches; it returns the
// offsets' new revision.
func (s *server) commit(t *testing.T, ctx context.Context, job string, id, offsRev int64, aggs []*sluicev1.KeyAggregate, keep int64) int64 {
	t.Helper()
	rg := []*sluicev1.OffsetRange{{Topic: "t", Partition: 0, FromOffset: 10 * (id - 1), UntilOffset: 10 * id}}
	b := &sluicev1.Batch{Job: job, Id: id, State: sluicev1.BatchState_BATCH_STATE_PLANNED, Ranges: rg}
	planRev, err := s.store.LogPlan(ctx, b, offsRev)
	if err != nil {
		t.Fatalf("plan batch %d: %v", id, err)
	}
	b = proto.Clone(b).(*sluicev1.Batch)
	b.State = sluicev1.BatchState_BATCH_STATE_COMMITTED
	c := offsetstore.Commit{
		Batch: b, BatchRevision: planRev, OffsetsRevision: offsRev, Keep: keep,
		Offsets: &sluicev1.CommittedOffsets{BatchId: id, Offsets: []*sluicev1.PartitionOffset{{Topic: "t", Partition: 0, Offset: 10 * id}}},
	}
	if aggs != nil {
		c.Result = &sluicev1.BatchResult{Job: job, BatchId: id, Aggregates: aggs}
	}
	rev, err := s.store.CommitBatch(ctx, c)
	if err != nil {
		t.Fatalf("commit batch %d: %v", id, err)
	}
	return rev
}

func agg(key string, n int64) *sluicev1.KeyAggregate {
	return &sluicev1.KeyAggregate{Key: key, Count: n, Sum: float64(n), Min: 1, Max: 1, Avg: 1}
}

func resultIDs(rs []*sluicev1.BatchResult) []int64 {
	out := []int64{}
	for _, r := range rs {
		out = append(out, r.GetBatchId())
	}
	return out
}

func counts(aggs []*sluicev1.KeyAggregate) map[string]int64 {
	m := map[string]int64{}
	for _, a := range aggs {
		m[a.GetKey()] = a.GetCount()
	}
	return m
}

func span(from, to int64) []int64 {
	out := []int64{}
	for id := from; id <= to; id++ {
		out = append(out, id)
	}
	return out
}

// TestGetResultsPages: 250 batches of which the first 50 were pruned
// (keep 200). Pages follow next_from_batch_id; merged covers every
// selected retained batch on the first page; pruned and
// oldest_retained_batch_id say what is gone.
func TestGetResultsPages(t *testing.T) {
	s := newServer(t, nil)
	ctx := testContext(t)
	rev := s.createJob(t, ctx, "pages")
	for id := int64(1); id <= 250; id++ {
		var aggs []*sluicev1.KeyAggregate
		if id%10 != 0 { // every tenth batch has no result
			aggs = []*sluicev1.KeyAggregate{agg("a", 1), agg(fmt.Sprintf("k%d", id%3), 2)}
		}
		rev = s.commit(t, ctx, "pages", id, rev, aggs, 200)
	}
	// Every batch id from..to without a result is skipped.
	withResults := func(from, to int64) []int64 {
		out := []int64{}
		for id := from; id <= to; id++ {
			if id%10 != 0 {
				out = append(out, id)
			}
		}
		return out
	}
	tests := []struct {
		name        string
		req         *sluicev1.GetResultsRequest
		wantIDs     []int64
		wantNext    int64
		wantPruned  bool
		wantMerged  map[string]int64 // nil: merge not asked
		wantOldest  int64
		wantErrCode codes.Code
	}{
		{
			name:    "default page of 100",
			req:     &sluicev1.GetResultsRequest{},
			wantIDs: withResults(51, 161), wantNext: 162, wantPruned: true, wantOldest: 51,
		},
		{
			name:    "limit",
			req:     &sluicev1.GetResultsRequest{FromBatchId: 100, Limit: 5},
			wantIDs: []int64{101, 102, 103, 104, 105}, wantNext: 106, wantOldest: 51,
		},
		{
			name:    "last page",
			req:     &sluicev1.GetResultsRequest{FromBatchId: 240, Limit: 100},
			wantIDs: withResults(240, 250), wantOldest: 51,
		},
		{
			name:    "limit above the maximum is the maximum",
			req:     &sluicev1.GetResultsRequest{Limit: 5000},
			wantIDs: withResults(51, 250), wantPruned: true, wantOldest: 51,
		},
		{
			name:    "to bounds the page",
			req:     &sluicev1.GetResultsRequest{FromBatchId: 60, ToBatchId: 70, Limit: 4},
			wantIDs: []int64{61, 62, 63, 64}, wantNext: 65, wantOldest: 51,
		},
		{
			name:    "merged covers all pages",
			req:     &sluicev1.GetResultsRequest{Merge: true, Limit: 3},
			wantIDs: []int64{51, 52, 53}, wantNext: 54, wantPruned: true, wantOldest: 51,
			// 180 retained results: a in each, k0/k1/k2 in a third each.
			wantMerged: map[string]int64{"a": 180, "k0": 120, "k1": 120, "k2": 120},
		},
		{
			name:       "merged of a range within the retained batches is not pruned",
			req:        &sluicev1.GetResultsRequest{Merge: true, FromBatchId: 51, ToBatchId: 59},
			wantIDs:    withResults(51, 59),
			wantOldest: 51,
			wantMerged: map[string]int64{"a": 9, "k0": 6, "k1": 6, "k2": 6},
		},
		{
			name:    "a range entirely pruned",
			req:     &sluicev1.GetResultsRequest{Merge: true, FromBatchId: 1, ToBatchId: 50},
			wantIDs: []int64{}, wantPruned: true, wantOldest: 51, wantMerged: map[string]int64{},
		},
		{
			name:    "a range beyond the last batch",
			req:     &sluicev1.GetResultsRequest{FromBatchId: 300},
			wantIDs: []int64{}, wantOldest: 51,
		},
		{name: "negative limit", req: &sluicev1.GetResultsRequest{Limit: -1}, wantErrCode: codes.InvalidArgument},
		{name: "negative from", req: &sluicev1.GetResultsRequest{FromBatchId: -1}, wantErrCode: codes.InvalidArgument},
		{name: "unknown job", req: &sluicev1.GetResultsRequest{Job: "nope"}, wantErrCode: codes.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.req.Job == "" {
				tc.req.Job = "pages"
			}
			resp, err := s.client.JobService().GetResults(ctx, tc.req)
			if tc.wantErrCode != codes.OK {
				if status.Code(err) != tc.wantErrCode {
					t.Fatalf("GetResults(%v) = %v, want code %v", tc.req, err, tc.wantErrCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("GetResults(%v) = %v", tc.req, err)
			}
			if got := resultIDs(resp.GetResults()); fmt.Sprint(got) != fmt.Sprint(tc.wantIDs) {
				t.Errorf("results %v, want %v", got, tc.wantIDs)
			}
			if resp.GetNextFromBatchId() != tc.wantNext || resp.GetPruned() != tc.wantPruned || resp.GetOldestRetainedBatchId() != tc.wantOldest {
				t.Errorf("next %d pruned %v oldest %d, want next %d pruned %v oldest %d", resp.GetNextFromBatchId(), resp.GetPruned(),
					resp.GetOldestRetainedBatchId(), tc.wantNext, tc.wantPruned, tc.wantOldest)
			}
			if tc.wantMerged != nil {
				if got := counts(resp.GetMerged()); fmt.Sprint(got) != fmt.Sprint(tc.wantMerged) {
					t.Errorf("merged %v, want %v", got, tc.wantMerged)
				}
			} else if len(resp.GetMerged()) > 0 {
				t.Errorf("merged %v without merge asked", resp.GetMerged())
			}
		})
	}

	t.Run("the SDK follows the pages", func(t *testing.T) {
		var ids []int64
		resp, err := s.client.AllResults(ctx, &sluicev1.GetResultsRequest{Job: "pages", Merge: true, Limit: 30}, func(r *sluicev1.BatchResult) error {
			ids = append(ids, r.GetBatchId())
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ids) != fmt.Sprint(withResults(51, 250)) {
			t.Errorf("AllResults read %v, want %v", ids, withResults(51, 250))
		}
		if !resp.GetPruned() || resp.GetOldestRetainedBatchId() != 51 || counts(resp.GetMerged())["a"] != 180 {
			t.Errorf("AllResults summary: pruned %v oldest %d merged %v", resp.GetPruned(), resp.GetOldestRetainedBatchId(), resp.GetMerged())
		}
		all, err := s.client.Results(ctx, "pages", 100, 0, false)
		if err != nil || fmt.Sprint(resultIDs(all.GetResults())) != fmt.Sprint(withResults(100, 250)) || all.GetPruned() {
			t.Errorf("Results(from 100) = %v pruned %v, %v; want %v not pruned", resultIDs(all.GetResults()), all.GetPruned(), err, withResults(100, 250))
		}
	})
}

// TestGetResultsPageBytes: a page stops at about 4 MiB, with at least one
// result, however large.
func TestGetResultsPageBytes(t *testing.T) {
	s := newServer(t, nil)
	ctx := testContext(t)
	rev := s.createJob(t, ctx, "big")
	big := strings.Repeat("x", 900<<10)
	for id := int64(1); id <= 10; id++ {
		rev = s.commit(t, ctx, "big", id, rev, []*sluicev1.KeyAggregate{agg(fmt.Sprintf("%s-%d", big, id), 1)}, 0)
	}
	var got [][]int64
	from := int64(0)
	for {
		resp, err := s.client.JobService().GetResults(ctx, &sluicev1.GetResultsRequest{Job: "big", FromBatchId: from})
		if err != nil {
			t.Fatal(err)
		}
		if n := proto.Size(resp); n > 4<<20+64<<10 {
			t.Errorf("a page of %d bytes, above about 4 MiB", n)
		}
		got = append(got, resultIDs(resp.GetResults()))
		if from = resp.GetNextFromBatchId(); from == 0 {
			break
		}
	}
	if want := [][]int64{span(1, 4), span(5, 8), span(9, 10)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pages %v, want %v", got, want)
	}
}

// compactingWatcher compacts etcd past the revision of the first watch
// it is asked for, after before ran: as if the watcher fell behind.
type compactingWatcher struct {
	clientv3.Watcher
	cli    *clientv3.Client
	once   sync.Once
	before func()
	t      *testing.T
}

func (w *compactingWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	w.once.Do(func() {
		w.before()
		resp, err := w.cli.Get(ctx, "probe")
		if err != nil {
			w.t.Error(err)
			return
		}
		if _, err := w.cli.Compact(ctx, resp.Header.Revision); err != nil {
			w.t.Error(err)
		}
	})
	return w.Watcher.Watch(ctx, key, opts...)
}

// TestWatchBatchesSurvivesCompaction: a client's watch whose history was
// compacted before it read it goes on from the last batch it sent,
// instead of failing with "required revision has been compacted".
func TestWatchBatchesSurvivesCompaction(t *testing.T) {
	for _, after := range []int64{0, 2} {
		t.Run(fmt.Sprintf("after %d", after), func(t *testing.T) {
			ctx := testContext(t)
			var s *server
			var rev int64
			var w *compactingWatcher
			s = newServer(t, func(cli *clientv3.Client, _ *coordinator.Config) {
				w = &compactingWatcher{Watcher: cli.Watcher, cli: cli, t: t}
				cli.Watcher = w
			})
			rev = s.createJob(t, ctx, "watched")
			for id := int64(1); id <= 3; id++ {
				rev = s.commit(t, ctx, "watched", id, rev, []*sluicev1.KeyAggregate{agg("a", id)}, 0)
			}
			// Between the server's read of the history and its watch,
			// batch 4 commits and etcd compacts past it.
			w.before = func() { rev = s.commit(t, ctx, "watched", 4, rev, []*sluicev1.KeyAggregate{agg("a", 4)}, 0) }

			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			got := make(chan *sluicev1.WatchBatchesResponse, 10)
			errc := make(chan error, 1)
			go func() {
				errc <- s.client.Watch(wctx, "watched", after, true, func(m *sluicev1.WatchBatchesResponse) error {
					got <- m
					return nil
				})
			}()
			want := []int64{3, 4, 5}
			if after == 0 {
				want = []int64{4, 5}
			}
			var ids []int64
			for len(ids) < len(want) {
				select {
				case m := <-got:
					ids = append(ids, m.GetBatch().GetId())
					if m.GetResult().GetAggregates()[0].GetCount() != m.GetBatch().GetId() {
						t.Errorf("batch %d came with result %v", m.GetBatch().GetId(), m.GetResult())
					}
					if m.GetBatch().GetId() == 4 {
						rev = s.commit(t, ctx, "watched", 5, rev, []*sluicev1.KeyAggregate{agg("a", 5)}, 0)
					}
				case err := <-errc:
					t.Fatalf("watch ended after batches %v: %v", ids, err)
				case <-ctx.Done():
					t.Fatalf("watch sent %v, want %v", ids, want)
				}
			}
			if fmt.Sprint(ids) != fmt.Sprint(want) {
				t.Errorf("watch sent %v, want %v", ids, want)
			}
		})
	}
}

// TestLeaderCompactsEtcd: a leading coordinator compacts etcd's history
// every interval, to the revision of the interval before.
func TestLeaderCompactsEtcd(t *testing.T) {
	ctx := testContext(t)
	s := newServer(t, func(_ *clientv3.Client, cfg *coordinator.Config) {
		cfg.CompactInterval = 200 * time.Millisecond
	})
	before, err := s.etcd.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.coord.Run(rctx) }()
	defer func() {
		cancel()
		<-done
	}()
	// Writes move the revision; the history before them must go.
	for {
		if _, err := s.etcd.Put(ctx, testPrefix(t)+"probe", "x"); err != nil {
			t.Fatal(err)
		}
		_, err := s.etcd.Get(ctx, "probe", clientv3.WithRev(before.Header.Revision))
		if errors.Is(err, rpctypes.ErrCompacted) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("etcd was not compacted past the revision the test started at")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestIncarnation: a new job gets a new incarnation, which an update, a
// stop and a resume keep; the job's Kafka group is shown with it.
func TestIncarnation(t *testing.T) {
	s := newServer(t, nil)
	ctx := testContext(t)
	hex16 := regexp.MustCompile(`^[0-9a-f]{16}$`)
	spec := jobSpec("inc", "127.0.0.1:1")
	j, err := s.client.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	inc := j.GetIncarnation()
	if !hex16.MatchString(inc) {
		t.Fatalf("incarnation %q, want 16 lowercase hex characters", inc)
	}
	if j.GetKafkaGroup() == "" || !strings.Contains(j.GetKafkaGroup(), inc) {
		t.Errorf("kafka_group %q, want one naming the incarnation %s", j.GetKafkaGroup(), inc)
	}
	spec.BatchInterval = durationpb.New(2 * time.Second)
	if j, err = s.client.Update(ctx, spec); err != nil || j.GetIncarnation() != inc {
		t.Errorf("after --update: incarnation %q, %v; want %s kept", j.GetIncarnation(), err, inc)
	}
	if j, err = s.client.Stop(ctx, "inc"); err != nil || j.GetIncarnation() != inc {
		t.Errorf("after stop: incarnation %q, %v; want %s kept", j.GetIncarnation(), err, inc)
	}
	if j, err = s.client.Resume(ctx, "inc"); err != nil || j.GetIncarnation() != inc {
		t.Errorf("after resume: incarnation %q, %v; want %s kept", j.GetIncarnation(), err, inc)
	}
	jobs, err := s.client.Jobs(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].GetIncarnation() != inc || jobs[0].GetKafkaGroup() != j.GetKafkaGroup() {
		t.Errorf("ListJobs = %v, %v; want the job with incarnation %s and group %s", jobs, err, inc, j.GetKafkaGroup())
	}
	stored, err := s.store.Job(ctx, "inc")
	if err != nil || stored.Value.GetKafkaGroup() != "" {
		t.Errorf("stored record has kafka_group %q (%v), want it output only", stored.Value.GetKafkaGroup(), err)
	}
	// Deleted and submitted again: a new incarnation.
	if err := s.client.Delete(ctx, "inc"); err != nil {
		t.Fatal(err)
	}
	j2, err := s.client.Submit(ctx, spec)
	if err != nil || j2.GetIncarnation() == inc || !hex16.MatchString(j2.GetIncarnation()) || j2.GetKafkaGroup() == j.GetKafkaGroup() {
		t.Errorf("resubmitted: incarnation %q group %q (%v), want new ones", j2.GetIncarnation(), j2.GetKafkaGroup(), err)
	}
}

// TestResetOffsetsNewIncarnation: a reset starts a new incarnation and sets
// the new incarnation's Kafka group to the reset offsets; the old group is
// left as it was, so a late transaction of the old incarnation cannot move
// the new one's.
func TestResetOffsetsNewIncarnation(t *testing.T) {
	brokers, kc := coordinator.StartKafka(t, 2, "t")
	ctx := testContext(t)
	for i := range 30 {
		if err := kc.ProduceSync(ctx, &kgo.Record{Topic: "t", Partition: int32(i % 2), Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	s := newServer(t, nil)
	j, err := s.client.Submit(ctx, jobSpec("rewind", brokers))
	if err != nil {
		t.Fatal(err)
	}
	oldGroup, oldInc := j.GetKafkaGroup(), j.GetIncarnation()
	// The old incarnation's group holds 15/15, as a late transaction would leave it.
	adm := kadm.NewClient(kc)
	var old kadm.Offsets
	old.Add(kadm.Offset{Topic: "t", Partition: 0, At: 15})
	old.Add(kadm.Offset{Topic: "t", Partition: 1, At: 15})
	if _, err := adm.CommitOffsets(ctx, oldGroup, old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.ResetOffsets(ctx, "rewind", &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("reset of a running job: %v, want FailedPrecondition", err)
	}
	if _, err := s.client.Stop(ctx, "rewind"); err != nil {
		t.Fatal(err)
	}
	to := &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{Explicit: &sluicev1.ExplicitOffsets{
		Offsets: []*sluicev1.PartitionOffset{{Topic: "t", Partition: 0, Offset: 4}},
	}}}
	if _, err := s.client.ResetOffsets(ctx, "rewind", to); err != nil {
		t.Fatalf("reset: %v", err)
	}
	j, err = s.client.Job(ctx, "rewind")
	if err != nil {
		t.Fatal(err)
	}
	if j.GetIncarnation() == oldInc || j.GetKafkaGroup() == oldGroup || !strings.Contains(j.GetKafkaGroup(), j.GetIncarnation()) {
		t.Fatalf("after the reset: incarnation %q group %q, want new ones (old %q %q)", j.GetIncarnation(), j.GetKafkaGroup(), oldInc, oldGroup)
	}
	fetch := func(group string) map[int32]int64 {
		t.Helper()
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			t.Fatalf("fetch offsets of %s: %v", group, err)
		}
		m := map[int32]int64{}
		offs.Each(func(o kadm.OffsetResponse) { m[o.Partition] = o.At })
		return m
	}
	if got, want := fetch(j.GetKafkaGroup()), map[int32]int64{0: 4, 1: 0}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("new group %s offsets %v, want %v", j.GetKafkaGroup(), got, want)
	}
	if got, want := fetch(oldGroup), map[int32]int64{0: 15, 1: 15}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("old group %s offsets %v, want %v untouched", oldGroup, got, want)
	}
	offs, err := s.client.Offsets(ctx, "rewind")
	if err != nil || len(offs.GetPartitions()) != 2 || offs.GetPartitions()[0].GetCommitted() != 4 {
		t.Errorf("committed offsets after the reset: %v, %v", offs, err)
	}
}

// TestSubmitValidateOnly: a validate_only submit answers as a real one would
// (InvalidArgument naming the field, AlreadyExists, NotFound for an update of
// no job) and stores nothing.
func TestSubmitValidateOnly(t *testing.T) {
	s := newServer(t, func(_ *clientv3.Client, cfg *coordinator.Config) {
		cfg.KafkaPolicy.Bootstrap = []string{"127.0.0.1:1"}
	})
	ctx := testContext(t)
	noTopics := jobSpec("dry", "127.0.0.1:1")
	noTopics.Source.Topics = nil
	elsewhere := jobSpec("dry", "10.0.0.1:9092")
	tests := []struct {
		name     string
		spec     *sluicev1.JobSpec
		update   bool
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "good", spec: jobSpec("dry", "127.0.0.1:1")},
		{name: "no topics", spec: noTopics, wantCode: codes.InvalidArgument, wantMsg: "source.topics: at least one topic is required"},
		{name: "policy", spec: elsewhere, wantCode: codes.InvalidArgument, wantMsg: "source.bootstrap_servers"},
		{name: "update of no job", spec: jobSpec("dry", "127.0.0.1:1"), update: true, wantCode: codes.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, realErr := s.client.JobService().SubmitJob(ctx, &sluicev1.SubmitJobRequest{Spec: tc.spec, Update: tc.update, ValidateOnly: true})
			j, err := s.client.DryRun(ctx, tc.spec, tc.update)
			if status.Code(err) != tc.wantCode || !strings.Contains(status.Convert(err).Message(), tc.wantMsg) {
				t.Fatalf("DryRun = %v, want %v with %q", err, tc.wantCode, tc.wantMsg)
			}
			if status.Convert(realErr).Message() != status.Convert(err).Message() {
				t.Errorf("DryRun says %v, the request %v", err, realErr)
			}
			if err == nil && (j.GetSpec().GetName() != "dry" || j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING) {
				t.Errorf("DryRun job = %v, want the running job it would store", j)
			}
			if offline := coordinator.CheckSpec(tc.spec, kafkasrc.Policy{Bootstrap: []string{"127.0.0.1:1"}}); !tc.update && status.Convert(offline).Message() != status.Convert(err).Message() {
				t.Errorf("CheckSpec = %v, the server %v", offline, err)
			}
			if _, err := s.store.Job(ctx, "dry"); !errors.Is(err, offsetstore.ErrNotFound) {
				t.Fatalf("after a dry run the store has the job (%v)", err)
			}
		})
	}
	if _, err := s.client.Submit(ctx, jobSpec("dry", "127.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.DryRun(ctx, jobSpec("dry", "127.0.0.1:1"), false); status.Code(err) != codes.AlreadyExists {
		t.Errorf("dry run of a taken name = %v, want AlreadyExists", err)
	}
	spec := jobSpec("dry", "127.0.0.1:1")
	spec.BatchInterval = durationpb.New(5 * time.Second)
	if j, err := s.client.DryRun(ctx, spec, true); err != nil || j.GetSpec().GetBatchInterval().AsDuration() != 5*time.Second || j.GetIncarnation() == "" {
		t.Errorf("dry run of an update = %v, %v; want the new spec with the job's incarnation", j, err)
	}
	if v, err := s.store.Job(ctx, "dry"); err != nil || v.Value.GetSpec().GetBatchInterval().AsDuration() != time.Second {
		t.Errorf("after a dry-run update the stored spec changed: %v, %v", v.Value.GetSpec(), err)
	}
}
