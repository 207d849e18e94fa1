package e2e

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func countJob(name, brokers, topic string) *sluicev1.JobSpec {
	return &sluicev1.JobSpec{
		Name: name,
		Source: &sluicev1.KafkaSource{
			BootstrapServers: brokers,
			Topics:           []string{topic},
			StartingOffsets:  &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}},
		},
		BatchInterval: durationpb.New(100 * time.Millisecond),
		Aggregate:     &sluicev1.Aggregate{},
	}
}

// produceKeyed writes n records with Zipf-distributed keys round-robin over
// the partitions and returns the per-key counts and per-partition end offsets.
func produceKeyed(t *testing.T, cl *kgo.Client, topic string, partitions int32, n, seed int, counts map[string]int64, ends map[string]int64) {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(seed)))
	zipf := rand.NewZipf(rng, 1.3, 1, 199)
	errs := make(chan error, 1)
	for i := range n {
		key := fmt.Sprintf("user-%03d", zipf.Uint64())
		p := int32(i) % partitions
		counts[key]++
		ends[fmt.Sprintf("%s/%d", topic, p)]++
		cl.Produce(context.Background(), &kgo.Record{Topic: topic, Partition: p, Key: []byte(key), Value: []byte(fmt.Sprintf(`{"i":%d}`, i))},
			func(_ *kgo.Record, err error) {
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			})
	}
	if err := cl.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		t.Fatalf("produce: %v", err)
	default:
	}
}

// TestCountByKeyExact: 100,000 keyed records, half produced before the job
// starts and half while it runs, in batches capped by maxRecordsPerBatch: the
// per-key counts summed over committed batches equal the ground truth, the
// committed offsets equal the end offsets, and the batches' ranges tile every
// partition with no gap and no overlap.
func TestCountByKeyExact(t *testing.T) {
	const topic, parts = "events", 8
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	pr := tc.producer()
	counts, ends := map[string]int64{}, map[string]int64{}
	produceKeyed(t, pr, topic, parts, 50000, 1, counts, ends)

	spec := countJob("count-exact", tc.Brokers, topic)
	spec.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 7000}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatalf("submit: %v", err)
	}
	produceKeyed(t, pr, topic, parts, 50000, 2, counts, ends)

	tc.waitOffsets(spec.GetName(), ends, 90*time.Second)
	got := tc.mergedCounts(spec.GetName())
	if !maps.Equal(got, counts) {
		t.Fatalf("counts differ from ground truth:\n got %v\nwant %v", got, counts)
	}
	start := map[string]int64{}
	for k := range ends {
		start[k] = 0
	}
	batches := tc.checkRanges(spec.GetName(), start, ends)
	var in int64
	for _, b := range batches {
		in += b.GetMetrics().GetRecordsIn()
		if n := rangeSize(b); n > 7000 {
			t.Errorf("batch %d has %d records, above maxRecordsPerBatch 7000", b.GetId(), n)
		}
	}
	if in != 100000 {
		t.Errorf("records_in over batches = %d, want 100000", in)
	}
	if len(batches) < 100000/7000 {
		t.Errorf("%d batches, want at least %d under the cap", len(batches), 100000/7000)
	}
	t.Logf("%d keys, %d batches", len(counts), len(batches))
}

func rangeSize(b *sluicev1.Batch) int64 {
	var n int64
	for _, r := range b.GetRanges() {
		n += r.GetUntilOffset() - r.GetFromOffset()
	}
	return n
}

// TestReadCommittedSkipsAborted writes committed and aborted transactions
// (so the log holds aborted records and transaction markers): a
// read_committed job counts exactly the committed records and its offsets
// still reach the end of the log, markers included; a read_uncommitted job
// also counts the aborted ones.
func TestReadCommittedSkipsAborted(t *testing.T) {
	const topic, parts = "txn", 3
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	tx := tc.producer(kgo.TransactionalID("ground-truth"))
	committed, all := map[string]int64{}, map[string]int64{}
	for round := range 30 {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		commit := round%3 != 1
		for i := range 50 {
			key := fmt.Sprintf("k%d", (round*50+i)%7)
			rec := &kgo.Record{Topic: topic, Partition: int32(i % parts), Key: []byte(key), Value: []byte("v")}
			if err := tx.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
			all[key]++
			if commit {
				committed[key]++
			}
		}
		if err := tx.EndTransaction(context.Background(), kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	ends := endOffsets(t, tc, topic, parts)

	rc := countJob("read-committed", tc.Brokers, topic)
	ru := countJob("read-uncommitted", tc.Brokers, topic)
	ru.Source.IsolationLevel = sluicev1.IsolationLevel_ISOLATION_LEVEL_READ_UNCOMMITTED
	for _, spec := range []*sluicev1.JobSpec{rc, ru} {
		if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
			t.Fatalf("submit %s: %v", spec.GetName(), err)
		}
	}
	tc.waitOffsets(rc.GetName(), ends, 60*time.Second)
	tc.waitOffsets(ru.GetName(), ends, 60*time.Second)
	if got := tc.mergedCounts(rc.GetName()); !maps.Equal(got, committed) {
		t.Errorf("read_committed counts:\n got %v\nwant %v", got, committed)
	}
	if got := tc.mergedCounts(ru.GetName()); !maps.Equal(got, all) {
		t.Errorf("read_uncommitted counts:\n got %v\nwant %v", got, all)
	}
	var total int64
	for _, n := range ends {
		total += n
	}
	t.Logf("log end offsets %v (%d offsets for 1500 records: markers take the rest)", ends, total)
}

// endOffsets asks the broker (through franz-go, not Sluice) for the end offsets.
func endOffsets(t *testing.T, tc *testCluster, topic string, parts int32) map[string]int64 {
	t.Helper()
	cl := tc.producer()
	ends := map[string]int64{}
	for p := range parts {
		ends[fmt.Sprintf("%s/%d", topic, p)] = highWatermark(t, cl, topic, p)
	}
	return ends
}

// TestInvalidSpecs: bad specs are refused with InvalidArgument naming the field.
func TestInvalidSpecs(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 1, topics: []string{"in"}})
	base := func() *sluicev1.JobSpec { return countJob("ok-name", tc.Brokers, "in") }
	cases := []struct {
		name   string
		mutate func(*sluicev1.JobSpec)
		field  string
	}{
		{"bad name", func(s *sluicev1.JobSpec) { s.Name = "Bad_Name" }, "name"},
		{"no topics", func(s *sluicev1.JobSpec) { s.Source.Topics = nil }, "source.topics"},
		{"owned property", func(s *sluicev1.JobSpec) { s.Source.Properties = map[string]string{"group.id": "x"} }, "source.properties"},
		{"tiny interval", func(s *sluicev1.JobSpec) { s.BatchInterval = durationpb.New(time.Millisecond) }, "batch_interval"},
		{"cel syntax", func(s *sluicev1.JobSpec) {
			s.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "true"}}, {Kind: &sluicev1.Step_Filter{Filter: "value.size( > 3"}}}
		}, "steps[1].filter"},
		{"sum without value", func(s *sluicev1.JobSpec) {
			s.Aggregate.Functions = []sluicev1.AggregateFunction{sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM}
		}, "aggregate.value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := base()
			c.mutate(spec)
			_, err := tc.Client.Submit(context.Background(), spec)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("Submit() code = %v (%v), want InvalidArgument", st.Code(), err)
			}
			field := violatedField(st)
			if field != c.field {
				t.Errorf("field violation = %q, want %q (message %q)", field, c.field, st.Message())
			}
		})
	}
	// Nothing was stored by the refused submissions.
	jobs, err := tc.Client.Jobs(context.Background())
	if err != nil || len(jobs) != 0 {
		t.Errorf("Jobs() = %d jobs, %v; want none", len(jobs), err)
	}
	if _, err := tc.Client.Submit(context.Background(), base()); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	if _, err := tc.Client.Submit(context.Background(), base()); status.Code(err) != codes.AlreadyExists {
		t.Errorf("second submit code = %v, want AlreadyExists", status.Code(err))
	}
}

// violatedField is the field of the first field violation of st's
// BadRequest detail; "" when there is none.
func violatedField(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}
