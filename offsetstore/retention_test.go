package offsetstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// sizedResult is batch id's result, padded so that it encodes to exactly n bytes.
func sizedResult(t *testing.T, job string, id int64, n int) *sluicev1.BatchResult {
	t.Helper()
	r := &sluicev1.BatchResult{Job: job, BatchId: id, Records: []*sluicev1.OutputRecord{{Topic: "t"}}}
	base := proto.Size(r)
	// Length prefixes grow by a byte at some sizes: a one-byte key fills in.
	for _, key := range []string{"", "k"} {
		r.Records[0].Key = []byte(key)
		for pad := max(n-base-16, 0); pad <= n; pad++ {
			r.Records[0].Value = []byte(strings.Repeat("x", pad))
			if proto.Size(r) == n {
				return r
			}
		}
	}
	t.Fatalf("cannot make a result of %d bytes", n)
	return nil
}

// commitSized plans and commits batch id with a result of size bytes (no
// result when size is 0) and returns the offsets' new revision.
func commitSized(t *testing.T, ctx context.Context, s *offsetstore.Store, job string, id, offsRev int64, size int, keep, keepBytes int64) int64 {
	t.Helper()
	planRev, err := s.LogPlan(ctx, plannedBatch(job, id), offsRev)
	if err != nil {
		t.Fatalf("LogPlan(%s, %d): %v", job, id, err)
	}
	c := offsetstore.Commit{
		Batch: committedBatch(job, id), BatchRevision: planRev,
		Offsets: offsetsAt(id, id*10), OffsetsRevision: offsRev,
		Keep: keep, KeepBytes: keepBytes,
	}
	if size > 0 {
		c.Result = sizedResult(t, job, id, size)
	}
	rev, err := s.CommitBatch(ctx, c)
	if err != nil {
		t.Fatalf("CommitBatch(%s, %d): %v", job, id, err)
	}
	return rev
}

// retainedIDs lists the ids of a job's retained batches, oldest first, and
// the total encoded size of its retained results, read behind the store's back.
func retainedIDs(t *testing.T, ctx context.Context, s *offsetstore.Store, cli *clientv3.Client, job string) ([]int64, []int64, int64) {
	t.Helper()
	bs, err := s.Batches(ctx, job, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var batches []int64
	for i := len(bs) - 1; i >= 0; i-- {
		batches = append(batches, bs[i].GetId())
	}
	resp, err := cli.Get(ctx, s.Prefix()+"results/"+job+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var results []int64
	var bytes int64
	for _, kv := range resp.Kvs {
		r := &sluicev1.BatchResult{}
		if err := proto.Unmarshal(kv.Value, r); err != nil {
			t.Fatal(err)
		}
		results = append(results, r.GetBatchId())
		bytes += int64(len(kv.Value))
	}
	return batches, results, bytes
}

func ids(from, to int64) []int64 {
	var out []int64
	for id := from; id <= to; id++ {
		out = append(out, id)
	}
	return out
}

func TestCommitBatchKeepBytes(t *testing.T) {
	tests := []struct {
		name        string
		sizes       []int // result size of batches 1..n; 0 is no result
		keep        int64
		keepBytes   int64
		wantBatches []int64
		wantResults []int64
	}{
		{
			name:        "bytes bound the results",
			sizes:       []int{100, 100, 100, 100, 100, 100},
			keep:        1000,
			keepBytes:   300,
			wantBatches: ids(4, 6),
			wantResults: ids(4, 6),
		},
		{
			name:        "just under the bound keeps one more",
			sizes:       []int{100, 100, 100, 100, 100, 100},
			keep:        1000,
			keepBytes:   299,
			wantBatches: ids(5, 6),
			wantResults: ids(5, 6),
		},
		{
			name:        "count binds first",
			sizes:       []int{100, 100, 100, 100, 100, 100},
			keep:        2,
			keepBytes:   1000,
			wantBatches: ids(5, 6),
			wantResults: ids(5, 6),
		},
		{
			name:        "batches without results are pruned with their neighbours",
			sizes:       []int{100, 0, 0, 100, 0, 100, 0, 100, 0},
			keep:        1000,
			keepBytes:   200,
			wantBatches: ids(5, 9),
			wantResults: []int64{6, 8},
		},
		{
			name:        "a result larger than the bound keeps only itself",
			sizes:       []int{100, 100, 100, 5000},
			keep:        1000,
			keepBytes:   1000,
			wantBatches: ids(4, 4),
			wantResults: ids(4, 4),
		},
		{
			name:        "no byte bound",
			sizes:       []int{100, 100, 100, 100},
			keep:        1000,
			wantBatches: ids(1, 4),
			wantResults: ids(1, 4),
		},
		{
			name:        "uneven sizes",
			sizes:       []int{500, 30, 30, 30, 400, 30},
			keep:        1000,
			keepBytes:   470,
			wantBatches: ids(4, 6),
			wantResults: ids(4, 6),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, cli := newStore(t, offsetstore.Options{Prefix: "/t-" + t.Name() + "/"})
			ctx := testContext(t)
			rev := initJob(t, ctx, s, "clicks")
			for i, size := range tc.sizes {
				rev = commitSized(t, ctx, s, "clicks", int64(i+1), rev, size, tc.keep, tc.keepBytes)
			}
			batches, results, bytes := retainedIDs(t, ctx, s, cli, "clicks")
			if !equalIDs(batches, tc.wantBatches) {
				t.Errorf("retained batches %v, want %v", batches, tc.wantBatches)
			}
			if !equalIDs(results, tc.wantResults) {
				t.Errorf("retained results %v, want %v", results, tc.wantResults)
			}
			if got, err := s.RetainedBytes(ctx, "clicks"); err != nil || got != bytes {
				t.Errorf("RetainedBytes = %d, %v; want %d (the results' encoded size)", got, err, bytes)
			}
			if tc.keepBytes > 0 && len(results) > 1 && bytes > tc.keepBytes {
				t.Errorf("retained %d bytes of results, above the %d-byte bound", bytes, tc.keepBytes)
			}
		})
	}
}

// TestCommitBatchKeepBytesBacklog: a bound lowered under a long history is
// reached over several commits, each pruning a bounded window, so that no
// commit grows with the history.
func TestCommitBatchKeepBytesBacklog(t *testing.T) {
	s, cli := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	rev := initJob(t, ctx, s, "clicks")
	const n = 150
	for id := int64(1); id <= n; id++ {
		rev = commitSized(t, ctx, s, "clicks", id, rev, 100, 10000, 0)
	}
	// Now 1,000 bytes: 140 results must go, at most 64 per commit.
	rev = commitSized(t, ctx, s, "clicks", n+1, rev, 100, 10000, 1000)
	batches, _, _ := retainedIDs(t, ctx, s, cli, "clicks")
	if want := ids(65, n+1); !equalIDs(batches, want) {
		t.Fatalf("after one commit under the lowered bound: batches %d..%d, want %d..%d (a window of 64 pruned)",
			batches[0], batches[len(batches)-1], want[0], want[len(want)-1])
	}
	for id := int64(n + 2); id <= n+3; id++ {
		rev = commitSized(t, ctx, s, "clicks", id, rev, 100, 10000, 1000)
	}
	batches, results, bytes := retainedIDs(t, ctx, s, cli, "clicks")
	if want := ids(n-6, n+3); !equalIDs(batches, want) || !equalIDs(results, want) {
		t.Errorf("after three commits: batches %v results %v, want %v", batches, results, want)
	}
	if bytes != 1000 {
		t.Errorf("retained %d bytes, want 1000", bytes)
	}
}

// TestCommitBatchKeepBytesLegacy: results committed before the size index
// existed are not counted, and go by count.
func TestCommitBatchKeepBytesLegacy(t *testing.T) {
	s, cli := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	rev := initJob(t, ctx, s, "clicks")
	for id := int64(1); id <= 4; id++ {
		rev = commitSized(t, ctx, s, "clicks", id, rev, 100, 0, 0)
	}
	if _, err := cli.Delete(ctx, s.Prefix()+"retained/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	s = offsetstore.New(cli, offsetstore.Options{Prefix: s.Prefix()}) // the upgraded coordinator
	for id := int64(5); id <= 8; id++ {
		rev = commitSized(t, ctx, s, "clicks", id, rev, 100, 6, 250)
	}
	batches, _, _ := retainedIDs(t, ctx, s, cli, "clicks")
	if want := ids(7, 8); !equalIDs(batches, want) {
		t.Errorf("batches %v, want %v", batches, want)
	}
}

func TestDeleteJobDeletesEverything(t *testing.T) {
	s, cli := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	if err := s.CreateJob(ctx, newJob("clicks")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJob(ctx, newJob("clicks-2")); err != nil {
		t.Fatal(err)
	}
	rev := initJob(t, ctx, s, "clicks")
	rev2 := initJob(t, ctx, s, "clicks-2")
	for id := int64(1); id <= 3; id++ {
		rev = commitSized(t, ctx, s, "clicks", id, rev, 100, 10, 1000)
		rev2 = commitSized(t, ctx, s, "clicks-2", id, rev2, 100, 10, 1000)
	}
	if err := s.DeleteJob(ctx, "clicks"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, s.Prefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), s.Prefix())
		if strings.Contains(k, "clicks/") || k == "jobs/clicks" || k == "offsets/clicks" {
			left = append(left, k)
		}
	}
	if len(left) > 0 {
		t.Errorf("keys of the deleted job left: %v", left)
	}
	if got, err := s.RetainedBytes(ctx, "clicks-2"); err != nil || got == 0 {
		t.Errorf("the other job's index: %d bytes, %v", got, err)
	}
}

func TestRetentionAndEachResult(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	r, err := s.Retention(ctx, "clicks")
	if err != nil || r.LastCommitted != 0 || r.OldestRetained != 0 || r.Pruned(0, 0) {
		t.Fatalf("Retention of a job without batches = %+v, %v; want nothing committed, nothing pruned", r, err)
	}
	rev := initJob(t, ctx, s, "clicks")
	for id := int64(1); id <= 30; id++ {
		size := 100
		if id%3 == 0 {
			size = 0
		}
		rev = commitSized(t, ctx, s, "clicks", id, rev, size, 20, 0)
	}
	if _, err := s.LogPlan(ctx, plannedBatch("clicks", 31), rev); err != nil {
		t.Fatal(err)
	}
	r, err = s.Retention(ctx, "clicks")
	if err != nil || r.LastCommitted != 30 || r.OldestRetained != 11 || r.Revision == 0 {
		t.Fatalf("Retention = %+v, %v; want last committed 30, oldest retained 11", r, err)
	}
	prunedTests := []struct {
		from, to int64
		want     bool
	}{
		{0, 0, true}, {1, 10, true}, {10, 12, true}, {11, 0, false}, {11, 30, false},
		{20, 25, false}, {31, 0, false}, {40, 50, false}, {5, 3, false},
	}
	for _, tc := range prunedTests {
		if got := r.Pruned(tc.from, tc.to); got != tc.want {
			t.Errorf("Pruned(%d, %d) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}

	// Commits after the snapshot are not seen at its revision.
	commitAt := r.Revision
	var got []int64
	err = s.EachResult(ctx, "clicks", 0, 0, commitAt, func(res *sluicev1.BatchResult, size int) bool {
		if size != 100 {
			t.Errorf("result %d size %d, want 100", res.GetBatchId(), size)
		}
		got = append(got, res.GetBatchId())
		return true
	})
	want := []int64{11, 13, 14, 16, 17, 19, 20, 22, 23, 25, 26, 28, 29}
	if err != nil || !equalIDs(got, want) {
		t.Errorf("EachResult(all) = %v, %v; want %v", got, err, want)
	}
	got = nil
	err = s.EachResult(ctx, "clicks", 14, 22, 0, func(res *sluicev1.BatchResult, _ int) bool {
		got = append(got, res.GetBatchId())
		return len(got) < 4
	})
	if want := []int64{14, 16, 17, 19}; err != nil || !equalIDs(got, want) {
		t.Errorf("EachResult(14..22, stop after 4) = %v, %v; want %v", got, err, want)
	}
}

// TestEachResultChunks reads more results than one chunk holds, of sizes
// that make the chunk size change, at a fixed revision.
func TestEachResultChunks(t *testing.T) {
	s, _ := newStore(t, offsetstore.Options{})
	ctx := testContext(t)
	rev := initJob(t, ctx, s, "clicks")
	for id := int64(1); id <= 300; id++ {
		size := 50
		if id%50 == 0 {
			size = 300 << 10
		}
		rev = commitSized(t, ctx, s, "clicks", id, rev, size, 0, 0)
	}
	r, err := s.Retention(ctx, "clicks")
	if err != nil {
		t.Fatal(err)
	}
	rev = commitSized(t, ctx, s, "clicks", 301, rev, 50, 0, 0)
	var n int
	var last int64
	err = s.EachResult(ctx, "clicks", 0, 0, r.Revision, func(res *sluicev1.BatchResult, _ int) bool {
		n++
		if res.GetBatchId() != last+1 {
			t.Errorf("result %d after %d", res.GetBatchId(), last)
		}
		last = res.GetBatchId()
		return true
	})
	if err != nil || n != 300 {
		t.Errorf("EachResult = %d results, %v; want 300 (batch 301 committed after the revision)", n, err)
	}
}

func TestResetOffsetsGuards(t *testing.T) {
	newIncarnation := func(v *sluicev1.Job, inc string) *sluicev1.Job {
		j := proto.Clone(v).(*sluicev1.Job)
		j.Incarnation = inc
		return j
	}
	type state struct {
		s          *offsetstore.Store
		cli        *clientv3.Client
		job        offsetstore.Versioned[*sluicev1.Job]
		offsRev    int64
		plannedID  int64
		plannedRev int64
	}
	// setup: job "clicks" stopped after batch 2, with batch 3 planned.
	setup := func(t *testing.T, ctx context.Context) state {
		s, cli := newStore(t, offsetstore.Options{Prefix: "/t-" + t.Name() + "/"})
		j := newJob("clicks")
		j.State = sluicev1.JobState_JOB_STATE_STOPPED
		j.Incarnation = "0123456789abcdef"
		if err := s.CreateJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		rev := initJob(t, ctx, s, "clicks")
		rev = runBatch(t, ctx, s, "clicks", 1, rev, 0)
		rev = runBatch(t, ctx, s, "clicks", 2, rev, 0)
		planRev, err := s.LogPlan(ctx, plannedBatch("clicks", 3), rev)
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.Job(ctx, "clicks")
		if err != nil {
			t.Fatal(err)
		}
		return state{s: s, cli: cli, job: v, offsRev: rev, plannedID: 3, plannedRev: planRev}
	}
	reset := func(st state) offsetstore.Reset {
		return offsetstore.Reset{
			Job: newIncarnation(st.job.Value, "fedcba9876543210"), JobRevision: st.job.ModRevision,
			Offsets: offsetsAt(2, 0), OffsetsRevision: st.offsRev,
			PlannedID: st.plannedID, PlannedRevision: st.plannedRev, NextBatchID: st.plannedID + 1,
		}
	}
	tests := []struct {
		name string
		// meanwhile changes etcd between the reads and the reset.
		meanwhile func(t *testing.T, ctx context.Context, st state)
	}{
		{
			name: "a batch committed meanwhile",
			meanwhile: func(t *testing.T, ctx context.Context, st state) {
				if _, err := st.s.CommitBatch(ctx, offsetstore.Commit{
					Batch: committedBatch("clicks", 3), BatchRevision: st.plannedRev,
					Offsets: offsetsAt(3, 30), OffsetsRevision: st.offsRev,
				}); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "only the offsets changed meanwhile",
			meanwhile: func(t *testing.T, ctx context.Context, st state) {
				val, _ := proto.Marshal(offsetsAt(2, 21))
				if _, err := st.cli.Put(ctx, st.s.Prefix()+"offsets/clicks", string(val)); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "the offsets were rewritten meanwhile (another reset)",
			meanwhile: func(t *testing.T, ctx context.Context, st state) {
				if err := st.s.ResetOffsets(ctx, offsetstore.Reset{
					Job: newIncarnation(st.job.Value, "1111111111111111"), JobRevision: st.job.ModRevision,
					Offsets: offsetsAt(2, 5), OffsetsRevision: st.offsRev,
				}); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "the job was resumed meanwhile",
			meanwhile: func(t *testing.T, ctx context.Context, st state) {
				j := proto.Clone(st.job.Value).(*sluicev1.Job)
				j.State = sluicev1.JobState_JOB_STATE_RUNNING
				if err := st.s.UpdateJob(ctx, j, st.job.ModRevision); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "the planned batch was rewritten meanwhile",
			meanwhile: func(t *testing.T, ctx context.Context, st state) {
				b := plannedBatch("clicks", 3)
				b.Ranges = b.Ranges[:1]
				if _, err := st.s.UpdatePlan(ctx, b, st.plannedRev); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			st := setup(t, ctx)
			tc.meanwhile(t, ctx, st)
			before := takeSnapshot(t, ctx, st.s, "clicks")
			jobBefore, _ := st.s.Job(ctx, "clicks")
			err := st.s.ResetOffsets(ctx, reset(st))
			if !errors.Is(err, offsetstore.ErrConflict) {
				t.Fatalf("ResetOffsets after %s = %v, want ErrConflict", tc.name, err)
			}
			if !strings.Contains(err.Error(), "reset offsets of clicks") {
				t.Errorf("error %q does not name the job", err)
			}
			checkUnchanged(t, ctx, st.s, "clicks", before)
			if j, _ := st.s.Job(ctx, "clicks"); !proto.Equal(j.Value, jobBefore.Value) {
				t.Errorf("job record = %v, want unchanged %v", j.Value, jobBefore.Value)
			}
		})
	}

	t.Run("a batch planned meanwhile", func(t *testing.T) {
		ctx := testContext(t)
		s, _ := newStore(t, offsetstore.Options{Prefix: "/t-" + t.Name() + "/"})
		j := newJob("clicks")
		j.State = sluicev1.JobState_JOB_STATE_STOPPED
		if err := s.CreateJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		rev := initJob(t, ctx, s, "clicks")
		rev = runBatch(t, ctx, s, "clicks", 1, rev, 0)
		v, _ := s.Job(ctx, "clicks")
		// Read: batch 1 is the last; then a runner still going plans batch 2.
		if _, err := s.LogPlan(ctx, plannedBatch("clicks", 2), rev); err != nil {
			t.Fatal(err)
		}
		err := s.ResetOffsets(ctx, offsetstore.Reset{
			Job: newIncarnation(v.Value, "fedcba9876543210"), JobRevision: v.ModRevision,
			Offsets: offsetsAt(1, 0), OffsetsRevision: rev, NextBatchID: 2,
		})
		if !errors.Is(err, offsetstore.ErrConflict) {
			t.Fatalf("ResetOffsets with batch 2 planned meanwhile = %v, want ErrConflict", err)
		}
		if b, err := s.Batch(ctx, "clicks", 2); err != nil || b.GetState() != sluicev1.BatchState_BATCH_STATE_PLANNED {
			t.Errorf("batch 2 = %v, %v; want it still planned", b, err)
		}
	})

	t.Run("unchanged: offsets, record and planned batch replaced together", func(t *testing.T) {
		ctx := testContext(t)
		st := setup(t, ctx)
		if err := st.s.ResetOffsets(ctx, reset(st)); err != nil {
			t.Fatalf("ResetOffsets = %v", err)
		}
		offs, err := st.s.Offsets(ctx, "clicks")
		if err != nil || !proto.Equal(offs.Value, offsetsAt(2, 0)) {
			t.Errorf("offsets = %v, %v; want %v", offs.Value, err, offsetsAt(2, 0))
		}
		if j, _ := st.s.Job(ctx, "clicks"); j.Value.GetIncarnation() != "fedcba9876543210" {
			t.Errorf("incarnation = %q, want the new one", j.Value.GetIncarnation())
		}
		if _, err := st.s.Batch(ctx, "clicks", 3); !errors.Is(err, offsetstore.ErrNotFound) {
			t.Errorf("planned batch 3 after the reset: %v, want ErrNotFound", err)
		}
	})

	t.Run("a job without offsets yet", func(t *testing.T) {
		ctx := testContext(t)
		s, _ := newStore(t, offsetstore.Options{Prefix: "/t-" + t.Name() + "/"})
		j := newJob("clicks")
		if err := s.CreateJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		v, _ := s.Job(ctx, "clicks")
		r := offsetstore.Reset{Job: newIncarnation(v.Value, "fedcba9876543210"), JobRevision: v.ModRevision, Offsets: offsetsAt(0, 7), NextBatchID: 1}
		// The runner resolved the starting offsets meanwhile.
		if err := s.InitOffsets(ctx, "clicks", offsetsAt(0, 0)); err != nil {
			t.Fatal(err)
		}
		if err := s.ResetOffsets(ctx, r); !errors.Is(err, offsetstore.ErrConflict) {
			t.Fatalf("ResetOffsets after the offsets were created = %v, want ErrConflict", err)
		}
		if err := s.DeleteJob(ctx, "clicks"); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		v, _ = s.Job(ctx, "clicks")
		r.JobRevision = v.ModRevision
		if err := s.ResetOffsets(ctx, r); err != nil {
			t.Fatalf("ResetOffsets of a job without offsets = %v", err)
		}
		if offs, err := s.Offsets(ctx, "clicks"); err != nil || !proto.Equal(offs.Value, offsetsAt(0, 7)) {
			t.Errorf("offsets = %v, %v", offs.Value, err)
		}
	})
}

// countingKV counts transactions.
type countingKV struct {
	clientv3.KV
	mu   sync.Mutex
	txns int
}

func (c *countingKV) Txn(ctx context.Context) clientv3.Txn {
	c.mu.Lock()
	c.txns++
	c.mu.Unlock()
	return c.KV.Txn(ctx)
}

// TestCommitBatchSizeWindowCached: a commit reads the size index only when
// its cached window is stale (another store committed) or running low; the
// pruning is the same as with fresh reads.
func TestCommitBatchSizeWindowCached(t *testing.T) {
	for _, keepBytes := range []int64{3000, 9000} { // 30 results: the window holds all; 90: it does not
		t.Run(fmt.Sprint(keepBytes), func(t *testing.T) {
			_, cli := newStore(t, offsetstore.Options{})
			ctx := testContext(t)
			prefix := "/t-" + strings.ReplaceAll(t.Name(), "/", "_") + "/"
			kv := &countingKV{KV: cli.KV}
			s := offsetstore.New(kv, offsetstore.Options{Prefix: prefix})
			other := offsetstore.New(cli, offsetstore.Options{Prefix: prefix}) // another coordinator
			rev := initJob(t, ctx, s, "clicks")
			const n = 300
			keep := keepBytes / 100
			for id := int64(1); id <= n; id++ {
				store := s
				if id%50 == 0 {
					store = other // s's window is stale after this
				}
				rev = commitSized(t, ctx, store, "clicks", id, rev, 100, 1000, keepBytes)
				_, results, bytes := retainedIDs(t, ctx, s, cli, "clicks")
				if want := ids(max(id-keep+1, 1), id); !equalIDs(results, want) || bytes > keepBytes {
					t.Fatalf("after batch %d: results %v (%d bytes), want %v", id, results, bytes, want)
				}
			}
			// Per batch through s: a plan and a commit; the size index is
			// read only after the other store's commits and when the
			// window runs low.
			kv.mu.Lock()
			txns := kv.txns
			kv.mu.Unlock()
			through := n - n/50
			extra := txns - 2*through - 1 // and InitOffsets
			t.Logf("%d commits through the store: %d reads of the size index", through, extra)
			if extra < 0 || extra > n/50+n/16+1 {
				t.Errorf("%d reads of the size index for %d commits, want at most %d", extra, through, n/50+n/16+1)
			}
		})
	}
}
