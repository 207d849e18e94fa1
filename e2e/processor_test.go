package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
	"github.com/sluice-stream/sluice/worker"
)

// lineStream produces lines of words and keeps the ground truth of the
// README's word-count job: per word, how many times it appears outside the
// stop words, in the lines the broker acknowledged.
type lineStream struct {
	mu     sync.Mutex
	rng    *rand.Rand
	n      int
	counts map[string]int64
	ends   map[string]int64
}

var (
	lineWords = []string{"kafka", "stream", "batch", "offset", "worker", "Coordinator", "etcd", "partition", "exactly", "once"}
	stopWords = map[string]bool{"the": true, "a": true, "of": true, "and": true}
)

// produce writes n lines to topic round-robin over its partitions, at about
// rate lines a second (0: as fast as acknowledged).
func (s *lineStream) produce(t *testing.T, brokers, topic string, parts int32, n, rate int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RecordRetries(100))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	start := time.Now()
	for sent := 0; sent < n; {
		var batch []*kgo.Record
		s.mu.Lock()
		for ; len(batch) < 100 && sent < n; sent++ {
			// 0 to 7 words, stop words among them: some lines give no word.
			var words []string
			for range s.rng.Intn(8) {
				if s.rng.Intn(4) == 0 {
					words = append(words, []string{"the", "a", "of", "AND"}[s.rng.Intn(4)])
				} else {
					words = append(words, lineWords[s.rng.Intn(len(lineWords))])
				}
			}
			batch = append(batch, &kgo.Record{Topic: topic, Partition: int32(s.n) % parts, Value: []byte(strings.Join(words, "  "))})
			s.n++
		}
		s.mu.Unlock()
		if err := cl.ProduceSync(context.Background(), batch...).FirstErr(); err != nil {
			t.Errorf("produce: %v", err)
			return
		}
		s.mu.Lock()
		for _, r := range batch {
			for _, w := range strings.Fields(strings.ToLower(string(r.Value))) {
				if !stopWords[w] {
					s.counts[w]++
				}
			}
			s.ends[fmt.Sprintf("%s/%d", r.Topic, r.Partition)]++
		}
		s.mu.Unlock()
		if rate > 0 {
			if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
}

// buildExample builds an example program into a temporary directory.
func buildExample(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(dir))
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/"+dir).CombinedOutput(); err != nil {
		t.Fatalf("build examples/%s: %v\n%s", dir, err, out)
	}
	return bin
}

// waitMessage waits until the job's message contains want ("" waits for no
// message) and returns it.
func waitMessage(t *testing.T, c *client.Client, job, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		j, err := c.Job(context.Background(), job)
		if err == nil {
			last = j.GetMessage()
			if (want == "" && last == "") || (want != "" && strings.Contains(last, want)) {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %s message %q, want %q", job, last, want)
	return ""
}

// TestProcessorExampleWorker runs the README's Go processor example:
// examples/processor built and run as worker processes beside a stock
// `sluice worker`, with examples/processor/job.json submitted by `sluice
// submit`. The job waits, saying why, until a worker with its processor
// connects; the stock worker never runs its tasks; one example worker is
// frozen, then killed with SIGKILL once a batch was planned after the freeze
// (so with that batch's tasks in flight: they run again on the other); the
// word counts equal the ground truth and the batches tile every partition.
func TestProcessorExampleWorker(t *testing.T) {
	const topic, job = "lines", "word-count"
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"main.go", "job.json"} {
		src, err := os.ReadFile(filepath.Join("../examples/processor", f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(readme, src) {
			t.Errorf("README does not include examples/processor/%s verbatim", f)
		}
	}
	pc := newProcCluster(t, 1)
	bin := buildExample(t, "processor")
	createTopic(t, pc.brokers, topic, 4)
	pc.startCoordinator(0, "")
	stock := pc.startWorker("stock", "")
	c := pc.client()
	waitServing(t, c)

	s := &lineStream{rng: rand.New(rand.NewSource(12)), counts: map[string]int64{}, ends: map[string]int64{}}
	s.produce(t, pc.brokers, topic, 4, 3000, 0)
	spec, err := os.ReadFile("../examples/processor/job.json")
	if err != nil {
		t.Fatal(err)
	}
	specFile := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(specFile, bytes.ReplaceAll(spec, []byte("127.0.0.1:19092"), []byte(pc.brokers)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := run(t, sluiceBin, "submit", "-f", specFile, "--coordinator", pc.coords[0]); !strings.Contains(out, "job word-count submitted") {
		t.Fatalf("sluice submit: %s", out)
	}
	waitMessage(t, c, job, `waiting for a worker with processor "words"`, 30*time.Second)
	if off, err := c.Offsets(context.Background(), job); err != nil {
		t.Fatal(err)
	} else {
		for _, p := range off.GetPartitions() {
			if p.GetCommitted() > 0 {
				t.Fatalf("committed %d records of %s/%d without a worker that has the processor", p.GetCommitted(), p.GetTopic(), p.GetPartition())
			}
		}
	}

	example := func(id string) *proc {
		return startProcEnv(t, nil, bin, "-coordinator", pc.coords[0], "-id", id)
	}
	doomed := example("wc-1")
	example("wc-2")
	waitMessage(t, c, job, "", 30*time.Second)

	// Lines keep coming while wc-1 is killed: its tasks in flight run
	// again on wc-2, and nothing is counted twice.
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		s.produce(t, pc.brokers, topic, 4, 6000, 2000)
	}()
	tc := &testCluster{t: t, Client: c}
	s.mu.Lock()
	first := maps.Clone(s.ends)
	s.mu.Unlock()
	tc.waitOffsets(job, first, 60*time.Second)
	// Frozen first, so that the next batch sends it tasks it never
	// finishes; then killed with them in flight.
	batches, err := c.Batches(context.Background(), job, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for _, b := range batches {
		last = max(last, b.GetId())
	}
	if err := doomed.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for planned := false; !planned; {
		if time.Now().After(deadline) {
			t.Fatalf("no batch after batch %d planned within 30s of freezing wc-1", last)
		}
		bs, err := c.Batches(context.Background(), job, 100000)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			planned = planned || b.GetId() > last
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := doomed.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-doomed.done
	<-produced
	s.mu.Lock()
	ends, want := maps.Clone(s.ends), maps.Clone(s.counts)
	s.mu.Unlock()
	tc.waitOffsets(job, ends, 90*time.Second)
	if got := tc.mergedCounts(job); !maps.Equal(got, want) {
		t.Fatalf("word counts differ from the ground truth:\n got %v\nwant %v", got, want)
	}
	start := map[string]int64{}
	for k := range ends {
		start[k] = 0
	}
	var retried int32
	for _, b := range tc.checkRanges(job, start, ends) {
		retried += b.GetMetrics().GetTaskAttempts() - b.GetMetrics().GetTasks()
	}
	t.Logf("task attempts beyond one per task: %d", retried)
	if out := stock.out.String(); strings.Contains(out, "not registered") || strings.Contains(out, "task failed") {
		t.Errorf("the stock worker, without the processor, ran a task:\n%s", lastLines(out, 20))
	}
}

// Submit refuses a processor step with a bad name or an oversized config,
// InvalidArgument naming the field; a config only the processor can judge
// is accepted, and fails the job at its first task on a worker that has
// the processor, naming the step's config. A stock worker never runs it.
func TestProcessorSubmitAndConfigErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	tc := newTestCluster(t, clusterOptions{workers: 1, partitions: 2, topics: []string{"lines"}})
	big, err := structpb.NewStruct(map[string]any{"stopwords": []any{strings.Repeat("x", 70<<10)}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, field, reason string
		modify              func(ps *sluicev1.ProcessorStep)
	}{
		{"no name", "steps[0].processor.name", `processor name "" must be a letter, then up to 62 letters, digits`,
			func(ps *sluicev1.ProcessorStep) { ps.Name = "" }},
		{"a name with a slash", "steps[0].processor.name", `processor name "words/v2"`,
			func(ps *sluicev1.ProcessorStep) { ps.Name = "words/v2" }},
		{"config too big", "steps[0].processor.config", "bytes encoded: at most 65536",
			func(ps *sluicev1.ProcessorStep) { ps.Config = big }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := readmeExample(t, "processor/job.json", tc.Brokers)
			tt.modify(spec.GetSteps()[0].GetProcessor())
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

	spec := readmeExample(t, "processor/job.json", tc.Brokers)
	spec.GetSteps()[0].GetProcessor().GetConfig().GetFields()["stopwords"] = structpb.NewStringValue("the")
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(tc.Brokers), kgo.DefaultProduceTopic("lines"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte("the stream")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, tc.Client, spec.GetName(), `waiting for a worker with processor "words"`, 30*time.Second)

	cfg := worker.DefaultConfig()
	cfg.Coordinators, cfg.ID = []string{tc.Addr}, "with-words"
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterProcessorFactory("words", func(config map[string]any) (worker.Processor, error) {
		if _, ok := config["stopwords"].([]any); !ok {
			return nil, fmt.Errorf("stopwords must be a list of strings, not %T", config["stopwords"])
		}
		return func(context.Context, record.Record) ([]record.Record, error) { return nil, nil }, nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	j := waitJob(t, tc.Client, spec.GetName(), 30*time.Second, "FAILED state", func(j *sluicev1.Job) bool {
		return j.GetState() == sluicev1.JobState_JOB_STATE_FAILED
	})
	if want := `steps[0].processor.config: processor "words": stopwords must be a list of strings, not string`; !strings.Contains(j.GetMessage(), want) {
		t.Fatalf("job message %q, want it to contain %q", j.GetMessage(), want)
	}
}

// TestProcessorKafkaSinkExactlyOnce runs the example's processor with a
// transactional Kafka sink instead of the count: each word is a record of
// the output topic. The example workers are killed with SIGKILL in turn
// (frozen first, so that tasks are in flight) and restarted; a
// read_committed reader sees every word of the ground truth exactly once,
// each (sluice-src, sluice-src-element) once.
func TestProcessorKafkaSinkExactlyOnce(t *testing.T) {
	const in, out, job = "lines", "words", "words-out"
	pc := newProcCluster(t, 1)
	bin := buildExample(t, "processor")
	createTopic(t, pc.brokers, in, 4)
	createTopic(t, pc.brokers, out, 3)
	pc.startCoordinator(0, "")
	c := pc.client()
	waitServing(t, c)
	workers := map[string]*proc{}
	for _, id := range []string{"wc-1", "wc-2"} {
		workers[id] = startProcEnv(t, nil, bin, "-coordinator", pc.coords[0], "-id", id)
	}
	spec := readmeExample(t, "processor/job.json", pc.brokers)
	spec.Name = job
	spec.Aggregate = nil
	spec.BatchInterval = durationpb.New(200 * time.Millisecond)
	spec.Limits = &sluicev1.Limits{MaxRecordsPerBatch: 1500, TaskTimeout: durationpb.New(10 * time.Second)}
	spec.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
		Topic: out, TransactionTimeout: durationpb.New(10 * time.Second),
	}}}
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	s := &lineStream{rng: rand.New(rand.NewSource(21)), counts: map[string]int64{}, ends: map[string]int64{}}
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		s.produce(t, pc.brokers, in, 4, 8000, 2000)
	}()
	tc := &testCluster{t: t, Client: c}
	for _, victim := range []string{"wc-1", "wc-2"} {
		// Wait for progress, freeze the victim, wait for a batch planned
		// after that (its tasks are sent to the frozen worker), kill it and
		// start it again.
		s.mu.Lock()
		now := maps.Clone(s.ends)
		s.mu.Unlock()
		waitCommittedPast(t, c, job, now, 60*time.Second)
		j, err := c.Job(context.Background(), job)
		if err != nil {
			t.Fatal(err)
		}
		last := j.GetLastBatchId()
		p := workers[victim]
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for planned := false; !planned; {
			if time.Now().After(deadline) {
				t.Fatalf("no batch after batch %d planned within 30s of freezing %s", last, victim)
			}
			bs, err := c.Batches(context.Background(), job, 100000)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range bs {
				planned = planned || b.GetId() > last
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		workers[victim] = startProcEnv(t, nil, bin, "-coordinator", pc.coords[0], "-id", victim)
	}
	<-produced
	s.mu.Lock()
	ends, want := maps.Clone(s.ends), maps.Clone(s.counts)
	s.mu.Unlock()
	tc.waitOffsets(job, ends, 90*time.Second)
	var total int64
	for _, n := range want {
		total += n
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(pc.brokers), kgo.ConsumeTopics(out),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got, seen := map[string]int64{}, map[string]bool{}
	var read int64
	// Until every expected record came and a second passed without more.
	deadline, quietUntil := time.Now().Add(60*time.Second), time.Time{}
	for time.Now().Before(deadline) && (quietUntil.IsZero() || time.Now().Before(quietUntil)) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			read++
			var src, elem string
			for _, h := range r.Headers {
				switch h.Key {
				case "sluice-src":
					src = string(h.Value)
				case "sluice-src-element":
					elem = string(h.Value)
				}
			}
			if elem == "" || seen[src+"#"+elem] {
				t.Errorf("record %s element %q: missing or seen before", src, elem)
			}
			seen[src+"#"+elem] = true
			got[string(r.Key)]++
			quietUntil = time.Time{}
		})
		if read >= total && quietUntil.IsZero() {
			quietUntil = time.Now().Add(time.Second)
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("words written (read_committed) differ from the ground truth: %d records, want %d\n got %v\nwant %v", read, total, got, want)
	}
	t.Logf("%d lines, %d words written exactly once through 2 kills", s.n, total)
}

// waitCommittedPast waits until the job committed at least the offsets of
// min ("topic/partition" -> offset) on every partition.
func waitCommittedPast(t *testing.T, c *client.Client, job string, min map[string]int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]int64
	for time.Now().Before(deadline) {
		resp, err := c.Offsets(context.Background(), job)
		if err == nil {
			last = map[string]int64{}
			for _, p := range resp.GetPartitions() {
				last[fmt.Sprintf("%s/%d", p.GetTopic(), p.GetPartition())] = p.GetCommitted()
			}
			past := true
			for k, v := range min {
				past = past && last[k] >= v
			}
			if past {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %s: committed offsets %v, want at least %v", job, last, min)
}
