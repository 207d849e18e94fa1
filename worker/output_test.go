package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestConfigConsumerMemory(t *testing.T) {
	for _, tc := range []struct {
		memory int64
		cache  int
		err    string
	}{
		{memory: kafkasrc.DefaultConsumerMemory, cache: 64},
		{memory: 8 << 20, cache: 4},
		{memory: 64 << 20, cache: 64, err: "consumer memory 67108864 bytes for 64 cached consumers is 1048576 bytes each, below the 2 MiB a consumer needs: raise the consumer memory to at least 128 MiB or lower the consumer cache"},
		{memory: 0, cache: 1, err: "below the 2 MiB"},
	} {
		cfg := DefaultConfig()
		cfg.Coordinators = []string{"c:1"}
		cfg.ConsumerMemory, cfg.ConsumerCacheSize = tc.memory, tc.cache
		err := cfg.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("memory %d, cache %d: %v", tc.memory, tc.cache, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("memory %d, cache %d: error %v, want %q", tc.memory, tc.cache, err, tc.err)
		}
	}
}

// taskEnv is a kfake broker with a source topic "in" of one partition and
// an output topic "out", and a worker that is not connected to any
// coordinator: tests call runTask directly.
type taskEnv struct {
	t       *testing.T
	brokers string
	kgo     *kgo.Client
	w       *Worker
}

func newTaskEnv(t *testing.T, cfg func(*Config)) *taskEnv {
	t.Helper()
	k, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"), kfake.SeedTopics(3, "out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	env := &taskEnv{t: t, brokers: k.ListenAddrs()[0]}
	env.kgo, err = kgo.NewClient(kgo.SeedBrokers(env.brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.kgo.Close)
	c := DefaultConfig()
	c.Coordinators = []string{"127.0.0.1:1"}
	c.ID = "w1"
	c.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: testWriter{t}})
	if cfg != nil {
		cfg(&c)
	}
	env.w, err = New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.w.cache.Close)
	t.Cleanup(env.w.pool.Close) // its consumers log through t
	t.Cleanup(env.w.sinks.Close)
	return env
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// produce writes n records of size bytes to in/0.
func (env *taskEnv) produce(n, size int) {
	env.t.Helper()
	for i := 0; i < n; i += 1000 {
		var rs []*kgo.Record
		for j := i; j < min(n, i+1000); j++ {
			v := fmt.Appendf(nil, "%08d", j)
			rs = append(rs, &kgo.Record{Topic: "in", Value: append(v, strings.Repeat("x", size-len(v))...)})
		}
		if err := env.kgo.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
			env.t.Fatal(err)
		}
	}
}

func (env *taskEnv) task(spec *sluicev1.JobSpec, until int64) *sluicev1.Task {
	spec.Name = "j"
	spec.Source = &sluicev1.KafkaSource{BootstrapServers: env.brokers, Topics: []string{"in"}}
	return &sluicev1.Task{
		Key:         &sluicev1.TaskKey{Job: "j", BatchId: 1, Index: 0, Attempt: 1},
		Range:       &sluicev1.OffsetRange{Topic: "in", Partition: 0, FromOffset: 0, UntilOffset: until},
		Spec:        spec,
		SpecVersion: 1,
		Incarnation: "0123456789abcdef",
		Timeout:     durationpb.New(time.Minute),
	}
}

// A collect task whose output passes limits.max_task_output_bytes fails at
// once, fatally, naming the limit, the record and what to do.
func TestRunTaskOutputCap(t *testing.T) {
	env := newTaskEnv(t, nil)
	env.produce(1000, 1024)
	spec := &sluicev1.JobSpec{Limits: &sluicev1.Limits{MaxTaskOutputBytes: 100 << 10}}
	res := env.w.runTask(context.Background(), env.task(spec, 1000))
	// A record's output is its value, the source topic's name and 24
	// bytes of overhead.
	per := int64(1024 + len("in") + 24)
	at := (100 << 10) / per // the first record past the limit
	want := fmt.Sprintf("task output of %d bytes exceeds limits.max_task_output_bytes 102400 (topic in partition 0 at offset %d): "+
		"lower limits.max_records_per_batch or limits.max_records_per_task, raise limits.max_task_output_bytes (at most 48 MiB), aggregate, or write to a Kafka sink",
		(at+1)*per, at)
	if !res.GetFatal() || res.GetRetryable() || !strings.Contains(res.GetError(), want) {
		t.Fatalf("result: fatal %v, retryable %v, error %q; want fatal with\n%s", res.GetFatal(), res.GetRetryable(), res.GetError(), want)
	}
	if len(res.GetRecords()) != 0 {
		t.Errorf("a failed task returned %d records", len(res.GetRecords()))
	}

	// Under the default limit the same task returns every record.
	res = env.w.runTask(context.Background(), env.task(&sluicev1.JobSpec{}, 1000))
	if res.GetError() != "" || len(res.GetRecords()) != 1000 || res.GetRecordsOut() != 1000 {
		t.Errorf("default limit: error %q, %d records, %d out", res.GetError(), len(res.GetRecords()), res.GetRecordsOut())
	}
}

// A transactional Kafka sink task whose output is many chunks produces
// them while it reads, into its transaction: with the read held after its
// second chunk, the output topic's log holds that chunk's records, and no
// reader of committed data sees one. Then exactly the records are
// committed with the group's offset, and a second attempt of the range
// writes nothing.
func TestRunTaskKafkaSinkChunks(t *testing.T) {
	const n = 20000 // about 5 chunks by count, 5 by bytes
	env := newTaskEnv(t, nil)
	var hw, lso int64
	chunks := 0
	env.w.afterChunk = func(_ *sluicev1.Task, chunk int) {
		chunks = chunk
		if chunk != 2 {
			return
		}
		// The read waits here: the records can only come from the chunks.
		hw, lso = env.waitEnd(chunkRecords, false), env.endOffsets(true)
	}
	env.produce(n, 200)
	spec := &sluicev1.JobSpec{
		Steps: []*sluicev1.Step{{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{Value: "value + '!'"}}}},
		Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
			Topic: "out", Mode: sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL, TransactionTimeout: durationpb.New(time.Minute),
		}}},
	}
	task := env.task(spec, n)
	res := env.w.runTask(context.Background(), task)
	if res.GetError() != "" || res.GetRecordsOut() != n || len(res.GetRecords()) != 0 {
		t.Fatalf("result: error %q, %d out, %d records returned", res.GetError(), res.GetRecordsOut(), len(res.GetRecords()))
	}
	if chunks < 4 {
		t.Errorf("%d chunks written while reading, want at least 4", chunks)
	}
	if hw < chunkRecords || hw >= n || lso != 0 {
		t.Errorf("in the middle of the read: high watermarks %d (want at least %d, below %d), last stable offsets %d (want 0)", hw, chunkRecords, n, lso)
	}
	// A commit marker per partition written to: keyless records stick to
	// a partition for a while, so one of the three may have none. Kafka
	// writes the markers after the commit returns (the transaction
	// coordinator does, asynchronously).
	end := n + env.partitionsWritten()
	if got := env.waitEnd(end, true); got != end {
		t.Errorf("last stable offsets %d after the commit, want %d", got, end)
	}
	seen := env.readCommitted(n)
	if len(seen) != n {
		t.Errorf("%d distinct sources committed, want %d", len(seen), n)
	}
	for src, c := range seen {
		if c != 1 {
			t.Errorf("%s committed %d times", src, c)
			break
		}
	}
	offs, err := kadm.NewClient(env.kgo).FetchOffsets(context.Background(), "sluice:j:0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup("in", 0); o.At != n {
		t.Errorf("group offset %d, want %d", o.At, n)
	}

	task.Key.Attempt = 2
	res = env.w.runTask(context.Background(), task)
	if res.GetError() != "" || res.GetRecordsOut() != n {
		t.Fatalf("second attempt: error %q, %d out", res.GetError(), res.GetRecordsOut())
	}
	if got := env.endOffsets(false); got != end {
		t.Errorf("high watermarks %d after a second attempt of a committed range, want %d", got, end)
	}
}

// endOffsets sums the end offsets of out: the high watermarks, or with
// committed the last stable offsets.
func (env *taskEnv) endOffsets(committed bool) int64 {
	adm := kadm.NewClient(env.kgo)
	list := adm.ListEndOffsets
	if committed {
		list = adm.ListCommittedOffsets
	}
	offs, err := list(context.Background(), "out")
	if err != nil {
		env.t.Fatal(err)
	}
	var sum int64
	offs.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	return sum
}

// partitionsWritten is the number of out's partitions holding records.
func (env *taskEnv) partitionsWritten() int64 {
	offs, err := kadm.NewClient(env.kgo).ListEndOffsets(context.Background(), "out")
	if err != nil {
		env.t.Fatal(err)
	}
	var n int64
	offs.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			n++
		}
	})
	return n
}

// waitEnd waits until out's end offsets (endOffsets) add up to at least
// want, and returns them.
func (env *taskEnv) waitEnd(want int64, committed bool) int64 {
	deadline := time.Now().Add(20 * time.Second)
	end := env.endOffsets(committed)
	for ; end < want && time.Now().Before(deadline); end = env.endOffsets(committed) {
		time.Sleep(10 * time.Millisecond)
	}
	return end
}

// readCommitted reads out with read_committed until it has want records,
// and counts them by their sluice-src header.
func (env *taskEnv) readCommitted(want int) map[string]int {
	env.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers), kgo.ConsumeTopics("out"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		env.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen, total := map[string]int{}, 0
	for total < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			total++
			var job, batch string
			for _, h := range r.Headers {
				switch h.Key {
				case "sluice-src":
					seen[string(h.Value)]++
				case "sluice-job":
					job = string(h.Value)
				case "sluice-batch":
					batch = string(h.Value)
				}
			}
			if job != "j" || batch != "1" || !strings.HasSuffix(string(r.Value), "!") {
				env.t.Errorf("record %s: job %q batch %q value %.20q", r.Key, job, batch, r.Value)
			}
		})
	}
	return seen
}

// A task that fails after writing chunks (a record error under the FAIL
// policy) aborts its transaction: the next attempt's records are the only
// ones committed, each once.
func TestRunTaskKafkaSinkFailureAborts(t *testing.T) {
	const n = 20000
	env := newTaskEnv(t, nil)
	env.produce(n, 200)
	sink := &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
		Topic: "out", Mode: sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL, TransactionTimeout: durationpb.New(time.Minute),
	}}}
	bad := &sluicev1.JobSpec{Sink: sink, Steps: []*sluicev1.Step{{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{
		Value: "value + string(100 / (15000 - int(value.substring(0, 8))))",
	}}}}}
	task := env.task(bad, n)
	env.w.afterChunk = func(_ *sluicev1.Task, chunk int) {
		if chunk == 3 { // two chunks in the log before the failure
			env.waitEnd(2*chunkRecords, false)
		}
	}
	res := env.w.runTask(context.Background(), task)
	env.w.afterChunk = nil
	if !res.GetFatal() || !strings.Contains(res.GetError(), "offset 15000") || !strings.Contains(res.GetError(), "division by zero") {
		t.Fatalf("result: fatal %v, error %q; want the record error at offset 15000", res.GetFatal(), res.GetError())
	}
	hw, lso := env.endOffsets(false), env.endOffsets(true)
	if hw < 2*chunkRecords || lso != hw {
		t.Fatalf("after the failure: high watermarks %d (want at least %d: chunks written), last stable offsets %d (want them equal: aborted)", hw, 2*chunkRecords, lso)
	}
	good := &sluicev1.JobSpec{Sink: sink, Steps: []*sluicev1.Step{{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{Value: "value + '!'"}}}}}
	task = env.task(good, n)
	task.Key.Attempt, task.SpecVersion = 2, 2
	if res := env.w.runTask(context.Background(), task); res.GetError() != "" {
		t.Fatal(res.GetError())
	}
	seen := env.readCommitted(n)
	if len(seen) != n {
		t.Errorf("%d distinct sources committed, want %d", len(seen), n)
	}
	for src, c := range seen {
		if c != 1 {
			t.Errorf("%s committed %d times", src, c)
			break
		}
	}
}

// In idempotent mode, chunks go to the shared producer and the task ends
// when every record is delivered.
func TestRunTaskKafkaSinkIdempotent(t *testing.T) {
	const n = 10000
	env := newTaskEnv(t, nil)
	env.produce(n, 100)
	spec := &sluicev1.JobSpec{Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
		Topic: "out", Mode: sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT,
	}}}}
	chunks := 0
	env.w.afterChunk = func(_ *sluicev1.Task, c int) { chunks = c }
	res := env.w.runTask(context.Background(), env.task(spec, n))
	if res.GetError() != "" || res.GetRecordsOut() != n || len(res.GetRecords()) != 0 {
		t.Fatalf("result: error %q, %d out, %d records returned", res.GetError(), res.GetRecordsOut(), len(res.GetRecords()))
	}
	if chunks < 2 {
		t.Errorf("%d chunks written while reading, want at least 2", chunks)
	}
	if hw := env.endOffsets(false); hw != n {
		t.Errorf("high watermarks %d when the task ended, want %d", hw, n)
	}
}
