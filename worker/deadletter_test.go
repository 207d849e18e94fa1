package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// produceMixed writes n records to in/0: one in three is not JSON.
func (env *taskEnv) produceMixed(n int) (bad int) {
	env.t.Helper()
	var rs []*kgo.Record
	for j := range n {
		v := fmt.Appendf(nil, `{"n":%d}`, j)
		if j%3 == 0 {
			v, bad = fmt.Appendf(nil, "not json %d", j), bad+1
		}
		rs = append(rs, &kgo.Record{Topic: "in", Key: fmt.Appendf(nil, "k%d", j), Value: v,
			Headers: []kgo.RecordHeader{{Key: "h", Value: fmt.Appendf(nil, "%d", j)}}})
	}
	if err := env.kgo.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		env.t.Fatal(err)
	}
	return bad
}

// readTopic reads topic with read_committed until it has want records (or
// 10s pass), then half a second more for any beyond, and returns them.
func (env *taskEnv) readTopic(topic string, want int) []*kgo.Record {
	env.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		env.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	more, cancelMore := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancelMore()
	cl.PollFetches(more).EachRecord(func(r *kgo.Record) { got = append(got, r) })
	return got
}

func (env *taskEnv) createTopic(topic string) {
	env.t.Helper()
	if _, err := kadm.NewClient(env.kgo).CreateTopic(context.Background(), 2, 1, nil, topic); err != nil {
		env.t.Fatal(err)
	}
}

func deadLetterSpec(sink *sluicev1.Sink) *sluicev1.JobSpec {
	return &sluicev1.JobSpec{
		Steps:         []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "json.n >= 0"}}},
		OnRecordError: sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER,
		DeadLetter:    &sluicev1.DeadLetter{Topic: "dlq"},
		Sink:          sink,
	}
}

// checkDeadLetters checks that recs are the bad records of produceMixed,
// unchanged, each once, with the dead-letter headers and no sink headers.
func checkDeadLetters(t *testing.T, recs []*kgo.Record, bad int) {
	t.Helper()
	if len(recs) != bad {
		t.Fatalf("%d dead letters, want %d", len(recs), bad)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		hdrs := map[string]string{}
		for _, h := range r.Headers {
			hdrs[h.Key] = string(h.Value)
		}
		off := hdrs[steps.HeaderDLQOffset]
		if seen[off] {
			t.Fatalf("offset %s dead-lettered twice", off)
		}
		seen[off] = true
		if string(r.Value) != "not json "+off || string(r.Key) != "k"+off || r.Headers[0].Key != "h" || hdrs["h"] != off {
			t.Errorf("dead letter of offset %s: %q=%q %v, want the record unchanged", off, r.Key, r.Value, r.Headers)
		}
		if hdrs[steps.HeaderDLQField] != "steps[0].filter" || hdrs[steps.HeaderDLQTopic] != "in" || hdrs[steps.HeaderDLQPartition] != "0" {
			t.Errorf("dead letter of offset %s: headers %v", off, hdrs)
		}
		if _, ok := hdrs["sluice-src"]; ok {
			t.Errorf("dead letter of offset %s has the sink's sluice-src header", off)
		}
	}
}

// A collect task writes its dead letters in a transaction of its own that
// commits the range's end to the job's dead-letter group; a second attempt
// of the range finds it and writes nothing, and a task without a bad
// record makes no producer.
func TestRunTaskDeadLettersCollect(t *testing.T) {
	env := newTaskEnv(t, nil)
	env.createTopic("dlq")
	const n = 9000 // dead letters over several chunks
	bad := env.produceMixed(n)
	res := env.w.runTask(context.Background(), env.task(deadLetterSpec(nil), n))
	if res.GetError() != "" || res.GetRecordsOut() != int64(n-bad) || len(res.GetRecords()) != n-bad ||
		res.GetRecordsFailed() != int64(bad) || res.GetRecordsDeadLettered() != int64(bad) {
		t.Fatalf("result: error %q, out %d, records %d, failed %d, dead-lettered %d", res.GetError(), res.GetRecordsOut(),
			len(res.GetRecords()), res.GetRecordsFailed(), res.GetRecordsDeadLettered())
	}
	checkDeadLetters(t, env.readTopic("dlq", bad), bad)
	offs, err := kadm.NewClient(env.kgo).FetchOffsets(context.Background(), "sluice:j:0123456789abcdef:dlq")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup("in", 0); o.At != n {
		t.Errorf("dead-letter group offset %d, want %d", o.At, n)
	}

	// A retry of the range, as after a lost result: the same counts, and
	// nothing written again.
	task := env.task(deadLetterSpec(nil), n)
	task.Key.Attempt = 2
	res = env.w.runTask(context.Background(), task)
	if res.GetError() != "" || res.GetRecordsDeadLettered() != int64(bad) {
		t.Fatalf("retry: error %q, dead-lettered %d", res.GetError(), res.GetRecordsDeadLettered())
	}
	checkDeadLetters(t, env.readTopic("dlq", bad), bad)

	// A range without a bad record opens no transaction.
	env.w.sinks.Close()
	env.w.sinks = kafkasrc.NewSinks(nil)
	task = env.task(deadLetterSpec(nil), n)
	task.Range.FromOffset, task.Range.UntilOffset = 1, 3
	if res = env.w.runTask(context.Background(), task); res.GetError() != "" || res.GetRecordsDeadLettered() != 0 {
		t.Fatalf("good range: error %q, dead-lettered %d", res.GetError(), res.GetRecordsDeadLettered())
	}
	if txns, idem, groups := env.w.sinks.Clients(); txns+idem+groups != 0 {
		t.Errorf("a task without dead letters made %d transactional writers, %d producers, %d group clients", txns, idem, groups)
	}
}

// With the transactional Kafka sink the dead letters are in the task's
// transaction: a read_committed reader sees none of them before its commit.
func TestRunTaskDeadLettersInSinkTransaction(t *testing.T) {
	env := newTaskEnv(t, func(c *Config) {})
	env.createTopic("dlq")
	const n = 300
	bad := env.produceMixed(n)
	var before, beforeHW int64 = -1, -1
	env.w.cfg.BeforeCommit = func(*sluicev1.Task) {
		// The records are on their way: wait until the log has them.
		adm := kadm.NewClient(env.kgo)
		for deadline := time.Now().Add(20 * time.Second); beforeHW < int64(bad) && time.Now().Before(deadline); {
			hw, err := adm.ListEndOffsets(context.Background(), "dlq")
			if err != nil {
				t.Error(err)
				return
			}
			beforeHW = 0
			hw.Each(func(o kadm.ListedOffset) { beforeHW += o.Offset })
			time.Sleep(10 * time.Millisecond)
		}
		lso, err := adm.ListCommittedOffsets(context.Background(), "dlq")
		if err != nil {
			t.Error(err)
			return
		}
		before = 0
		lso.Each(func(o kadm.ListedOffset) { before += o.Offset })
	}
	spec := deadLetterSpec(&sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
		Topic: "out", TransactionTimeout: durationpb.New(time.Minute),
	}}})
	res := env.w.runTask(context.Background(), env.task(spec, n))
	if res.GetError() != "" || res.GetRecordsOut() != int64(n-bad) || res.GetRecordsDeadLettered() != int64(bad) {
		t.Fatalf("result: error %q, out %d, dead-lettered %d", res.GetError(), res.GetRecordsOut(), res.GetRecordsDeadLettered())
	}
	if before != 0 || beforeHW < int64(bad) {
		t.Errorf("before the commit: dead-letter last stable offsets %d (want 0), high watermarks %d (want at least %d)", before, beforeHW, bad)
	}
	checkDeadLetters(t, env.readTopic("dlq", bad), bad)
	if got := len(env.readTopic("out", n-bad)); got != n-bad {
		t.Errorf("%d output records committed, want %d", got, n-bad)
	}
}

// With a flatMap, the records of one source record are told apart by
// sluice-src-element, their position in its output.
func TestRunTaskFlatMapElementHeader(t *testing.T) {
	env := newTaskEnv(t, nil)
	const n = 5000 // over a chunk of 4,096 records
	var rs []*kgo.Record
	for j := range n {
		rs = append(rs, &kgo.Record{Topic: "in", Value: fmt.Appendf(nil, "%d", j%3)})
	}
	if err := env.kgo.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	spec := &sluicev1.JobSpec{
		Steps: []*sluicev1.Step{{Kind: &sluicev1.Step_FlatMap{FlatMap: "lists.range(int(value))"}}},
		Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
			Topic: "out", TransactionTimeout: durationpb.New(time.Minute),
		}}},
	}
	want := 0
	for j := range n {
		want += j % 3
	}
	checkElementHeaders(t, env, spec, n, want)
}

// With the idempotent sink, its producer writes the dead letters too.
func TestRunTaskDeadLettersIdempotentSink(t *testing.T) {
	env := newTaskEnv(t, nil)
	env.createTopic("dlq")
	const n = 300
	bad := env.produceMixed(n)
	spec := deadLetterSpec(&sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
		Topic: "out", Mode: sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT,
	}}})
	res := env.w.runTask(context.Background(), env.task(spec, n))
	if res.GetError() != "" || res.GetRecordsOut() != int64(n-bad) || res.GetRecordsDeadLettered() != int64(bad) {
		t.Fatalf("result: error %q, out %d, dead-lettered %d", res.GetError(), res.GetRecordsOut(), res.GetRecordsDeadLettered())
	}
	checkDeadLetters(t, env.readTopic("dlq", bad), bad)
	if txns, _, _ := env.w.sinks.Clients(); txns != 0 {
		t.Errorf("%d transactional writers for an idempotent sink", txns)
	}
}

// checkElementHeaders runs a task of n records of spec, whose Kafka sink
// topic "out" must then hold want records, each value being its position
// among the records of its source: every (sluice-src, sluice-src-element)
// once.
func checkElementHeaders(t *testing.T, env *taskEnv, spec *sluicev1.JobSpec, n int64, want int) {
	t.Helper()
	res := env.w.runTask(context.Background(), env.task(spec, n))
	if res.GetError() != "" || res.GetRecordsOut() != int64(want) {
		t.Fatalf("result: error %q, out %d, want %d", res.GetError(), res.GetRecordsOut(), want)
	}
	seen := map[string]bool{}
	for _, r := range env.readTopic("out", want) {
		var src, elem string
		for _, h := range r.Headers {
			switch h.Key {
			case "sluice-src":
				src = string(h.Value)
			case "sluice-src-element":
				elem = string(h.Value)
			}
		}
		if elem != string(r.Value) || seen[src+"#"+elem] {
			t.Fatalf("record %s: element %q, value %q (seen before: %v)", src, elem, r.Value, seen[src+"#"+elem])
		}
		seen[src+"#"+elem] = true
	}
	if len(seen) != want {
		t.Fatalf("%d distinct records, want %d", len(seen), want)
	}
}
