package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/coordinator"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// ledger is the ground truth of one topic: the key of every acknowledged
// record by partition and offset, as the broker assigned them.
type ledger struct {
	topic string
	parts int32
	n     int // records produced so far
	keys  map[int32]map[int64]string
}

func newLedger(topic string, parts int32) *ledger {
	return &ledger{topic: topic, parts: parts, keys: map[int32]map[int64]string{}}
}

// produce writes n records round-robin over the partitions with ProduceSync
// in chunks; ts gives record i's timestamp (nil: the producer's clock).
func (l *ledger) produce(t *testing.T, cl *kgo.Client, n int, ts func(i int) time.Time) {
	t.Helper()
	for done := 0; done < n; {
		var chunk []*kgo.Record
		for ; done < n && len(chunk) < 250; done++ {
			i := l.n
			l.n++
			r := &kgo.Record{
				Topic: l.topic, Partition: int32(i) % l.parts,
				Key:   []byte(fmt.Sprintf("k%02d", (i*7+i/13)%23)),
				Value: []byte(fmt.Sprintf("record %d", i)),
			}
			if ts != nil {
				r.Timestamp = ts(i)
			}
			chunk = append(chunk, r)
		}
		res := cl.ProduceSync(context.Background(), chunk...)
		if err := res.FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
		for _, pr := range res {
			r := pr.Record
			if l.keys[r.Partition] == nil {
				l.keys[r.Partition] = map[int64]string{}
			}
			l.keys[r.Partition][r.Offset] = string(r.Key)
		}
	}
}

// counts are the per-key counts of the records for which keep is true (nil: all).
func (l *ledger) counts(keep func(p int32, off int64) bool) map[string]int64 {
	out := map[string]int64{}
	for p, offs := range l.keys {
		for off, k := range offs {
			if keep == nil || keep(p, off) {
				out[k]++
			}
		}
	}
	return out
}

// ends are the per-partition end offsets ("topic/p" -> last offset + 1).
func (l *ledger) ends() map[string]int64 {
	out := map[string]int64{}
	for p := range l.parts {
		var end int64
		for off := range l.keys[p] {
			end = max(end, off+1)
		}
		out[fmt.Sprintf("%s/%d", l.topic, p)] = end
	}
	return out
}

// uniform is a per-partition offset map with the same offset everywhere.
func (l *ledger) uniform(off int64) map[string]int64 {
	out := map[string]int64{}
	for p := range l.parts {
		out[fmt.Sprintf("%s/%d", l.topic, p)] = off
	}
	return out
}

func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// waitJob polls GetJob until cond holds, failing the test after timeout.
func waitJob(t *testing.T, c *client.Client, name string, timeout time.Duration, what string, cond func(*sluicev1.Job) bool) *sluicev1.Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *sluicev1.Job
	var lastErr error
	for time.Now().Before(deadline) {
		j, err := c.Job(context.Background(), name)
		if err == nil {
			last = j
			if cond(j) {
				return j
			}
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job %s: no %s within %s (state %v, last batch %d, message %q, err %v)",
		name, what, timeout, last.GetState(), last.GetLastBatchId(), last.GetMessage(), lastErr)
	return nil
}

// committed reads a job's committed offsets ("topic/p" -> offset).
func committed(t *testing.T, c *client.Client, name string) map[string]int64 {
	t.Helper()
	resp, err := c.Offsets(context.Background(), name)
	if err != nil {
		t.Fatalf("offsets of %s: %v", name, err)
	}
	out := map[string]int64{}
	for _, p := range resp.GetPartitions() {
		out[fmt.Sprintf("%s/%d", p.GetTopic(), p.GetPartition())] = p.GetCommitted()
	}
	return out
}

// batchesAsc lists a job's retained batches, oldest first.
func batchesAsc(t *testing.T, c *client.Client, name string) []*sluicev1.Batch {
	t.Helper()
	bs, err := c.Batches(context.Background(), name, 10000)
	if err != nil {
		t.Fatalf("batches of %s: %v", name, err)
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].GetId() < bs[j].GetId() })
	return bs
}

// mergedFrom sums the counts of the batches from id from on.
func mergedFrom(t *testing.T, c *client.Client, name string, from int64) map[string]int64 {
	t.Helper()
	resp, err := c.Results(context.Background(), name, from, 0, true)
	if err != nil {
		t.Fatalf("results of %s from %d: %v", name, from, err)
	}
	out := map[string]int64{}
	for _, a := range resp.GetMerged() {
		out[a.GetKey()] = a.GetCount()
	}
	return out
}

// checkTiles audits committed batches (ids consecutive from the first one
// given): per partition their data-loss spans and then their ranges tile
// [start, end) with no gap and no overlap.
func checkTiles(t *testing.T, batches []*sluicev1.Batch, start, end map[string]int64) {
	t.Helper()
	next := maps.Clone(start)
	for i, b := range batches {
		if i > 0 && b.GetId() != batches[i-1].GetId()+1 {
			t.Fatalf("batch ids not consecutive: %d after %d", b.GetId(), batches[i-1].GetId())
		}
		if b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED {
			t.Fatalf("batch %d is %v, want committed", b.GetId(), b.GetState())
		}
		for _, l := range b.GetDataLoss() {
			k := fmt.Sprintf("%s/%d", l.GetTopic(), l.GetPartition())
			if l.GetFromOffset() != next[k] {
				t.Fatalf("batch %d: data loss %s starts at %d, want %d", b.GetId(), k, l.GetFromOffset(), next[k])
			}
			next[k] = l.GetUntilOffset()
		}
		for _, r := range b.GetRanges() {
			k := fmt.Sprintf("%s/%d", r.GetTopic(), r.GetPartition())
			if r.GetFromOffset() != next[k] {
				t.Fatalf("batch %d: range %s starts at %d, want %d (gap or overlap)", b.GetId(), k, r.GetFromOffset(), next[k])
			}
			if r.GetUntilOffset() <= r.GetFromOffset() {
				t.Fatalf("batch %d: empty range %s [%d, %d)", b.GetId(), k, r.GetFromOffset(), r.GetUntilOffset())
			}
			next[k] = r.GetUntilOffset()
		}
	}
	if !maps.Equal(next, end) {
		t.Fatalf("batches end at %v, want %v", next, end)
	}
}

// deleteRecordsTo moves a partition's log start to offset (DeleteRecords)
// and returns the broker's new low watermark.
func deleteRecordsTo(t *testing.T, cl *kgo.Client, topic string, p int32, offset int64) int64 {
	t.Helper()
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: topic, Partition: p, At: offset, LeaderEpoch: -1})
	resp, err := kadm.NewClient(cl).DeleteRecords(context.Background(), os)
	if err != nil {
		t.Fatalf("DeleteRecords %s/%d to %d: %v", topic, p, offset, err)
	}
	r, ok := resp.Lookup(topic, p)
	if !ok || r.Err != nil {
		t.Fatalf("DeleteRecords %s/%d to %d: %v (answered %v)", topic, p, offset, r.Err, ok)
	}
	return r.LowWatermark
}

// startBroker starts a kfake broker on a fixed port that keeps its data in
// dir, retrying while the port is still held by a broker being closed.
func startBroker(t *testing.T, port int, dir, topic string, parts int32) *kfake.Cluster {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		k, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(parts, topic))
		if err == nil {
			t.Cleanup(k.Close)
			return k
		}
		if time.Now().After(deadline) {
			t.Fatalf("kfake on port %d: %v", port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newKgo(t *testing.T, brokers string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestBrokerDownAndBack stops the only Kafka broker in the middle of a job
// and starts it again, with its data, on the same port: the job waits
// (RUNNING, with a message saying what holds it back) instead of failing,
// then resumes from its committed offsets and counts exactly.
func TestBrokerDownAndBack(t *testing.T) {
	const topic, parts = "outage", 4
	tc := newTestCluster(t, clusterOptions{workers: 2}) // its own broker is not used
	_, portStr, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	dir := t.TempDir()
	brokers := fmt.Sprintf("127.0.0.1:%d", port)
	k := startBroker(t, port, dir, topic, parts)

	l := newLedger(topic, parts)
	pr1, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	l.produce(t, pr1, 4000, nil)
	pr1.Close()

	spec := countJob("broker-outage", brokers, topic)
	spec.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 400, TaskTimeout: durationpb.New(20 * time.Second)}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatalf("submit: %v", err)
	}
	waitJob(t, tc.Client, spec.GetName(), 30*time.Second, "third batch", func(j *sluicev1.Job) bool { return j.GetLastBatchId() >= 3 })

	// (GetOffsets asks Kafka for the latest offsets, up to 3s: read before the close.)
	atClose := committed(t, tc.Client, spec.GetName())
	k.Close()
	down := time.Now()
	// A timeline of what GetJob shows, from the close to the end of the test.
	var timeline []string
	var tlMu sync.Mutex
	tlDone, tlStopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(tlStopped)
		prev := ""
		for {
			select {
			case <-tlDone:
				return
			case <-time.After(50 * time.Millisecond):
			}
			j, err := tc.Client.Job(context.Background(), spec.GetName())
			if err != nil {
				continue
			}
			cur := fmt.Sprintf("%v batch %d %q", j.GetState(), j.GetLastBatchId(), j.GetMessage())
			if cur != prev {
				prev = cur
				tlMu.Lock()
				timeline = append(timeline, fmt.Sprintf("%6dms %s", time.Since(down).Milliseconds(), cur))
				tlMu.Unlock()
			}
		}
	}()
	defer func() {
		close(tlDone)
		<-tlStopped
		tlMu.Lock()
		defer tlMu.Unlock()
		t.Logf("GetJob from the broker's close on:\n%s", strings.Join(timeline, "\n"))
	}()
	// While the broker is away the job must wait, not fail, and say why.
	var messages []string
	lastDuringOutage := int64(0)
	for time.Since(down) < 6*time.Second {
		j, err := tc.Client.Job(context.Background(), spec.GetName())
		if err != nil {
			t.Fatalf("GetJob while the broker is down: %v", err)
		}
		if j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
			t.Fatalf("job is %v while the broker is down (message %q), want RUNNING", j.GetState(), j.GetMessage())
		}
		if m := j.GetMessage(); m != "" && (len(messages) == 0 || messages[len(messages)-1] != m) {
			messages = append(messages, m)
			t.Logf("%5dms into the outage: message %q", time.Since(down).Milliseconds(), m)
		}
		lastDuringOutage = j.GetLastBatchId()
		time.Sleep(50 * time.Millisecond)
	}
	// Each planning attempt has a 3s deadline, so the message shows the
	// error within the 6s outage, and says that Sluice retries.
	if len(messages) == 0 {
		t.Errorf("GetJob message stayed empty during 6s without Kafka")
	} else if m := strings.Join(messages, " | "); !strings.Contains(m, "retrying") {
		t.Errorf("messages during the outage %q do not say that Sluice is retrying", m)
	}

	startBroker(t, port, dir, topic, parts)
	up := time.Now()
	pr2 := newKgo(t, brokers)
	for p := range int32(parts) {
		if got, want := highWatermark(t, pr2, topic, p), l.ends()[fmt.Sprintf("%s/%d", topic, p)]; got != want {
			t.Fatalf("restarted broker lost data: %s/%d ends at %d, want %d", topic, p, got, want)
		}
	}
	l.produce(t, pr2, 2000, nil)
	t.Logf("restarted broker: %s to check its data and produce 2000 more records", time.Since(up).Round(time.Millisecond))
	j := waitJob(t, tc.Client, spec.GetName(), 60*time.Second, "batch after the restart", func(j *sluicev1.Job) bool {
		return j.GetLastBatchId() > lastDuringOutage
	})
	resumed := time.Since(up)
	tc.waitOffsets(spec.GetName(), l.ends(), 60*time.Second)
	caughtUp := time.Since(up)

	want := l.counts(nil)
	if got := tc.mergedCounts(spec.GetName()); !maps.Equal(got, want) {
		t.Fatalf("counts differ from ground truth:\n got %v\nwant %v", got, want)
	}
	batches := tc.checkRanges(spec.GetName(), l.uniform(0), l.ends())
	var in int64
	for _, b := range batches {
		in += b.GetMetrics().GetRecordsIn()
		m := b.GetMetrics()
		t.Logf("batch %2d: time %+6dms, processing %5dms, scheduling %5dms, total %5dms, attempts %d/%d, records %d",
			b.GetId(), b.GetBatchTime().AsTime().Sub(up).Milliseconds(), m.GetProcessingTime().AsDuration().Milliseconds(),
			m.GetSchedulingDelay().AsDuration().Milliseconds(), m.GetTotalDelay().AsDuration().Milliseconds(),
			m.GetTaskAttempts(), m.GetTasks(), m.GetRecordsIn())
	}
	if in != 6000 {
		t.Errorf("records_in over batches = %d, want 6000", in)
	}
	j = waitJob(t, tc.Client, spec.GetName(), 10*time.Second, "cleared message", func(j *sluicev1.Job) bool { return j.GetMessage() == "" })
	t.Logf("committed at the close %v; batches %d before/during the outage, %d in all", atClose, lastDuringOutage, j.GetLastBatchId())
	t.Logf("first batch %s after the broker came back, caught up after %s; %d records, %d keys exact",
		resumed.Round(time.Millisecond), caughtUp.Round(time.Millisecond), sumCounts(want), len(want))
}

// lossSetup runs a count job over 500 records per partition to the end,
// stops it, produces 500 more per partition, and deletes partition 2's
// records below 700: the job's committed offset there, 500, is below the new
// log start.
func lossSetup(t *testing.T, spec func(brokers string) *sluicev1.JobSpec) (*testCluster, *ledger, *sluicev1.JobSpec, int64) {
	t.Helper()
	const topic, parts = "loss", 4
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	pr := tc.producer()
	l := newLedger(topic, parts)
	l.produce(t, pr, 2000, nil)
	s := spec(tc.Brokers)
	if _, err := tc.Client.Submit(context.Background(), s); err != nil {
		t.Fatalf("submit: %v", err)
	}
	tc.waitOffsets(s.GetName(), l.ends(), 30*time.Second)
	if j, err := tc.Client.Stop(context.Background(), s.GetName()); err != nil || j.GetState() != sluicev1.JobState_JOB_STATE_STOPPED {
		t.Fatalf("stop: %v, %v", j.GetState(), err)
	}
	stoppedAt := waitJob(t, tc.Client, s.GetName(), 5*time.Second, "stopped", func(j *sluicev1.Job) bool {
		return j.GetState() == sluicev1.JobState_JOB_STATE_STOPPED
	}).GetLastBatchId()
	l.produce(t, pr, 2000, nil)
	if lw := deleteRecordsTo(t, pr, topic, 2, 700); lw != 700 {
		t.Fatalf("low watermark after DeleteRecords = %d, want 700", lw)
	}
	if got := committed(t, tc.Client, s.GetName()); !maps.Equal(got, l.uniform(500)) {
		t.Fatalf("committed before the resume = %v, want 500 everywhere", got)
	}
	return tc, l, s, stoppedAt
}

// TestDataLossFails: records deleted before the job read them fail the job
// (fail_on_data_loss defaults to true) with a message naming the topic,
// partition and offsets, and nothing is committed past them; a reset of the
// offsets and a resume get it going again.
func TestDataLossFails(t *testing.T) {
	tc, l, spec, stoppedAt := lossSetup(t, func(brokers string) *sluicev1.JobSpec {
		return countJob("loss-fails", brokers, "loss")
	})
	if _, err := tc.Client.Resume(context.Background(), spec.GetName()); err != nil {
		t.Fatalf("resume: %v", err)
	}
	j := waitJob(t, tc.Client, spec.GetName(), 30*time.Second, "FAILED state", func(j *sluicev1.Job) bool {
		return j.GetState() == sluicev1.JobState_JOB_STATE_FAILED
	})
	msg := j.GetMessage()
	t.Logf("failed: %s", msg)
	for _, want := range []string{"data loss", "loss/2", "offsets 500 to 699", "log start is now 700"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure message %q does not contain %q", msg, want)
		}
	}
	if got := committed(t, tc.Client, spec.GetName()); !maps.Equal(got, l.uniform(500)) {
		t.Errorf("committed after the failure = %v, want 500 everywhere (nothing past the loss)", got)
	}
	if j.GetLastBatchId() != stoppedAt {
		t.Errorf("last batch %d after the failure, want %d (no batch after the loss)", j.GetLastBatchId(), stoppedAt)
	}

	// The way out: move the offsets to what Kafka still has, and resume.
	to := &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}}
	offs, err := tc.Client.ResetOffsets(context.Background(), spec.GetName(), to)
	if err != nil {
		t.Fatalf("reset a failed job: %v", err)
	}
	want := map[string]int64{"loss/0": 0, "loss/1": 0, "loss/2": 700, "loss/3": 0}
	if got := poMap(offs); !maps.Equal(got, want) {
		t.Fatalf("reset to earliest = %v, want %v", got, want)
	}
	if _, err := tc.Client.Resume(context.Background(), spec.GetName()); err != nil {
		t.Fatalf("resume: %v", err)
	}
	tc.waitOffsets(spec.GetName(), l.ends(), 30*time.Second)
	kept := func(p int32, off int64) bool { return p != 2 || off >= 700 }
	if got, want := mergedFrom(t, tc.Client, spec.GetName(), stoppedAt+1), l.counts(kept); !maps.Equal(got, want) {
		t.Fatalf("counts after the reset differ from the records Kafka still has:\n got %v\nwant %v", got, want)
	}
	if j, _ := tc.Client.Job(context.Background(), spec.GetName()); j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING || j.GetMessage() != "" {
		t.Errorf("after the reset and resume: state %v, message %q; want RUNNING and no message", j.GetState(), j.GetMessage())
	}
}

func poMap(offs []*sluicev1.PartitionOffset) map[string]int64 {
	out := map[string]int64{}
	for _, po := range offs {
		out[fmt.Sprintf("%s/%d", po.GetTopic(), po.GetPartition())] = po.GetOffset()
	}
	return out
}

// TestDataLossSkips: with fail_on_data_loss false the job goes on from the
// new log start; exactly one committed batch records the skipped span
// [500, 700) of loss/2, and the counts equal the ground truth minus exactly
// the deleted records.
func TestDataLossSkips(t *testing.T) {
	tc, l, spec, stoppedAt := lossSetup(t, func(brokers string) *sluicev1.JobSpec {
		s := countJob("loss-skips", brokers, "loss")
		s.Source.FailOnDataLoss = proto.Bool(false)
		return s
	})
	if _, err := tc.Client.Resume(context.Background(), spec.GetName()); err != nil {
		t.Fatalf("resume: %v", err)
	}
	tc.waitOffsets(spec.GetName(), l.ends(), 30*time.Second)

	var losses []*sluicev1.DataLoss
	var lossBatch int64
	batches := batchesAsc(t, tc.Client, spec.GetName())
	for _, b := range batches {
		for _, dl := range b.GetDataLoss() {
			losses = append(losses, dl)
			lossBatch = b.GetId()
		}
	}
	if len(losses) != 1 {
		t.Fatalf("data loss entries over the batches = %v, want exactly one", losses)
	}
	dl := losses[0]
	if dl.GetTopic() != "loss" || dl.GetPartition() != 2 || dl.GetFromOffset() != 500 || dl.GetUntilOffset() != 700 || dl.GetReason() == "" {
		t.Errorf("data loss = %v, want loss/2 [500, 700) with a reason", dl)
	}
	if lossBatch != stoppedAt+1 {
		t.Errorf("data loss recorded in batch %d, want the first batch after the resume (%d)", lossBatch, stoppedAt+1)
	}
	deleted := func(p int32, off int64) bool { return p == 2 && off >= 500 && off < 700 }
	want := l.counts(func(p int32, off int64) bool { return !deleted(p, off) })
	got := tc.mergedCounts(spec.GetName())
	if !maps.Equal(got, want) {
		t.Fatalf("counts differ from the ground truth minus the deleted records:\n got %v\nwant %v", got, want)
	}
	checkTiles(t, batches, l.uniform(0), l.ends())
	var in int64
	for _, b := range batches {
		in += b.GetMetrics().GetRecordsIn()
	}
	if in != 4000-200 {
		t.Errorf("records_in over batches = %d, want %d", in, 4000-200)
	}
	if j, _ := tc.Client.Job(context.Background(), spec.GetName()); j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Errorf("job is %v (%q), want RUNNING", j.GetState(), j.GetMessage())
	}
	t.Logf("batch %d: data loss %s/%d [%d, %d): %s; counted %d of 4000 records",
		lossBatch, dl.GetTopic(), dl.GetPartition(), dl.GetFromOffset(), dl.GetUntilOffset(), dl.GetReason(), sumCounts(got))
}

// TestStartingOffsetsByTimestamp: records carry explicit timestamps, the
// first half T0 (+i ms), the second T0+1h: a job starting at T0+30min counts
// exactly the second half, one starting before T0 counts everything, and one
// starting after every record starts at the end and counts only what comes
// later.
func TestStartingOffsetsByTimestamp(t *testing.T) {
	const topic, parts = "stamped", 4
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	pr := tc.producer()
	l := newLedger(topic, parts)
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
	l.produce(t, pr, 2000, func(i int) time.Time {
		if i < 1000 {
			return t0.Add(time.Duration(i) * time.Millisecond)
		}
		return t0.Add(time.Hour + time.Duration(i)*time.Millisecond)
	})
	firstHalf := l.ends() // every partition at 500

	at := func(name string, ts time.Time) *sluicev1.JobSpec {
		s := countJob(name, tc.Brokers, topic)
		s.Source.StartingOffsets = &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Timestamp{Timestamp: timestamppb.New(ts)}}
		return s
	}
	half := at("from-half", t0.Add(30*time.Minute))
	all := at("from-before", t0.Add(-time.Minute))
	none := at("from-future", t0.Add(90*time.Minute)) // after every record, before now
	for _, s := range []*sluicev1.JobSpec{half, all, none} {
		if _, err := tc.Client.Submit(context.Background(), s); err != nil {
			t.Fatalf("submit %s: %v", s.GetName(), err)
		}
	}
	// from-future resolves its start to the end offsets before anything else is produced.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got := committed(t, tc.Client, none.GetName()); len(got) == parts {
			if !maps.Equal(got, firstHalf) {
				t.Fatalf("from-future starts at %v, want the end offsets %v", got, firstHalf)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("from-future resolved no starting offsets within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	tc.waitOffsets(half.GetName(), firstHalf, 30*time.Second)
	tc.waitOffsets(all.GetName(), firstHalf, 30*time.Second)

	secondHalf := l.counts(func(_ int32, off int64) bool { return off >= 250 })
	if got := tc.mergedCounts(half.GetName()); !maps.Equal(got, secondHalf) {
		t.Errorf("from T0+30min: counts differ from the second half:\n got %v\nwant %v", got, secondHalf)
	}
	tc.checkRanges(half.GetName(), l.uniform(250), firstHalf)
	if got, want := tc.mergedCounts(all.GetName()), l.counts(nil); !maps.Equal(got, want) {
		t.Errorf("from before T0: counts differ from everything:\n got %v\nwant %v", got, want)
	}
	if bs := batchesAsc(t, tc.Client, none.GetName()); len(bs) != 0 {
		t.Errorf("from-future committed %d batches before new records, want 0", len(bs))
	}

	// Records produced now (timestamp now > T0+90min) are what from-future counts.
	l.produce(t, pr, 400, nil)
	tc.waitOffsets(none.GetName(), l.ends(), 30*time.Second)
	later := l.counts(func(_ int32, off int64) bool { return off >= 500 })
	if got := tc.mergedCounts(none.GetName()); !maps.Equal(got, later) {
		t.Errorf("from-future: counts differ from the 400 later records:\n got %v\nwant %v", got, later)
	}
	tc.checkRanges(none.GetName(), firstHalf, l.ends())
	t.Logf("T0=%s: from T0+30min counted %d of 2000, from T0-1min %d, from T0+90min %d (the 400 produced later)",
		t0.Format(time.RFC3339), sumCounts(secondHalf), sumCounts(l.counts(nil))-400, sumCounts(later))
}

// TestDataLossInReplayedBatch: a batch planned before a stop is re-run with
// its logged ranges at the resume; if Kafka deleted part of such a range
// meanwhile (retention while the job was stopped), a job with
// fail_on_data_loss false must still skip the lost offsets, record them, and
// count the rest exactly.
func TestDataLossInReplayedBatch(t *testing.T) {
	const topic, parts, name = "replay", 4, "replay-loss"
	var armed atomic.Bool
	planned := make(chan *sluicev1.Batch, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}, coord: func(c *coordinator.Config) {
		c.Hooks.AfterPlanLogged = func(b *sluicev1.Batch) error {
			if b.GetJob() != name || !armed.CompareAndSwap(true, false) {
				return nil
			}
			planned <- b
			select { // the test stops the job and deletes records meanwhile
			case <-release:
			case <-time.After(30 * time.Second):
			}
			return errors.New("batch abandoned by the test")
		}
	}})
	t.Cleanup(unblock) // registered after the cluster's: runs before it stops
	pr := tc.producer()
	l := newLedger(topic, parts)
	l.produce(t, pr, 2000, nil)
	spec := countJob(name, tc.Brokers, topic)
	spec.Source.FailOnDataLoss = proto.Bool(false)
	spec.Limits = &sluicev1.Limits{MaxTaskAttempts: 2, TaskTimeout: durationpb.New(20 * time.Second)}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatalf("submit: %v", err)
	}
	tc.waitOffsets(name, l.uniform(500), 30*time.Second)

	armed.Store(true)
	l.produce(t, pr, 2000, nil)
	var b *sluicev1.Batch
	select {
	case b = <-planned:
	case <-time.After(30 * time.Second):
		t.Fatal("no batch planned for the new records")
	}
	if _, err := tc.Client.Stop(context.Background(), name); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if lw := deleteRecordsTo(t, pr, topic, 2, 700); lw != 700 {
		t.Fatalf("low watermark = %d, want 700", lw)
	}
	unblock()
	// Fresh workers: no consumer holds the deleted records in its prefetch
	// queue, as after a long stop.
	for _, id := range []string{"w1", "w2"} {
		tc.workers[id]()
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: testWriter{t}})
	tc.startWorker("w3", logger)
	tc.startWorker("w4", logger)
	last := batchesAsc(t, tc.Client, name)
	if n := len(last); n == 0 || last[n-1].GetId() != b.GetId() || last[n-1].GetState() != sluicev1.BatchState_BATCH_STATE_PLANNED {
		t.Fatalf("batches after the stop: %s, want batch %d PLANNED last", batchSummary(last), b.GetId())
	}
	t.Logf("batch %d planned with ranges %v, abandoned by the stop; replay/2 deleted below 700", b.GetId(), b.GetRanges())

	if _, err := tc.Client.Resume(context.Background(), name); err != nil {
		t.Fatalf("resume: %v", err)
	}
	deadline := time.Now().Add(40 * time.Second)
	for {
		j, err := tc.Client.Job(context.Background(), name)
		if err == nil && j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			t.Fatalf("the re-run of planned batch %d hit the deleted offsets and failed the job although fail_on_data_loss is false: %s",
				b.GetId(), j.GetMessage())
		}
		if got := committed(t, tc.Client, name); maps.Equal(got, l.ends()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job did not reach the end offsets: state %v, message %q, offsets %v", j.GetState(), j.GetMessage(), committed(t, tc.Client, name))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var losses []*sluicev1.DataLoss
	for _, bt := range batchesAsc(t, tc.Client, name) {
		losses = append(losses, bt.GetDataLoss()...)
	}
	if len(losses) != 1 || losses[0].GetPartition() != 2 || losses[0].GetFromOffset() != 500 || losses[0].GetUntilOffset() != 700 {
		t.Errorf("data loss = %v, want replay/2 [500, 700)", losses)
	}
	want := l.counts(func(p int32, off int64) bool { return p != 2 || off < 500 || off >= 700 })
	if got := tc.mergedCounts(name); !maps.Equal(got, want) {
		t.Errorf("counts differ from the ground truth minus the deleted records:\n got %v\nwant %v", got, want)
	}
}
