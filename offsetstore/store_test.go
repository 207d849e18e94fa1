package offsetstore_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/dev"
	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// One embedded etcd serves the whole package; it is started by the first test
// that needs it (so that -short starts none) and stopped by TestMain.
var (
	etcdOnce   sync.Once
	etcdServer *embed.Etcd
	etcdDir    string
	etcdAddr   string
	etcdErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if etcdServer != nil {
		etcdServer.Close()
	}
	if etcdDir != "" {
		os.RemoveAll(etcdDir)
	}
	os.Exit(code)
}

func startEtcd() (string, error) {
	dir, err := os.MkdirTemp("", "offsetstore-etcd-")
	if err != nil {
		return "", err
	}
	etcdDir = dir
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port may be taken before etcd binds it
		clientAddr, err := dev.FreeAddr()
		if err != nil {
			return "", err
		}
		peerAddr, err := dev.FreeAddr()
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		e, err := dev.StartEtcd(ctx, dev.EtcdConfig{
			Dir:        fmt.Sprintf("%s/%d", dir, attempt),
			ClientAddr: clientAddr,
			PeerAddr:   peerAddr,
		})
		cancel()
		if err == nil {
			etcdServer = e
			return clientAddr, nil
		}
		lastErr = err
	}
	return "", lastErr
}

// newStore returns a store over the package's etcd, under a prefix of its own
// test, and the raw client for checks behind the store's back.
func newStore(t *testing.T, opts offsetstore.Options) (*offsetstore.Store, *clientv3.Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs an embedded etcd; skipped under -short")
	}
	etcdOnce.Do(func() { etcdAddr, etcdErr = startEtcd() })
	if etcdErr != nil {
		t.Fatalf("start embedded etcd: %v", etcdErr)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{etcdAddr},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	if opts.Prefix == "" {
		opts.Prefix = "/t-" + t.Name() + "/"
	}
	return offsetstore.New(cli, opts), cli
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newJob(name string) *sluicev1.Job {
	return &sluicev1.Job{
		Spec:  &sluicev1.JobSpec{Name: name, Source: &sluicev1.KafkaSource{BootstrapServers: "k:9092", Topics: []string{"t"}}},
		State: sluicev1.JobState_JOB_STATE_RUNNING,
	}
}

func offsetsAt(batchID, off int64) *sluicev1.CommittedOffsets {
	return &sluicev1.CommittedOffsets{BatchId: batchID, Offsets: []*sluicev1.PartitionOffset{
		{Topic: "t", Partition: 0, Offset: off},
		{Topic: "t", Partition: 1, Offset: 2 * off},
	}}
}

// plannedBatch is batch id reading 10 records per partition from the offsets of batch id-1.
func plannedBatch(job string, id int64) *sluicev1.Batch {
	from := (id - 1) * 10
	return &sluicev1.Batch{Job: job, Id: id, State: sluicev1.BatchState_BATCH_STATE_PLANNED, Ranges: []*sluicev1.OffsetRange{
		{Topic: "t", Partition: 0, FromOffset: from, UntilOffset: from + 10},
		{Topic: "t", Partition: 1, FromOffset: 2 * from, UntilOffset: 2*from + 10},
	}}
}

func committedBatch(job string, id int64) *sluicev1.Batch {
	b := plannedBatch(job, id)
	b.State = sluicev1.BatchState_BATCH_STATE_COMMITTED
	b.Metrics = &sluicev1.BatchMetrics{RecordsIn: 20, RecordsOut: 20, Tasks: 2, TaskAttempts: 2}
	return b
}

func resultOf(job string, id int64) *sluicev1.BatchResult {
	return &sluicev1.BatchResult{Job: job, BatchId: id, Records: []*sluicev1.OutputRecord{
		{Key: []byte("k"), Value: []byte(fmt.Sprintf("v%d", id)), Topic: "t", Partition: 0, Offset: (id - 1) * 10},
	}}
}

// initJob stores a job's starting offsets and returns their revision.
func initJob(t *testing.T, ctx context.Context, s *offsetstore.Store, job string) int64 {
	t.Helper()
	if err := s.InitOffsets(ctx, job, offsetsAt(0, 0)); err != nil {
		t.Fatalf("InitOffsets(%s): %v", job, err)
	}
	v, err := s.Offsets(ctx, job)
	if err != nil {
		t.Fatalf("Offsets(%s): %v", job, err)
	}
	return v.ModRevision
}

// runBatch plans and commits batch id (with a result) and returns the offsets' new revision.
func runBatch(t *testing.T, ctx context.Context, s *offsetstore.Store, job string, id, offsRev, keep int64) int64 {
	t.Helper()
	planRev, err := s.LogPlan(ctx, plannedBatch(job, id), offsRev)
	if err != nil {
		t.Fatalf("LogPlan(%s, %d): %v", job, id, err)
	}
	rev, err := s.CommitBatch(ctx, offsetstore.Commit{
		Batch: committedBatch(job, id), BatchRevision: planRev,
		Result:  resultOf(job, id),
		Offsets: offsetsAt(id, id*10), OffsetsRevision: offsRev,
		Keep: keep,
	})
	if err != nil {
		t.Fatalf("CommitBatch(%s, %d): %v", job, id, err)
	}
	return rev
}

// snapshot is everything a commit of one batch may change.
type snapshot struct {
	offsets    *sluicev1.CommittedOffsets
	offsetsRev int64
	batch      *sluicev1.Batch
	batchRev   int64
	results    []*sluicev1.BatchResult
}

func takeSnapshot(t *testing.T, ctx context.Context, s *offsetstore.Store, job string) snapshot {
	t.Helper()
	offs, err := s.Offsets(ctx, job)
	if err != nil {
		t.Fatalf("Offsets(%s): %v", job, err)
	}
	last, err := s.LastBatch(ctx, job)
	if err != nil {
		t.Fatalf("LastBatch(%s): %v", job, err)
	}
	res, err := s.Results(ctx, job, 0, 0)
	if err != nil {
		t.Fatalf("Results(%s): %v", job, err)
	}
	return snapshot{offsets: offs.Value, offsetsRev: offs.ModRevision, batch: last.Value, batchRev: last.ModRevision, results: res}
}

func checkUnchanged(t *testing.T, ctx context.Context, s *offsetstore.Store, job string, before snapshot) {
	t.Helper()
	after := takeSnapshot(t, ctx, s, job)
	if !proto.Equal(after.offsets, before.offsets) || after.offsetsRev != before.offsetsRev {
		t.Errorf("offsets = %v at rev %d, want unchanged %v at rev %d", after.offsets, after.offsetsRev, before.offsets, before.offsetsRev)
	}
	if !proto.Equal(after.batch, before.batch) || after.batchRev != before.batchRev {
		t.Errorf("last batch = %v at rev %d, want unchanged %v at rev %d", after.batch, after.batchRev, before.batch, before.batchRev)
	}
	if len(after.results) != len(before.results) {
		t.Fatalf("results = %v, want unchanged %v", after.results, before.results)
	}
	for i := range after.results {
		if !proto.Equal(after.results[i], before.results[i]) {
			t.Errorf("results[%d] = %v, want unchanged %v", i, after.results[i], before.results[i])
		}
	}
}

func batchIDs(bs []*sluicev1.Batch) []int64 {
	ids := make([]int64, 0, len(bs))
	for _, b := range bs {
		ids = append(ids, b.GetId())
	}
	return ids
}

func resultIDs(rs []*sluicev1.BatchResult) []int64 {
	ids := make([]int64, 0, len(rs))
	for _, r := range rs {
		ids = append(ids, r.GetBatchId())
	}
	return ids
}

func equalIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCreateJob(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)

	if _, err := s.Job(ctx, "clicks"); !errors.Is(err, offsetstore.ErrNotFound) {
		t.Errorf("Job(clicks) before CreateJob error = %v, want ErrNotFound", err)
	}
	for _, name := range []string{"orders", "clicks", "clicks-2"} {
		if err := s.CreateJob(ctx, newJob(name)); err != nil {
			t.Fatalf("CreateJob(%s) = %v, want nil", name, err)
		}
	}
	again := newJob("clicks")
	again.State = sluicev1.JobState_JOB_STATE_STOPPED
	if err := s.CreateJob(ctx, again); !errors.Is(err, offsetstore.ErrExists) {
		t.Errorf("CreateJob(clicks) again = %v, want ErrExists", err)
	}

	got, err := s.Job(ctx, "clicks")
	if err != nil {
		t.Fatalf("Job(clicks): %v", err)
	}
	if want := newJob("clicks"); !proto.Equal(got.Value, want) {
		t.Errorf("Job(clicks) = %v, want %v (the second create must not overwrite)", got.Value, want)
	}
	if got.ModRevision <= 0 {
		t.Errorf("Job(clicks).ModRevision = %d, want > 0", got.ModRevision)
	}

	jobs, err := s.Jobs(ctx)
	if err != nil {
		t.Fatalf("Jobs: %v", err)
	}
	var names []string
	for _, j := range jobs {
		names = append(names, j.GetSpec().GetName())
	}
	if want := []string{"clicks", "clicks-2", "orders"}; strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("Jobs() = %q, want %q", names, want)
	}
}

func TestUpdateJob(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	if err := s.CreateJob(ctx, newJob("clicks")); err != nil {
		t.Fatal(err)
	}
	v, err := s.Job(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}

	stopped := proto.Clone(v.Value).(*sluicev1.Job)
	stopped.State = sluicev1.JobState_JOB_STATE_STOPPED
	if err := s.UpdateJob(ctx, stopped, v.ModRevision); err != nil {
		t.Fatalf("UpdateJob at the current revision = %v, want nil", err)
	}

	failed := proto.Clone(v.Value).(*sluicev1.Job)
	failed.State = sluicev1.JobState_JOB_STATE_FAILED
	if err := s.UpdateJob(ctx, failed, v.ModRevision); !errors.Is(err, offsetstore.ErrConflict) {
		t.Errorf("UpdateJob at a stale revision = %v, want ErrConflict", err)
	}

	got, err := s.Job(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.Value, stopped) {
		t.Errorf("Job(clicks) = %v, want %v", got.Value, stopped)
	}
	if got.ModRevision <= v.ModRevision {
		t.Errorf("Job(clicks).ModRevision = %d, want above %d", got.ModRevision, v.ModRevision)
	}
}

func TestInitOffsets(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)

	if _, err := s.Offsets(ctx, "clicks"); !errors.Is(err, offsetstore.ErrNotFound) {
		t.Errorf("Offsets before InitOffsets error = %v, want ErrNotFound", err)
	}
	first := offsetsAt(0, 5)
	if err := s.InitOffsets(ctx, "clicks", first); err != nil {
		t.Fatalf("InitOffsets = %v, want nil", err)
	}
	before, err := s.Offsets(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(before.Value, first) {
		t.Errorf("Offsets = %v, want %v", before.Value, first)
	}

	if err := s.InitOffsets(ctx, "clicks", offsetsAt(0, 99)); !errors.Is(err, offsetstore.ErrConflict) {
		t.Errorf("InitOffsets again = %v, want ErrConflict", err)
	}
	after, err := s.Offsets(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(after.Value, first) || after.ModRevision != before.ModRevision {
		t.Errorf("Offsets after a second InitOffsets = %v at rev %d, want %v at rev %d", after.Value, after.ModRevision, first, before.ModRevision)
	}
}

func TestLogPlan(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	offsRev := initJob(t, ctx, s, "clicks")

	planRev, err := s.LogPlan(ctx, plannedBatch("clicks", 1), offsRev)
	if err != nil {
		t.Fatalf("LogPlan(1) = %v, want nil", err)
	}
	last, err := s.LastBatch(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(last.Value, plannedBatch("clicks", 1)) || last.ModRevision != planRev {
		t.Errorf("LastBatch = %v at rev %d, want %v at rev %d", last.Value, last.ModRevision, plannedBatch("clicks", 1), planRev)
	}

	t.Run("same id", func(t *testing.T) {
		other := plannedBatch("clicks", 1)
		other.Ranges = other.Ranges[:1]
		if _, err := s.LogPlan(ctx, other, offsRev); !errors.Is(err, offsetstore.ErrConflict) {
			t.Errorf("LogPlan(1) again = %v, want ErrConflict", err)
		}
		got, err := s.Batch(ctx, "clicks", 1)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, plannedBatch("clicks", 1)) {
			t.Errorf("Batch(1) = %v, want the first plan %v", got, plannedBatch("clicks", 1))
		}
	})

	t.Run("stale offsets revision", func(t *testing.T) {
		newRev, err := s.CommitBatch(ctx, offsetstore.Commit{
			Batch: committedBatch("clicks", 1), BatchRevision: planRev,
			Offsets: offsetsAt(1, 10), OffsetsRevision: offsRev,
		})
		if err != nil {
			t.Fatalf("CommitBatch(1): %v", err)
		}
		if _, err := s.LogPlan(ctx, plannedBatch("clicks", 2), offsRev); !errors.Is(err, offsetstore.ErrConflict) {
			t.Errorf("LogPlan(2) from the offsets before batch 1 = %v, want ErrConflict", err)
		}
		if _, err := s.Batch(ctx, "clicks", 2); !errors.Is(err, offsetstore.ErrNotFound) {
			t.Errorf("Batch(2) after a refused plan error = %v, want ErrNotFound", err)
		}
		if _, err := s.LogPlan(ctx, plannedBatch("clicks", 2), newRev); err != nil {
			t.Errorf("LogPlan(2) from the current offsets = %v, want nil", err)
		}
	})
}

func TestCommitBatch(t *testing.T) {
	s, cli := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	offsRev := initJob(t, ctx, s, "clicks")
	planRev, err := s.LogPlan(ctx, plannedBatch("clicks", 1), offsRev)
	if err != nil {
		t.Fatal(err)
	}

	wantBatch, wantOffs, wantRes := committedBatch("clicks", 1), offsetsAt(1, 10), resultOf("clicks", 1)
	rev, err := s.CommitBatch(ctx, offsetstore.Commit{
		Batch: wantBatch, BatchRevision: planRev,
		Result:  wantRes,
		Offsets: wantOffs, OffsetsRevision: offsRev,
	})
	if err != nil {
		t.Fatalf("CommitBatch = %v, want nil", err)
	}

	gotBatch, err := s.Batch(ctx, "clicks", 1)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(gotBatch, wantBatch) {
		t.Errorf("Batch(1) = %v, want %v", gotBatch, wantBatch)
	}
	gotOffs, err := s.Offsets(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(gotOffs.Value, wantOffs) || gotOffs.ModRevision != rev {
		t.Errorf("Offsets = %v at rev %d, want %v at rev %d", gotOffs.Value, gotOffs.ModRevision, wantOffs, rev)
	}
	gotRes, err := s.Result(ctx, "clicks", 1)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(gotRes, wantRes) {
		t.Errorf("Result(1) = %v, want %v", gotRes, wantRes)
	}

	// One transaction: the four keys share the commit's revision.
	resp, err := cli.Get(ctx, s.Prefix(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var written []string
	for _, kv := range resp.Kvs {
		if kv.ModRevision == rev {
			written = append(written, strings.TrimPrefix(string(kv.Key), s.Prefix()))
		}
	}
	if len(written) != 4 {
		t.Errorf("keys written at the commit revision %d = %q, want the batch, its result, its size entry and the offsets", rev, written)
	}

	t.Run("without result", func(t *testing.T) {
		planRev, err := s.LogPlan(ctx, plannedBatch("clicks", 2), rev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CommitBatch(ctx, offsetstore.Commit{
			Batch: committedBatch("clicks", 2), BatchRevision: planRev,
			Offsets: offsetsAt(2, 20), OffsetsRevision: rev,
		}); err != nil {
			t.Fatalf("CommitBatch(2) = %v, want nil", err)
		}
		if _, err := s.Result(ctx, "clicks", 2); !errors.Is(err, offsetstore.ErrNotFound) {
			t.Errorf("Result(2) error = %v, want ErrNotFound", err)
		}
	})
}

func TestCommitBatchConflict(t *testing.T) {
	s, cli := newStore(t, offsetstore.Options{})
	ctx := testContext(t)

	tests := []struct {
		name string
		// stale turns the good commit of a planned batch 2 into one that must fail.
		stale func(t *testing.T, job string, c *offsetstore.Commit)
	}{
		{
			name:  "stale batch revision",
			stale: func(t *testing.T, job string, c *offsetstore.Commit) { c.BatchRevision-- },
		},
		{
			name:  "stale offsets revision",
			stale: func(t *testing.T, job string, c *offsetstore.Commit) { c.OffsetsRevision-- },
		},
		{
			name: "batch record rewritten by another writer",
			stale: func(t *testing.T, job string, c *offsetstore.Commit) {
				b, err := proto.Marshal(plannedBatch(job, 2))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cli.Put(ctx, fmt.Sprintf("%s%020d", s.BatchesPrefix(job), 2), string(b)); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "batch already committed",
			stale: func(t *testing.T, job string, c *offsetstore.Commit) {
				replay := *c
				replay.Keep = 0
				if _, err := s.CommitBatch(ctx, replay); err != nil {
					t.Fatalf("first CommitBatch(2): %v", err)
				}
				c.Result = resultOf(job, 99)
				c.Offsets = offsetsAt(2, 999)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			job := strings.ReplaceAll(tc.name, " ", "-")
			offsRev := initJob(t, ctx, s, job)
			offsRev = runBatch(t, ctx, s, job, 1, offsRev, 0)
			planRev, err := s.LogPlan(ctx, plannedBatch(job, 2), offsRev)
			if err != nil {
				t.Fatal(err)
			}
			c := offsetstore.Commit{
				Batch: committedBatch(job, 2), BatchRevision: planRev,
				Result:  resultOf(job, 2),
				Offsets: offsetsAt(2, 20), OffsetsRevision: offsRev,
				Keep: 1, // would delete batch 1
			}
			tc.stale(t, job, &c)
			before := takeSnapshot(t, ctx, s, job)
			batch1, err := s.Batch(ctx, job, 1)
			if err != nil {
				t.Fatal(err)
			}

			if _, err := s.CommitBatch(ctx, c); !errors.Is(err, offsetstore.ErrConflict) {
				t.Fatalf("CommitBatch = %v, want ErrConflict", err)
			}
			checkUnchanged(t, ctx, s, job, before)
			if got, err := s.Batch(ctx, job, 1); err != nil || !proto.Equal(got, batch1) {
				t.Errorf("Batch(1) = %v, %v; want it kept: %v", got, err, batch1)
			}
		})
	}
}

func TestFence(t *testing.T) {
	s, cli := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	leaderKey := s.ElectionPrefix() + "me"
	put := func(t *testing.T, v string) {
		t.Helper()
		if _, err := cli.Put(ctx, leaderKey, v); err != nil {
			t.Fatal(err)
		}
	}
	put(t, "me")
	f := s.WithFence(clientv3.Compare(clientv3.Value(leaderKey), "=", "me"))

	// While the fence holds, every write succeeds.
	if err := f.CreateJob(ctx, newJob("clicks")); err != nil {
		t.Fatalf("fenced CreateJob = %v, want nil", err)
	}
	job, err := f.Job(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.UpdateJob(ctx, job.Value, job.ModRevision); err != nil {
		t.Fatalf("fenced UpdateJob = %v, want nil", err)
	}
	if err := f.InitOffsets(ctx, "clicks", offsetsAt(0, 0)); err != nil {
		t.Fatalf("fenced InitOffsets = %v, want nil", err)
	}
	offs, err := f.Offsets(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}
	offsRev := runBatch(t, ctx, f, "clicks", 1, offs.ModRevision, 0)

	// Batch 2 is planned while leading.
	planRev, err := f.LogPlan(ctx, plannedBatch("clicks", 2), offsRev)
	if err != nil {
		t.Fatalf("fenced LogPlan(2) = %v, want nil", err)
	}
	commit2 := offsetstore.Commit{
		Batch: committedBatch("clicks", 2), BatchRevision: planRev,
		Result:  resultOf("clicks", 2),
		Offsets: offsetsAt(2, 20), OffsetsRevision: offsRev,
	}

	for _, lost := range []struct {
		name string
		lose func(t *testing.T)
	}{
		{name: "fence key changed", lose: func(t *testing.T) { put(t, "other") }},
		{name: "fence key deleted", lose: func(t *testing.T) {
			if _, err := cli.Delete(ctx, leaderKey); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(lost.name, func(t *testing.T) {
			lost.lose(t)
			t.Cleanup(func() { put(t, "me") })
			before := takeSnapshot(t, ctx, s, "clicks")
			job, err := s.Job(ctx, "clicks")
			if err != nil {
				t.Fatal(err)
			}

			if _, err := f.CommitBatch(ctx, commit2); !errors.Is(err, offsetstore.ErrConflict) {
				t.Errorf("fenced CommitBatch = %v, want ErrConflict", err)
			}
			if _, err := f.LogPlan(ctx, plannedBatch("clicks", 3), offsRev); !errors.Is(err, offsetstore.ErrConflict) {
				t.Errorf("fenced LogPlan = %v, want ErrConflict", err)
			}
			stopped := proto.Clone(job.Value).(*sluicev1.Job)
			stopped.State = sluicev1.JobState_JOB_STATE_STOPPED
			if err := f.UpdateJob(ctx, stopped, job.ModRevision); !errors.Is(err, offsetstore.ErrConflict) {
				t.Errorf("fenced UpdateJob = %v, want ErrConflict", err)
			}
			if err := f.InitOffsets(ctx, "orders", offsetsAt(0, 0)); !errors.Is(err, offsetstore.ErrConflict) {
				t.Errorf("fenced InitOffsets = %v, want ErrConflict", err)
			}

			checkUnchanged(t, ctx, s, "clicks", before)
			if got, err := s.Job(ctx, "clicks"); err != nil || got.ModRevision != job.ModRevision {
				t.Errorf("Job(clicks) = %v, %v; want it unchanged at rev %d", got, err, job.ModRevision)
			}
			if _, err := s.Offsets(ctx, "orders"); !errors.Is(err, offsetstore.ErrNotFound) {
				t.Errorf("Offsets(orders) error = %v, want ErrNotFound", err)
			}
			// The unfenced store is not affected by WithFence.
			if err := s.InitOffsets(ctx, "unfenced-"+strings.ReplaceAll(lost.name, " ", "-"), offsetsAt(0, 0)); err != nil {
				t.Errorf("unfenced InitOffsets = %v, want nil", err)
			}
		})
	}

	// Leading again, the same commit goes through.
	if _, err := f.CommitBatch(ctx, commit2); err != nil {
		t.Errorf("fenced CommitBatch after regaining the fence = %v, want nil", err)
	}
}

func TestFenceCreateJob(t *testing.T) {
	s, cli := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	leaderKey := s.ElectionPrefix() + "me"
	if _, err := cli.Put(ctx, leaderKey, "other"); err != nil {
		t.Fatal(err)
	}
	f := s.WithFence(clientv3.Compare(clientv3.Value(leaderKey), "=", "me"))
	if err := f.CreateJob(ctx, newJob("clicks")); !errors.Is(err, offsetstore.ErrConflict) {
		t.Errorf("fenced CreateJob without the fence = %v, want ErrConflict", err)
	}
}

func TestCommitBatchKeep(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	rev := initJob(t, ctx, s, "clicks")
	for id := int64(1); id <= 5; id++ {
		rev = runBatch(t, ctx, s, "clicks", id, rev, 2)
	}

	batches, err := s.Batches(ctx, "clicks", 100)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := batchIDs(batches), []int64{5, 4}; !equalIDs(got, want) {
		t.Errorf("Batches() ids = %v, want %v", got, want)
	}
	results, err := s.Results(ctx, "clicks", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resultIDs(results), []int64{4, 5}; !equalIDs(got, want) {
		t.Errorf("Results(0, 0) ids = %v, want %v", got, want)
	}
	for id := int64(1); id <= 3; id++ {
		if _, err := s.Batch(ctx, "clicks", id); !errors.Is(err, offsetstore.ErrNotFound) {
			t.Errorf("Batch(%d) error = %v, want ErrNotFound", id, err)
		}
		if _, err := s.Result(ctx, "clicks", id); !errors.Is(err, offsetstore.ErrNotFound) {
			t.Errorf("Result(%d) error = %v, want ErrNotFound", id, err)
		}
	}
	offs, err := s.Offsets(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}
	if want := offsetsAt(5, 50); !proto.Equal(offs.Value, want) {
		t.Errorf("Offsets = %v, want %v", offs.Value, want)
	}
}

func TestResults(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	rev := initJob(t, ctx, s, "clicks")
	for id := int64(1); id <= 5; id++ {
		rev = runBatch(t, ctx, s, "clicks", id, rev, 0)
	}
	// Another job whose name extends this one's must not leak in.
	rev2 := initJob(t, ctx, s, "clicks-2")
	runBatch(t, ctx, s, "clicks-2", 1, rev2, 0)

	tests := []struct {
		name     string
		from, to int64
		want     []int64
	}{
		{name: "unbounded", from: 0, to: 0, want: []int64{1, 2, 3, 4, 5}},
		{name: "inclusive range", from: 2, to: 4, want: []int64{2, 3, 4}},
		{name: "from only", from: 3, to: 0, want: []int64{3, 4, 5}},
		{name: "to only", from: 0, to: 2, want: []int64{1, 2}},
		{name: "single batch", from: 5, to: 5, want: []int64{5}},
		{name: "to beyond the last batch", from: 4, to: 100, want: []int64{4, 5}},
		{name: "negative from is unbounded", from: -3, to: 2, want: []int64{1, 2}},
		{name: "from beyond the last batch", from: 6, to: 0, want: []int64{}},
		{name: "to below from", from: 4, to: 2, want: []int64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Results(ctx, "clicks", tc.from, tc.to)
			if err != nil {
				t.Fatalf("Results(%d, %d) = %v", tc.from, tc.to, err)
			}
			if ids := resultIDs(got); !equalIDs(ids, tc.want) {
				t.Errorf("Results(%d, %d) ids = %v, want %v", tc.from, tc.to, ids, tc.want)
			}
			for _, r := range got {
				if r.GetJob() != "clicks" {
					t.Errorf("Results(%d, %d) has a result of job %q", tc.from, tc.to, r.GetJob())
				}
			}
		})
	}
}

func TestResultsMaxTo(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	rev := initJob(t, ctx, s, "clicks")
	for id := int64(1); id <= 2; id++ {
		rev = runBatch(t, ctx, s, "clicks", id, rev, 0)
	}
	got, err := s.Results(ctx, "clicks", 1, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	if ids, want := resultIDs(got), []int64{1, 2}; !equalIDs(ids, want) {
		t.Errorf("Results(1, MaxInt64) ids = %v, want %v", ids, want)
	}
}

func TestLastBatch(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	if _, err := s.LastBatch(ctx, "clicks"); !errors.Is(err, offsetstore.ErrNotFound) {
		t.Errorf("LastBatch before any batch error = %v, want ErrNotFound", err)
	}
	offsRev := initJob(t, ctx, s, "clicks")
	var lastRev int64
	for _, id := range []int64{1, 2, 10, 9} { // 10 must sort after 9 and 2
		rev, err := s.LogPlan(ctx, plannedBatch("clicks", id), offsRev)
		if err != nil {
			t.Fatalf("LogPlan(%d): %v", id, err)
		}
		if id == 10 {
			lastRev = rev
		}
	}
	if _, err := s.LogPlan(ctx, plannedBatch("clicks-2", 50), 0); err != nil {
		t.Fatalf("LogPlan(clicks-2, 50): %v", err)
	}

	got, err := s.LastBatch(ctx, "clicks")
	if err != nil {
		t.Fatalf("LastBatch = %v", err)
	}
	if want := plannedBatch("clicks", 10); !proto.Equal(got.Value, want) || got.ModRevision != lastRev {
		t.Errorf("LastBatch = %v at rev %d, want %v at rev %d", got.Value, got.ModRevision, want, lastRev)
	}
	batches, err := s.Batches(ctx, "clicks", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := batchIDs(batches), []int64{10, 9}; !equalIDs(got, want) {
		t.Errorf("Batches(limit 2) ids = %v, want %v", got, want)
	}
}

func TestCommitBatchTooLarge(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{MaxRequestBytes: 1024})
	ctx := testContext(t)
	offsRev := initJob(t, ctx, s, "clicks")
	planRev, err := s.LogPlan(ctx, plannedBatch("clicks", 1), offsRev)
	if err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, ctx, s, "clicks")

	big := resultOf("clicks", 1)
	big.Records[0].Value = []byte(strings.Repeat("x", 2048))
	c := offsetstore.Commit{
		Batch: committedBatch("clicks", 1), BatchRevision: planRev,
		Result:  big,
		Offsets: offsetsAt(1, 10), OffsetsRevision: offsRev,
	}
	if _, err := s.CommitBatch(ctx, c); !errors.Is(err, offsetstore.ErrTooLarge) {
		t.Fatalf("CommitBatch(2 KiB result, 1 KiB limit) = %v, want ErrTooLarge", err)
	}
	checkUnchanged(t, ctx, s, "clicks", before)

	c.Result = resultOf("clicks", 1)
	if _, err := s.CommitBatch(ctx, c); err != nil {
		t.Errorf("CommitBatch(small result, 1 KiB limit) = %v, want nil", err)
	}
}

// TestCommittedBatch: the last committed batch id, read without expanding
// the offsets, packed (many partitions) or plain (few), and ErrNotFound for
// a job without offsets.
func TestCommittedBatch(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	if _, err := s.CommittedBatch(ctx, "none"); !errors.Is(err, offsetstore.ErrNotFound) {
		t.Errorf("CommittedBatch(none) error = %v, want ErrNotFound", err)
	}
	many := &sluicev1.CommittedOffsets{BatchId: 42}
	for p := range int32(1000) {
		many.Offsets = append(many.Offsets, &sluicev1.PartitionOffset{Topic: "t", Partition: p, Offset: int64(p) * 3})
	}
	for name, offs := range map[string]*sluicev1.CommittedOffsets{"plain": offsetsAt(7, 5), "packed": many} {
		if err := s.InitOffsets(ctx, name, offs); err != nil {
			t.Fatal(err)
		}
		id, err := s.CommittedBatch(ctx, name)
		if err != nil || id != offs.GetBatchId() {
			t.Errorf("CommittedBatch(%s) = %d, %v, want %d", name, id, err, offs.GetBatchId())
		}
		full, err := s.Offsets(ctx, name)
		if err != nil || full.Value.GetBatchId() != id {
			t.Errorf("Offsets(%s) batch %d, %v; CommittedBatch said %d", name, full.Value.GetBatchId(), err, id)
		}
	}
}
