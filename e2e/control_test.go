package e2e

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// batchSummary is what a user sees of a job's batches: ids and states.
func batchSummary(bs []*sluicev1.Batch) string {
	var parts []string
	for _, b := range bs {
		parts = append(parts, fmt.Sprintf("%d:%s", b.GetId(), strings.TrimPrefix(b.GetState().String(), "BATCH_STATE_")))
	}
	return strings.Join(parts, " ")
}

// TestStopResume stops a job while records stream in: it is STOPPED, commits
// and plans nothing while stopped though records keep coming, and after
// Resume goes on from its committed offsets; the counts over all batches
// equal the ground truth exactly and the ranges tile every partition.
func TestStopResume(t *testing.T) {
	const topic, parts = "pausable", 4
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	s := newStream()
	s.produce(t, tc.Brokers, topic, parts, 3000, 0)
	spec := countJob("stop-resume", tc.Brokers, topic)
	spec.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 300}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatalf("submit: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.produce(t, tc.Brokers, topic, parts, 3000, 2000)
	}()
	waitJob(t, tc.Client, spec.GetName(), 30*time.Second, "third batch", func(j *sluicev1.Job) bool { return j.GetLastBatchId() >= 3 })

	j, err := tc.Client.Stop(context.Background(), spec.GetName())
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	if j.GetState() != sluicev1.JobState_JOB_STATE_STOPPED {
		t.Fatalf("Stop() returned state %v, want STOPPED", j.GetState())
	}
	// A commit that had started when the stop came may still land: wait for
	// the batches to be quiet for half a second first.
	var before []*sluicev1.Batch
	var quietSince time.Time
	for deadline := time.Now().Add(20 * time.Second); ; {
		bs := batchesAsc(t, tc.Client, spec.GetName())
		if before == nil || batchSummary(bs) != batchSummary(before) {
			before, quietSince = bs, time.Now()
		} else if time.Since(quietSince) > 500*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("batches keep changing after the stop: %s", batchSummary(bs))
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopped, err := tc.Client.Job(context.Background(), spec.GetName())
	if err != nil || stopped.GetState() != sluicev1.JobState_JOB_STATE_STOPPED {
		t.Fatalf("GetJob after stop: %v, %v", stopped.GetState(), err)
	}
	offsAtStop := committed(t, tc.Client, spec.GetName())

	// Records keep arriving; nothing moves for over a second.
	s.produce(t, tc.Brokers, topic, parts, 1000, 0)
	for end := time.Now().Add(1200 * time.Millisecond); time.Now().Before(end); {
		j, err := tc.Client.Job(context.Background(), spec.GetName())
		if err != nil {
			t.Fatal(err)
		}
		if j.GetLastBatchId() != stopped.GetLastBatchId() || j.GetState() != sluicev1.JobState_JOB_STATE_STOPPED {
			t.Fatalf("while stopped: last batch %d state %v, want %d STOPPED", j.GetLastBatchId(), j.GetState(), stopped.GetLastBatchId())
		}
		if bs := batchesAsc(t, tc.Client, spec.GetName()); batchSummary(bs) != batchSummary(before) {
			t.Fatalf("while stopped the batches changed: %s, were %s", batchSummary(bs), batchSummary(before))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := committed(t, tc.Client, spec.GetName()); !maps.Equal(got, offsAtStop) {
		t.Fatalf("committed offsets moved while stopped: %v, were %v", got, offsAtStop)
	}
	lag, err := tc.Client.Offsets(context.Background(), spec.GetName())
	if err != nil {
		t.Fatal(err)
	}
	var totalLag int64
	for _, p := range lag.GetPartitions() {
		totalLag += p.GetLag()
	}
	if totalLag < 1000 {
		t.Errorf("lag while stopped = %d, want at least the 1000 records produced meanwhile", totalLag)
	}
	last := before[len(before)-1]

	r, err := tc.Client.Resume(context.Background(), spec.GetName())
	if err != nil || r.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("resume: %v, %v", r.GetState(), err)
	}
	wg.Wait()
	batches := verifyExact(t, tc.Client, spec.GetName(), s, 60*time.Second)
	if last.GetState() == sluicev1.BatchState_BATCH_STATE_PLANNED {
		// The batch abandoned by the stop is re-run with the same ranges.
		if b := batches[last.GetId()-1]; fmt.Sprint(b.GetRanges()) != fmt.Sprint(last.GetRanges()) {
			t.Errorf("batch %d re-run with ranges %v, planned %v", b.GetId(), b.GetRanges(), last.GetRanges())
		}
	}
	first := batches[stopped.GetLastBatchId()] // the first batch committed after the resume
	for _, rg := range first.GetRanges() {
		k := fmt.Sprintf("%s/%d", rg.GetTopic(), rg.GetPartition())
		if rg.GetFromOffset() != offsAtStop[k] {
			t.Errorf("first batch after the resume reads %s from %d, committed was %d", k, rg.GetFromOffset(), offsAtStop[k])
		}
	}
	t.Logf("stopped after batch %d (last batch %s), lag %d while stopped; %d batches in all, %d records exact",
		stopped.GetLastBatchId(), last.GetState(), totalLag, len(batches), s.n)
}

// TestResetOffsets moves a stopped job's offsets: to earliest (the batches
// after the reset count everything again), latest, explicit offsets with
// the others at earliest or latest, and a timestamp; and refuses a running
// job, an unknown job and a topic that is not the job's.
func TestResetOffsets(t *testing.T) {
	const topic, parts = "rewind", 4
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	pr := tc.producer()
	l := newLedger(topic, parts)
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
	l.produce(t, pr, 2000, func(i int) time.Time { // 250 per partition at T0, 250 at T0+1h
		if i < 1000 {
			return t0
		}
		return t0.Add(time.Hour)
	})
	ends := l.ends()
	all := l.counts(nil)
	spec := countJob("reset-me", tc.Brokers, topic)
	spec.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 500}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatalf("submit: %v", err)
	}
	tc.waitOffsets(spec.GetName(), ends, 30*time.Second)
	earliest := &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}}
	latest := &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_LATEST}}

	_, err := tc.Client.ResetOffsets(context.Background(), spec.GetName(), earliest)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("reset of a running job: code %v (%v), want FailedPrecondition", status.Code(err), err)
	}
	stop := func() {
		t.Helper()
		if j, err := tc.Client.Stop(context.Background(), spec.GetName()); err != nil || j.GetState() != sluicev1.JobState_JOB_STATE_STOPPED {
			t.Fatalf("stop: %v, %v", j.GetState(), err)
		}
	}
	reset := func(to *sluicev1.StartingOffsets, want map[string]int64) {
		t.Helper()
		offs, err := tc.Client.ResetOffsets(context.Background(), spec.GetName(), to)
		if err != nil {
			t.Fatalf("reset to %v: %v", to, err)
		}
		if got := poMap(offs); !maps.Equal(got, want) {
			t.Fatalf("reset to %v answered %v, want %v", to, got, want)
		}
		if got := committed(t, tc.Client, spec.GetName()); !maps.Equal(got, want) {
			t.Fatalf("GetOffsets after reset to %v: %v, want %v", to, got, want)
		}
	}
	stop()
	j, _ := tc.Client.Job(context.Background(), spec.GetName())
	beforeReset := j.GetLastBatchId()

	// Earliest: everything is counted again by the batches after the reset.
	reset(earliest, l.uniform(0))
	if j, _ := tc.Client.Job(context.Background(), spec.GetName()); j.GetLastBatchId() != beforeReset || j.GetState() != sluicev1.JobState_JOB_STATE_STOPPED {
		t.Errorf("after the reset: last batch %d state %v, want %d STOPPED", j.GetLastBatchId(), j.GetState(), beforeReset)
	}
	if _, err := tc.Client.Resume(context.Background(), spec.GetName()); err != nil {
		t.Fatalf("resume: %v", err)
	}
	tc.waitOffsets(spec.GetName(), ends, 30*time.Second)
	if got := mergedFrom(t, tc.Client, spec.GetName(), beforeReset+1); !maps.Equal(got, all) {
		t.Fatalf("counts of the batches after the reset to earliest:\n got %v\nwant %v", got, all)
	}
	twice := map[string]int64{}
	for k, v := range all {
		twice[k] = 2 * v
	}
	if got := tc.mergedCounts(spec.GetName()); !maps.Equal(got, twice) {
		t.Fatalf("counts over all batches after one rewind:\n got %v\nwant twice the ground truth %v", got, twice)
	}
	checkTiles(t, batchesAsc(t, tc.Client, spec.GetName())[beforeReset:], l.uniform(0), ends)
	j, _ = tc.Client.Job(context.Background(), spec.GetName())
	afterEarliest := j.GetLastBatchId()
	t.Logf("reset to earliest after batch %d: batches %d..%d counted all %d records again", beforeReset, beforeReset+1, afterEarliest, sumCounts(all))

	// Latest, explicit (others earliest, then latest), timestamp.
	stop()
	reset(latest, ends)
	reset(&sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{Explicit: &sluicev1.ExplicitOffsets{
		Offsets: []*sluicev1.PartitionOffset{{Topic: topic, Partition: 1, Offset: 123}},
	}}}, map[string]int64{"rewind/0": 0, "rewind/1": 123, "rewind/2": 0, "rewind/3": 0})
	reset(&sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{Explicit: &sluicev1.ExplicitOffsets{
		Offsets: []*sluicev1.PartitionOffset{{Topic: topic, Partition: 1, Offset: 123}},
		Others:  sluicev1.StartPosition_START_POSITION_LATEST,
	}}}, map[string]int64{"rewind/0": 500, "rewind/1": 123, "rewind/2": 500, "rewind/3": 500})
	reset(&sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Timestamp{Timestamp: timestamppb.New(t0.Add(30 * time.Minute))}}, l.uniform(250))
	if _, err := tc.Client.Resume(context.Background(), spec.GetName()); err != nil {
		t.Fatalf("resume: %v", err)
	}
	tc.waitOffsets(spec.GetName(), ends, 30*time.Second)
	secondHalf := l.counts(func(_ int32, off int64) bool { return off >= 250 })
	if got := mergedFrom(t, tc.Client, spec.GetName(), afterEarliest+1); !maps.Equal(got, secondHalf) {
		t.Fatalf("counts after the reset to T0+30min:\n got %v\nwant the second half %v", got, secondHalf)
	}
	checkTiles(t, batchesAsc(t, tc.Client, spec.GetName())[afterEarliest:], l.uniform(250), ends)

	// Refused resets.
	_, err = tc.Client.ResetOffsets(context.Background(), "no-such-job", earliest)
	if status.Code(err) != codes.NotFound {
		t.Errorf("reset of an unknown job: code %v (%v), want NotFound", status.Code(err), err)
	}
	stop()
	_, err = tc.Client.ResetOffsets(context.Background(), spec.GetName(), &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{Explicit: &sluicev1.ExplicitOffsets{
		Offsets: []*sluicev1.PartitionOffset{{Topic: "not-mine", Partition: 0, Offset: 5}},
	}}})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("reset to another topic: code %v (%v), want InvalidArgument", st.Code(), err)
	}
	field := violatedField(st)
	if field != "to.explicit.offsets[0].topic" || !strings.Contains(st.Message(), "not-mine") {
		t.Errorf("reset to another topic: field %q, message %q; want to.explicit.offsets[0].topic naming not-mine", field, st.Message())
	}
	if got := committed(t, tc.Client, spec.GetName()); !maps.Equal(got, ends) {
		t.Errorf("a refused reset moved the offsets to %v", got)
	}
	t.Logf("reset to T0+30min after batch %d: counted %d records (the second half)", afterEarliest, sumCounts(secondHalf))
}

// TestJobFailsAfterAttempts: a filter that cannot evaluate a record (json.x
// on values that are not JSON) under the default FAIL policy fails the task
// on every attempt; after limits.max_task_attempts (2) the job is FAILED
// with a message naming the record's topic/partition/offset and the step's
// field. The same job with RECORD_ERROR_POLICY_SKIP commits every record as
// failed.
func TestJobFailsAfterAttempts(t *testing.T) {
	const topic, parts = "notjson", 2
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	l := newLedger(topic, parts)
	l.produce(t, tc.producer(), 100, nil) // values "record i": not JSON
	spec := func(name string, policy sluicev1.RecordErrorPolicy) *sluicev1.JobSpec {
		s := countJob(name, tc.Brokers, topic)
		s.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "json.x > 1"}}}
		s.Limits = &sluicev1.Limits{MaxTaskAttempts: 2, TaskTimeout: durationpb.New(20 * time.Second)}
		s.OnRecordError = policy
		return s
	}
	failing := spec("fails", sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_UNSPECIFIED)
	skipping := spec("skips", sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_SKIP)
	for _, s := range []*sluicev1.JobSpec{failing, skipping} {
		if _, err := tc.Client.Submit(context.Background(), s); err != nil {
			t.Fatalf("submit %s: %v", s.GetName(), err)
		}
	}

	j := waitJob(t, tc.Client, failing.GetName(), 30*time.Second, "FAILED state", func(j *sluicev1.Job) bool {
		return j.GetState() == sluicev1.JobState_JOB_STATE_FAILED
	})
	msg := j.GetMessage()
	t.Logf("failed: %s", msg)
	if !regexp.MustCompile(`record notjson/[01] offset 0: steps\[0\]\.filter`).MatchString(msg) {
		t.Errorf("failure message %q does not name the record (notjson/<p> offset 0) and the field steps[0].filter", msg)
	}
	// A record the steps reject would be rejected by any worker on any
	// attempt: the job fails at the first, not after max_task_attempts.
	if !strings.Contains(msg, "failed on worker") {
		t.Errorf("failure message %q does not say the task failed on a worker", msg)
	}
	if j.GetLastBatchId() != 0 {
		t.Errorf("failed job committed batch %d, want none", j.GetLastBatchId())
	}
	if got := committed(t, tc.Client, failing.GetName()); !maps.Equal(got, l.uniform(0)) {
		t.Errorf("failed job's offsets = %v, want 0 everywhere", got)
	}

	tc.waitOffsets(skipping.GetName(), l.ends(), 30*time.Second)
	var in, out, failed int64
	for _, b := range batchesAsc(t, tc.Client, skipping.GetName()) {
		in += b.GetMetrics().GetRecordsIn()
		out += b.GetMetrics().GetRecordsOut()
		failed += b.GetMetrics().GetRecordsFailed()
	}
	if in != 100 || out != 0 || failed != 100 {
		t.Errorf("skip policy: records in/out/failed = %d/%d/%d, want 100/0/100", in, out, failed)
	}
	if got := tc.mergedCounts(skipping.GetName()); len(got) != 0 {
		t.Errorf("skip policy: counts %v, want none", got)
	}
	if j, _ := tc.Client.Job(context.Background(), skipping.GetName()); j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Errorf("skip policy: job %v (%q), want RUNNING", j.GetState(), j.GetMessage())
	}

	// The failed job, updated to skip and resumed, goes through the same records.
	fixed := spec(failing.GetName(), sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_SKIP)
	if _, err := tc.Client.Update(context.Background(), fixed); err != nil {
		t.Fatalf("update: %v", err)
	}
	if _, err := tc.Client.Resume(context.Background(), fixed.GetName()); err != nil {
		t.Fatalf("resume: %v", err)
	}
	tc.waitOffsets(fixed.GetName(), l.ends(), 30*time.Second)
	failed = 0
	for _, b := range batchesAsc(t, tc.Client, fixed.GetName()) {
		failed += b.GetMetrics().GetRecordsFailed()
	}
	if failed != 100 {
		t.Errorf("updated to skip: records_failed = %d, want 100", failed)
	}
	t.Logf("skip policy: %d records in, %d failed, %d out", in, failed, out)
}
