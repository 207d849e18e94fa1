package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/jobspec"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// readmeExample reads examples/<name>, checks that the README shows it
// verbatim, and returns its job with the test broker's address.
func readmeExample(t *testing.T, name, brokers string) *sluicev1.JobSpec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, b) {
		t.Fatalf("README does not include examples/%s verbatim", name)
	}
	spec := &sluicev1.JobSpec{}
	if err := protojson.Unmarshal(bytes.ReplaceAll(b, []byte("127.0.0.1:19092"), []byte(brokers)), spec); err != nil {
		t.Fatalf("examples/%s: %v", name, err)
	}
	return spec
}

// batchTotals sums the metrics of the job's committed batches.
func batchTotals(t *testing.T, c *client.Client, job string) *sluicev1.BatchMetrics {
	t.Helper()
	batches, err := c.Batches(context.Background(), job, 100000)
	if err != nil {
		t.Fatal(err)
	}
	sum := &sluicev1.BatchMetrics{}
	for _, b := range batches {
		m := b.GetMetrics()
		sum.RecordsIn += m.GetRecordsIn()
		sum.RecordsOut += m.GetRecordsOut()
		sum.RecordsFailed += m.GetRecordsFailed()
		sum.RecordsDeadLettered += m.GetRecordsDeadLettered()
	}
	return sum
}

// TestFlatMapReadmeExample runs the README's flatMap job, which explodes
// each order's items and sums the quantity sold per SKU: the totals equal
// the ground truth exactly.
func TestFlatMapReadmeExample(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: 3, topics: []string{"orders"}})
	spec := readmeExample(t, "order-items.json", tc.Brokers)
	cl := tc.producer()
	rng := rand.New(rand.NewSource(12))
	count, sum := map[string]int64{}, map[string]float64{}
	const orders = 400
	items, end := 0, map[string]int64{}
	var recs []*kgo.Record
	for i := range orders {
		var parts []string
		for range rng.Intn(5) { // 0 to 4 items; an order without any emits nothing
			sku, qty := fmt.Sprintf("sku-%d", rng.Intn(6)), rng.Intn(4)
			parts = append(parts, fmt.Sprintf(`{"sku":%q,"qty":%d}`, sku, qty))
			if qty > 0 { // the filter after the flatMap drops the others
				count[sku]++
				sum[sku] += float64(qty)
				items++
			}
		}
		p := int32(i % 3)
		end[fmt.Sprintf("orders/%d", p)]++
		recs = append(recs, &kgo.Record{Topic: "orders", Partition: p, Key: fmt.Appendf(nil, "order-%d", i),
			Value: fmt.Appendf(nil, `{"order":"order-%d","items":[%s]}`, i, strings.Join(parts, ","))})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets(spec.GetName(), end, 60*time.Second)
	resp, err := tc.Client.Results(context.Background(), spec.GetName(), 0, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, a := range resp.GetMerged() {
		if a.GetCount() != count[a.GetKey()] || a.GetSum() != sum[a.GetKey()] {
			t.Errorf("%s: count %d sum %v, want %d and %v", a.GetKey(), a.GetCount(), a.GetSum(), count[a.GetKey()], sum[a.GetKey()])
		}
		got++
	}
	if got != len(count) {
		t.Errorf("%d SKUs in the totals, want %d", got, len(count))
	}
	m := batchTotals(t, tc.Client, spec.GetName())
	if m.GetRecordsIn() != orders || m.GetRecordsOut() != int64(items) || m.GetRecordsFailed() != 0 {
		t.Errorf("batches: in %d out %d failed %d, want %d orders in, %d items out, 0 failed",
			m.GetRecordsIn(), m.GetRecordsOut(), m.GetRecordsFailed(), orders, items)
	}
	t.Logf("%d orders exploded into %d items over %d SKUs", orders, items, len(count))
}

// payments writes payments, a share of them bad, and remembers the ground
// truth: the output of each good one and the bad ones as written.
type payments struct {
	mu   sync.Mutex
	n    int
	good map[string]string      // "topic/partition/offset" -> "customer=amount"
	bad  map[string]*kgo.Record // by source position, as produced
	kept int                    // good payments with amount > 0
}

func newPayments() *payments {
	return &payments{good: map[string]string{}, bad: map[string]*kgo.Record{}}
}

// payment i: one in ten has bad JSON, one in ten misses its amount, one in
// twenty is not UTF-8 at all; bad ones carry a header of their own.
func payment(i int) (value []byte, bad bool, out string) {
	switch {
	case i%10 == 3:
		return fmt.Appendf(nil, `{"customer":"c%d","amount":`, i%7), true, ""
	case i%10 == 6:
		return fmt.Appendf(nil, `{"customer":"c%d"}`, i%7), true, ""
	case i%20 == 9:
		return []byte{0xff, 0xfe, byte(i), 'x'}, true, ""
	}
	amount := i%5 - 1 // -1 and 0 are filtered out
	v := fmt.Appendf(nil, `{"customer":"c%d","amount":%d}`, i%7, amount)
	if amount <= 0 {
		return v, false, ""
	}
	return v, false, fmt.Sprintf("c%d=%d", i%7, amount)
}

func (p *payments) produce(t *testing.T, brokers, topic string, parts int32, n, rate int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RecordRetries(100))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	start := time.Now()
	for sent := 0; sent < n; {
		var batch []*kgo.Record
		for i := 0; i < 100 && sent < n; i++ {
			p.mu.Lock()
			idx := p.n
			p.n++
			p.mu.Unlock()
			v, bad, _ := payment(idx)
			r := &kgo.Record{Topic: topic, Partition: int32(idx) % parts, Key: fmt.Appendf(nil, "p%d", idx), Value: v}
			if bad {
				r.Headers = []kgo.RecordHeader{{Key: "trace", Value: fmt.Appendf(nil, "t%d", idx)}}
			}
			batch = append(batch, r)
			sent++
		}
		res := cl.ProduceSync(context.Background(), batch...)
		if err := res.FirstErr(); err != nil {
			t.Errorf("produce: %v", err)
			return
		}
		p.mu.Lock()
		for _, r := range res {
			var idx int
			fmt.Sscanf(string(r.Record.Key), "p%d", &idx)
			pos := fmt.Sprintf("%s/%d/%d", r.Record.Topic, r.Record.Partition, r.Record.Offset)
			_, bad, out := payment(idx)
			switch {
			case bad:
				p.bad[pos] = r.Record
			case out != "":
				p.good[pos] = out
				p.kept++
			}
		}
		p.mu.Unlock()
		if rate > 0 {
			if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
}

// ends returns each source partition's end offset.
func (p *payments) ends(topic string, parts int32) map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	ends := map[string]int64{}
	for i := range parts {
		ends[fmt.Sprintf("%s/%d", topic, i)] = int64(p.n/int(parts) + boolInt(int(i) < p.n%int(parts)))
	}
	return ends
}

// deadLetter is one record read from the dead-letter topic.
type deadLetter struct {
	rec  *kgo.Record
	hdrs map[string]string
}

// readDeadLetters reads the dead-letter topic with read_committed until it
// has at least want records and then stays quiet for a second; it returns
// them by source position (sluice-dlq-topic/partition/offset) and how many
// times each was seen.
func readDeadLetters(t *testing.T, brokers, topic string, want int, timeout time.Duration) (map[string]deadLetter, map[string]int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got, seen := map[string]deadLetter{}, map[string]int{}
	total := 0
	deadline := time.Now().Add(timeout)
	var quietUntil time.Time
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			total++
			d := deadLetter{rec: r, hdrs: map[string]string{}}
			for _, h := range r.Headers {
				d.hdrs[h.Key] = string(h.Value)
			}
			pos := d.hdrs[steps.HeaderDLQTopic] + "/" + d.hdrs[steps.HeaderDLQPartition] + "/" + d.hdrs[steps.HeaderDLQOffset]
			got[pos] = d
			seen[pos]++
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
	return got, seen
}

// checkDeadLetters compares the dead-letter topic with the bad payments:
// each exactly once, unchanged (key, value, its own headers), with the
// failing step's headers.
func checkDeadLetters(t *testing.T, p *payments, job string, got map[string]deadLetter, seen map[string]int) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var missing, dups, extra, changed int
	for pos, r := range p.bad {
		d, ok := got[pos]
		if !ok {
			missing++
			continue
		}
		if seen[pos] > 1 {
			dups += seen[pos] - 1
		}
		if !bytes.Equal(d.rec.Key, r.Key) || !bytes.Equal(d.rec.Value, r.Value) || d.hdrs["trace"] != string(r.Headers[0].Value) ||
			d.rec.Headers[0].Key != "trace" {
			changed++
			if changed == 1 {
				t.Errorf("dead letter %s: %q=%q %v, want %q=%q with its trace header first", pos, d.rec.Key, d.rec.Value, d.rec.Headers, r.Key, r.Value)
			}
		}
		want := map[string]string{
			steps.HeaderDLQJob: job, steps.HeaderDLQField: "steps[0].filter", steps.HeaderDLQStep: "0",
			steps.HeaderDLQStepKind: "filter", steps.HeaderDLQExpression: "json.amount > 0",
			steps.HeaderDLQTopic: r.Topic, steps.HeaderDLQPartition: strconv.Itoa(int(r.Partition)),
			steps.HeaderDLQOffset: strconv.FormatInt(r.Offset, 10),
		}
		for k, v := range want {
			if d.hdrs[k] != v {
				changed++
				t.Errorf("dead letter %s: header %s = %q, want %q", pos, k, d.hdrs[k], v)
			}
		}
		wantErr := "no such key: amount"
		if bytes.HasPrefix(r.Value, []byte{0xff}) || !bytes.HasSuffix(r.Value, []byte("}")) {
			wantErr = "JSON"
		}
		if e := d.hdrs[steps.HeaderDLQError]; !strings.Contains(e, wantErr) {
			changed++
			t.Errorf("dead letter %s: error header %q, want it to mention %q", pos, e, wantErr)
		}
	}
	for pos := range got {
		if _, ok := p.bad[pos]; !ok {
			extra++
		}
	}
	if missing+dups+extra+changed > 0 {
		t.Fatalf("dead letters vs the %d bad records: missing %d, duplicated %d, unexpected %d, changed %d", len(p.bad), missing, dups, extra, changed)
	}
}

// TestDeadLetterReadmeExample runs the README's dead-letter job (collect
// sink) on good and bad payments: bad JSON, a missing field, a value that
// is not UTF-8. A read_committed reader of the dead-letter topic sees
// exactly the bad records, unchanged, with the sluice-dlq-* headers; the
// collected output is exactly the good ones; the batches count the dead
// letters.
func TestDeadLetterReadmeExample(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: 3, topics: []string{"payments", "payments-dlq"}})
	spec := readmeExample(t, "dead-letters.json", tc.Brokers)
	p := newPayments()
	p.produce(t, tc.Brokers, "payments", 3, 600, 0)
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets(spec.GetName(), p.ends("payments", 3), 60*time.Second)
	got, seen := readDeadLetters(t, tc.Brokers, "payments-dlq", len(p.bad), 30*time.Second)
	checkDeadLetters(t, p, spec.GetName(), got, seen)

	resp, err := tc.Client.Results(context.Background(), spec.GetName(), 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range resp.GetResults() {
		for _, rec := range r.GetRecords() {
			out[fmt.Sprintf("%s/%d/%d", rec.GetTopic(), rec.GetPartition(), rec.GetOffset())] = string(rec.GetKey()) + "=" + string(rec.GetValue())
		}
	}
	for pos, want := range p.good {
		if out[pos] != want {
			t.Errorf("output of %s = %q, want %q", pos, out[pos], want)
		}
	}
	if len(out) != len(p.good) {
		t.Errorf("%d output records, want %d", len(out), len(p.good))
	}
	m := batchTotals(t, tc.Client, spec.GetName())
	if m.GetRecordsIn() != int64(p.n) || m.GetRecordsOut() != int64(p.kept) ||
		m.GetRecordsFailed() != int64(len(p.bad)) || m.GetRecordsDeadLettered() != int64(len(p.bad)) {
		t.Errorf("batches: in %d out %d failed %d dead-lettered %d, want %d, %d, %d, %d",
			m.GetRecordsIn(), m.GetRecordsOut(), m.GetRecordsFailed(), m.GetRecordsDeadLettered(), p.n, p.kept, len(p.bad), len(p.bad))
	}
	t.Logf("%d payments: %d written, %d dead-lettered", p.n, p.kept, len(p.bad))
}

// TestDeadLettersExactlyOnceThroughKills runs a job with dead letters on a
// stream of good and bad payments while workers and coordinators are
// killed with SIGKILL, with the transactional Kafka sink (dead letters in
// the task's transaction) and with the collect sink (dead letters in
// transactions of their own). A read_committed reader of the dead-letter
// topic sees every bad record exactly once, unchanged; the output has
// every good one exactly once; the batches count the dead letters.
func TestDeadLettersExactlyOnceThroughKills(t *testing.T) {
	for _, sink := range []string{"kafka", "collect"} {
		t.Run(sink, func(t *testing.T) {
			const in, dlq, out, parts = "payments", "payments-dlq", "payments-out", 4
			pc := newProcCluster(t, 2)
			createTopic(t, pc.brokers, in, parts)
			createTopic(t, pc.brokers, dlq, 3)
			createTopic(t, pc.brokers, out, 3)
			pc.startCoordinator(0, "")
			pc.startCoordinator(1, "")
			workers := []string{"w1", "w2", "w3"}
			for _, w := range workers {
				pc.startWorker(w, "")
			}
			c := pc.client()
			waitServing(t, c)
			spec := readmeExample(t, "dead-letters.json", pc.brokers)
			spec.Name = "payments-" + sink
			spec.BatchInterval = durationpb.New(200 * time.Millisecond)
			spec.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 1500, TaskTimeout: durationpb.New(10 * time.Second)}
			if sink == "kafka" {
				spec.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
					Topic: out, TransactionTimeout: durationpb.New(10 * time.Second),
				}}}
			}
			if _, err := c.Submit(context.Background(), spec); err != nil {
				t.Fatal(err)
			}
			p := newPayments()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.produce(t, pc.brokers, in, parts, 16000, 2000)
			}()
			kills := pc.killRandomly(workers, 8*time.Second)
			wg.Wait()
			tc := &testCluster{t: t, Client: c}
			tc.waitOffsets(spec.GetName(), p.ends(in, parts), 90*time.Second)
			got, seen := readDeadLetters(t, pc.brokers, dlq, len(p.bad), 60*time.Second)
			checkDeadLetters(t, p, spec.GetName(), got, seen)

			if sink == "kafka" {
				want := &orders{want: map[string]string{}}
				for pos, kv := range p.good {
					_, v, _ := strings.Cut(kv, "=")
					want.want[pos] = v
				}
				seenOut, values := readOutput(t, pc.brokers, out, len(want.want), 60*time.Second)
				checkOutput(t, want, seenOut, values, false)
			} else {
				m := batchTotals(t, c, spec.GetName())
				if m.GetRecordsIn() != int64(p.n) || m.GetRecordsOut() != int64(p.kept) ||
					m.GetRecordsFailed() != int64(len(p.bad)) || m.GetRecordsDeadLettered() != int64(len(p.bad)) {
					t.Errorf("batches: in %d out %d failed %d dead-lettered %d, want %d, %d, %d, %d",
						m.GetRecordsIn(), m.GetRecordsOut(), m.GetRecordsFailed(), m.GetRecordsDeadLettered(), p.n, p.kept, len(p.bad), len(p.bad))
				}
			}
			t.Logf("%d kills survived; %d payments, %d dead letters exactly once", kills, p.n, len(p.bad))
		})
	}
}

// TestDeadLettersNotRewrittenAfterCrashes kills processes exactly where a
// dead letter could be written twice, with the collect sink (dead letters
// in transactions of their own) and the transactional Kafka sink (in the
// task's transaction): a worker right after its transaction committed (its
// result never reaches the coordinator: another worker re-runs the range),
// and the coordinator after every task of a batch committed and before the
// batch's etcd commit (the next leader re-runs the planned batch). Both
// re-runs find the range committed in Kafka and write nothing: every bad
// record is in the dead-letter topic exactly once.
func TestDeadLettersNotRewrittenAfterCrashes(t *testing.T) {
	for _, sink := range []string{"collect", "kafka"} {
		t.Run(sink, func(t *testing.T) {
			const in, dlq, out, parts = "payments", "payments-dlq", "payments-out", 2
			pc := newProcCluster(t, 2)
			createTopic(t, pc.brokers, in, parts)
			createTopic(t, pc.brokers, dlq, 2)
			createTopic(t, pc.brokers, out, 2)
			p := newPayments()
			p.produce(t, pc.brokers, in, parts, 4000, 0)
			coord := pc.startCoordinator(0, "before-commit:3:kill")
			c := pc.client()
			waitServing(t, c)
			spec := readmeExample(t, "dead-letters.json", pc.brokers)
			spec.BatchInterval = durationpb.New(200 * time.Millisecond)
			spec.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 400, TaskTimeout: durationpb.New(10 * time.Second)}
			if sink == "kafka" {
				spec.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
					Topic: out, TransactionTimeout: durationpb.New(10 * time.Second),
				}}}
			}
			if _, err := c.Submit(context.Background(), spec); err != nil {
				t.Fatal(err)
			}
			faulty := pc.startWorker("faulty", "after-sink-write:2:kill")
			pc.startWorker("healthy", "")
			pc.startCoordinator(1, "")
			faulty.waitOutput(t, "failpoint after-sink-write:2:kill reached", 60*time.Second)
			coord.waitOutput(t, "failpoint before-commit:3:kill reached", 60*time.Second)
			tc := &testCluster{t: t, Client: c}
			tc.waitOffsets(spec.GetName(), p.ends(in, parts), 90*time.Second)
			got, seen := readDeadLetters(t, pc.brokers, dlq, len(p.bad), 30*time.Second)
			checkDeadLetters(t, p, spec.GetName(), got, seen)
			if sink == "kafka" {
				want := &orders{want: map[string]string{}}
				for pos, kv := range p.good {
					_, v, _ := strings.Cut(kv, "=")
					want.want[pos] = v
				}
				seenOut, values := readOutput(t, pc.brokers, out, len(want.want), 30*time.Second)
				checkOutput(t, want, seenOut, values, false)
			}
			m := batchTotals(t, c, spec.GetName())
			if m.GetRecordsDeadLettered() != int64(len(p.bad)) || m.GetRecordsIn() != int64(p.n) {
				t.Errorf("batches: in %d dead-lettered %d, want %d and %d", m.GetRecordsIn(), m.GetRecordsDeadLettered(), p.n, len(p.bad))
			}
		})
	}
}

// TestFlatMapAndDeadLetterSubmitErrors: bad flatMap and dead-letter
// settings are refused at submit with InvalidArgument naming the field.
func TestFlatMapAndDeadLetterSubmitErrors(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 1, partitions: 1, topics: []string{"payments"}})
	tests := []struct {
		name, field, reason string
		modify              func(s *sluicev1.JobSpec)
	}{
		{"flatMap not a list", "steps[2].flatMap", "want a list", func(s *sluicev1.JobSpec) {
			s.Steps = append(s.Steps, &sluicev1.Step{Kind: &sluicev1.Step_FlatMap{FlatMap: "json.amount + 1.0"}})
		}},
		{"no dead-letter topic", "dead_letter.topic", "required by on_record_error RECORD_ERROR_POLICY_DEAD_LETTER", func(s *sluicev1.JobSpec) {
			s.DeadLetter = nil
		}},
		{"dead letter without the policy", "dead_letter", "only used with on_record_error RECORD_ERROR_POLICY_DEAD_LETTER", func(s *sluicev1.JobSpec) {
			s.OnRecordError = sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_SKIP
		}},
		{"bad topic name", "dead_letter.topic", "not a valid Kafka topic name", func(s *sluicev1.JobSpec) {
			s.DeadLetter.Topic = "payments dlq"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := readmeExample(t, "dead-letters.json", tc.Brokers)
			tt.modify(spec)
			_, err := tc.Client.Submit(context.Background(), spec)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.reason) {
				t.Fatalf("submit: %v, want InvalidArgument with %q", err, tt.reason)
			}
			field := violatedField(st)
			if field != tt.field {
				t.Errorf("field violation %q, want %q", field, tt.field)
			}
		})
	}
}

// TestDeadLetterStopAbortsTransactions: a collect job's dead-letter
// transaction left open by a frozen worker is listed by `sluice txn list`
// and aborted when the job stops, so that read_committed readers of the
// dead-letter topic are not held back by a stopped job.
func TestDeadLetterStopAbortsTransactions(t *testing.T) {
	const in, dlq, parts = "payments", "payments-dlq", 2
	pc := newProcCluster(t, 1)
	createTopic(t, pc.brokers, in, parts)
	createTopic(t, pc.brokers, dlq, 2)
	pc.startCoordinator(0, "")
	frozen := pc.startWorker("frozen", "mid-txn:1:stop")
	c := pc.client()
	waitServing(t, c)
	p := newPayments()
	p.produce(t, pc.brokers, in, parts, 200, 0)
	spec := readmeExample(t, "dead-letters.json", pc.brokers)
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	frozen.waitOutput(t, "failpoint mid-txn:1:stop reached", 60*time.Second)
	j, err := c.Job(context.Background(), spec.GetName())
	if err != nil {
		t.Fatal(err)
	}
	prefix := jobspec.DeadLetterTransactionalIDPrefix(spec, j.GetIncarnation())
	stopAbortsTransactions(t, c, spec.GetName(), prefix)
	_ = frozen.cmd.Process.Signal(syscall.SIGCONT)
}
