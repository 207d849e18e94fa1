package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/schema/schematest"
)

// readmeSchemaJob is the README's Schema Registry example job, pointed at
// the test's Kafka and registry.
func readmeSchemaJob(t *testing.T, brokers, registry string) *sluicev1.JobSpec {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(readme), "### Schema Registry formats\n")
	if !ok {
		t.Fatal("README has no Schema Registry formats section")
	}
	_, block, _ := strings.Cut(sec, "```json\n")
	block, _, _ = strings.Cut(block, "```")
	block = strings.ReplaceAll(block, "localhost:9092", brokers)
	block = strings.ReplaceAll(block, "http://localhost:8081", registry)
	spec := &sluicev1.JobSpec{}
	if err := protojson.Unmarshal([]byte(block), spec); err != nil {
		t.Fatalf("README example: %v\n%s", err, block)
	}
	return spec
}

type order struct {
	Country string  `json:"country"`
	Amount  float64 `json:"amount"`
	Status  string  `json:"status"`
}

// schemaOrders are n orders and the per-country count and sum of the PAID ones.
func schemaOrders(n int) ([]order, map[string]int64, map[string]float64) {
	countries := []string{"FR", "DE", "IT"}
	statuses := []string{"PAID", "NEW", "PAID", "CANCELLED"}
	var out []order
	counts, sums := map[string]int64{}, map[string]float64{}
	for i := range n {
		o := order{Country: countries[i%3], Amount: float64(i%7) + 0.5, Status: statuses[i%4]}
		out = append(out, o)
		if o.Status == "PAID" {
			counts[o.Country]++
			sums[o.Country] += o.Amount
		}
	}
	return out, counts, sums
}

const orderAvro = `{"type": "record", "name": "Order", "fields": [
  {"name": "country", "type": "string"},
  {"name": "amount", "type": "double"},
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "CANCELLED"]}}]}`

const orderProto = `syntax = "proto3";
package shop;
message Order {
  string country = 1;
  double amount = 2;
  enum Status { NEW = 0; PAID = 1; CANCELLED = 2; }
  Status status = 3;
}
`

// TestSchemaRegistryFormats runs the README's job on orders written by
// Confluent's serializers in each format, against a registry served by
// the test, with exact per-country counts and sums.
func TestSchemaRegistryFormats(t *testing.T) {
	const n, partitions = 400, 4
	list, wantCounts, wantSums := schemaOrders(n)
	for _, format := range []string{"avro", "protobuf", "jsonschema"} {
		t.Run(format, func(t *testing.T) {
			tc := newTestCluster(t, clusterOptions{workers: 2, partitions: partitions, topics: []string{"orders"}})
			reg := schematest.New("")
			defer reg.Close()
			var ser func(o order) []byte
			switch format {
			case "avro":
				s := reg.Avro(t, orderAvro, false)
				ser = func(o order) []byte {
					return s("orders", map[string]any{"country": o.Country, "amount": o.Amount, "status": o.Status})
				}
			case "protobuf":
				md := schematest.Proto(t, orderProto)["Order"]
				s := reg.Protobuf(t, false)
				ser = func(o order) []byte {
					m := dynamicpb.NewMessage(md)
					f := md.Fields()
					m.Set(f.ByName("country"), protoreflect.ValueOfString(o.Country))
					m.Set(f.ByName("amount"), protoreflect.ValueOfFloat64(o.Amount))
					m.Set(f.ByName("status"), protoreflect.ValueOfEnum(f.ByName("status").Enum().Values().ByName(protoreflect.Name(o.Status)).Number()))
					return s("orders", m)
				}
			case "jsonschema":
				s := reg.JSONSchema(t, false)
				ser = func(o order) []byte { return s("orders", o) }
			}
			prod := tc.producer()
			want := map[string]int64{}
			for i, o := range list {
				p := int32(i % partitions)
				if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: "orders", Partition: p, Value: ser(o)}).FirstErr(); err != nil {
					t.Fatal(err)
				}
				want[fmt.Sprintf("orders/%d", p)]++
			}
			spec := readmeSchemaJob(t, tc.Brokers, reg.URL)
			spec.Source.ValueFormat = format
			if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
				t.Fatal(err)
			}
			tc.waitOffsets(spec.GetName(), want, 60*time.Second)
			resp, err := tc.Client.Results(context.Background(), spec.GetName(), 0, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			gotCounts, gotSums := map[string]int64{}, map[string]float64{}
			for _, a := range resp.GetMerged() {
				gotCounts[a.GetKey()], gotSums[a.GetKey()] = a.GetCount(), a.GetSum()
			}
			if fmt.Sprint(gotCounts) != fmt.Sprint(wantCounts) || fmt.Sprint(gotSums) != fmt.Sprint(wantSums) {
				t.Errorf("counts %v sums %v, want %v %v", gotCounts, gotSums, wantCounts, wantSums)
			}
		})
	}
}

// TestSchemaRegistryRecordErrors: an unknown schema id and a malformed
// payload fail the job under FAIL, naming the record and the schema id, and
// are skipped and counted under SKIP.
func TestSchemaRegistryRecordErrors(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 1, partitions: 1, topics: []string{"orders", "bad-id", "bad-payload"}})
	reg := schematest.New("")
	defer reg.Close()
	s := reg.Avro(t, orderAvro, false)
	prod := tc.producer()
	produce := func(topic string, v []byte) {
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	good := s("orders", map[string]any{"country": "FR", "amount": 2.0, "status": "PAID"})
	for _, topic := range []string{"bad-id", "bad-payload"} {
		for i := range 10 {
			switch {
			case i == 4 && topic == "bad-id":
				produce(topic, []byte{0, 0, 0, 0, 99, 2, 'x'})
			case i == 4:
				produce(topic, append(good[:5:5], 0x01)) // a negative string length
			default:
				produce(topic, good)
			}
		}
	}
	for _, c := range []struct {
		topic, want string
	}{
		{"bad-id", "record bad-id/0 offset 4: source.value_format: avro: schema id 99: not found in the schema registry"},
		{"bad-payload", "record bad-payload/0 offset 4: source.value_format: avro: schema id 1: malformed payload"},
	} {
		spec := readmeSchemaJob(t, tc.Brokers, reg.URL)
		spec.Source.Topics = []string{c.topic}
		spec.Name = "fail-" + c.topic
		if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			j, err := tc.Client.Job(context.Background(), spec.GetName())
			if err == nil && j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
				if !strings.Contains(j.GetMessage(), c.want) {
					t.Errorf("%s: message %q, want it to contain %q", c.topic, j.GetMessage(), c.want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: job did not fail: %v", c.topic, j)
			}
			time.Sleep(50 * time.Millisecond)
		}

		spec.Name = "skip-" + c.topic
		spec.OnRecordError = sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_SKIP
		if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
		tc.waitOffsets(spec.GetName(), map[string]int64{c.topic + "/0": 10}, 30*time.Second)
		var failed int64
		bs, err := tc.Client.Batches(context.Background(), spec.GetName(), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			failed += b.GetMetrics().GetRecordsFailed()
		}
		if got := tc.mergedCounts(spec.GetName()); failed != 1 || got["FR"] != 9 {
			t.Errorf("%s skipped: records_failed %d, counts %v; want 1 and FR: 9", c.topic, failed, got)
		}
	}
}

// TestSchemaRegistryUnavailable: a registry that cannot answer is a
// transient task failure, not a record error: the tasks are retried and the
// results are exact once it answers; one that never answers fails the job
// with a message saying so once the retries are used up.
func TestSchemaRegistryUnavailable(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 1, partitions: 2, topics: []string{"orders"}})
	reg := schematest.New("")
	defer reg.Close()
	s := reg.Avro(t, orderAvro, false)
	prod := tc.producer()
	for i := range 20 {
		v := s("orders", map[string]any{"country": "FR", "amount": 1.0, "status": "PAID"})
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: "orders", Partition: int32(i % 2), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	reg.Unavailable.Store(3)
	spec := readmeSchemaJob(t, tc.Brokers, reg.URL)
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets(spec.GetName(), map[string]int64{"orders/0": 10, "orders/1": 10}, 60*time.Second)
	if got := tc.mergedCounts(spec.GetName()); got["FR"] != 20 {
		t.Errorf("counts %v, want FR: 20", got)
	}
	bs, err := tc.Client.Batches(context.Background(), spec.GetName(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if n := b.GetMetrics().GetRecordsFailed(); n != 0 {
			t.Errorf("batch %d: %d records failed, want 0", b.GetId(), n)
		}
	}
	if reg.Unavailable.Load() != 0 {
		t.Errorf("the registry's 503s were not all seen")
	}

	// Never available: the job fails once its transient retries are spent.
	reg2 := schematest.New("")
	defer reg2.Close()
	reg2.Unavailable.Store(-1)
	spec = readmeSchemaJob(t, tc.Brokers, reg2.URL)
	spec.Name = "never"
	spec.Limits = &sluicev1.Limits{MaxTaskRetries: 2}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		j, err := tc.Client.Job(context.Background(), spec.GetName())
		if err == nil && j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			if !strings.Contains(j.GetMessage(), "schema registry unavailable") || !strings.Contains(j.GetMessage(), "503") {
				t.Errorf("message %q, want it to say the schema registry is unavailable (503)", j.GetMessage())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job did not fail: %v", j)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSchemaRegistryKeyFormat decodes Avro keys into record_key beside
// plain JSON values.
func TestSchemaRegistryKeyFormat(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 1, partitions: 2, topics: []string{"payments"}})
	reg := schematest.New("")
	defer reg.Close()
	key := reg.Avro(t, `{"type": "record", "name": "Customer", "fields": [{"name": "id", "type": "string"}, {"name": "tier", "type": ["null", "int"]}]}`, true)
	prod := tc.producer()
	wantSums := map[string]float64{}
	for i := range 60 {
		id := fmt.Sprintf("c%d", i%4)
		var tier any
		if i%4 != 3 {
			tier = i % 4
		}
		k := key("payments", map[string]any{"id": id, "tier": tier})
		v := fmt.Sprintf(`{"amount": %d}`, i)
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: "payments", Partition: int32(i % 2), Key: k, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if i%4 != 3 { // tier null: filtered out
			wantSums[id] += float64(i)
		}
	}
	spec := &sluicev1.JobSpec{
		Name: "by-customer",
		Source: &sluicev1.KafkaSource{
			BootstrapServers: tc.Brokers, Topics: []string{"payments"}, KeyFormat: "avro",
			SchemaRegistry: &sluicev1.SchemaRegistry{Url: reg.URL},
		},
		Steps: []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "record_key.tier != null"}}},
		Aggregate: &sluicev1.Aggregate{Key: "record_key.id", Value: "json.amount",
			Functions: []sluicev1.AggregateFunction{sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM}},
	}
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	tc.waitOffsets(spec.GetName(), map[string]int64{"payments/0": 30, "payments/1": 30}, 60*time.Second)
	resp, err := tc.Client.Results(context.Background(), spec.GetName(), 0, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, a := range resp.GetMerged() {
		got[a.GetKey()] = a.GetSum()
	}
	if fmt.Sprint(got) != fmt.Sprint(wantSums) {
		t.Errorf("sums %v, want %v", got, wantSums)
	}
}

// TestSchemaRegistryKill9 kills a worker mid-task and the coordinator before
// a commit (SIGKILL, separate processes) while a job counts Avro records by
// a decoded field: after the restart the counts equal the ground truth.
func TestSchemaRegistryKill9(t *testing.T) {
	const topic, parts = "avro-crash", 4
	pc := newProcCluster(t, 1)
	createTopic(t, pc.brokers, topic, parts)
	reg := schematest.New("")
	defer reg.Close()
	coord := pc.startCoordinator(0, "before-commit:3")
	killed := pc.startWorker("w-killed", "mid-task:2:kill")
	pc.startWorker("w-ok", "")
	c := pc.client()
	waitServing(t, c)

	ser := reg.Avro(t, `{"type": "record", "name": "Click", "fields": [{"name": "user", "type": "string"}, {"name": "n", "type": "long"}]}`, false)
	cl, err := kgo.NewClient(kgo.SeedBrokers(pc.brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want, ends := map[string]int64{}, map[string]int64{}
	for i := 0; i < 6000; i += 100 {
		var batch []*kgo.Record
		for j := i; j < i+100; j++ {
			user := fmt.Sprintf("u%02d", (j*7+j/13)%23)
			p := int32(j % parts)
			batch = append(batch, &kgo.Record{Topic: topic, Partition: p, Value: ser(topic, map[string]any{"user": user, "n": int64(j)})})
			want[user]++
			ends[fmt.Sprintf("%s/%d", topic, p)]++
		}
		if err := cl.ProduceSync(context.Background(), batch...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	spec := chaosJob(pc.brokers, topic)
	spec.Name = "avro-crash"
	spec.Source.ValueFormat = "avro"
	spec.Source.SchemaRegistry = &sluicev1.SchemaRegistry{Url: reg.URL}
	spec.Aggregate = &sluicev1.Aggregate{Key: "record.user"}
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	killed.waitExit(t, 60*time.Second)
	coord.waitExit(t, 60*time.Second)
	if !strings.Contains(coord.out.String(), "failpoint before-commit:3 reached") {
		t.Fatalf("coordinator exited but not at the failpoint:\n%s", lastLines(coord.out.String(), 20))
	}
	pc.startCoordinator(0, "")
	tc := &testCluster{t: t, Client: c}
	tc.waitOffsets(spec.GetName(), ends, 90*time.Second)
	if got := tc.mergedCounts(spec.GetName()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counts differ from the ground truth:\n got %v\nwant %v", got, want)
	}
	start := map[string]int64{}
	for k := range ends {
		start[k] = 0
	}
	tc.checkRanges(spec.GetName(), start, ends)
}
