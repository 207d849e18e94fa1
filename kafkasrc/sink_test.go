package kafkasrc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// setTopicConfig sets one configuration of topic, with a raw
// IncrementalAlterConfigs request.
func setTopicConfig(t testing.TB, k *kgo.Client, topic, name, value string) {
	t.Helper()
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	rr := kmsg.NewIncrementalAlterConfigsRequestResource()
	rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, topic
	cfg := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	cfg.Name, cfg.Value = name, &value
	rr.Configs = append(rr.Configs, cfg)
	req.Resources = append(req.Resources, rr)
	resp, err := req.RequestWith(context.Background(), k)
	if err != nil {
		t.Fatalf("alter config %s of %s: %v", name, topic, err)
	}
	for _, r := range resp.Resources {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			t.Fatalf("alter config %s of %s: %v", name, topic, err)
		}
	}
}

// failProduce makes the broker answer every produce request to topic with
// code, until the test ends.
func failProduce(c *kfake.Cluster, topic string, code int16) {
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.ProduceRequest)
		hit := false
		for _, rt := range req.Topics {
			hit = hit || rt.Topic == topic
		}
		if !hit {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

// countRecords reads topic from the start with read_committed and counts
// the records of each key prefix (the part before '-').
func countRecords(t testing.TB, cl Cluster, topic string, want int) map[string]int {
	t.Helper()
	k := newKgo(t, cl, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	got, n := map[string]int{}, 0
	ctx := testCtx(t)
	for n < want {
		fs := k.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %d records of %d: %v", topic, n, want, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			prefix, _, _ := strings.Cut(string(r.Key), "-")
			got[prefix]++
			n++
		})
	}
	return got
}

func messages(topic, prefix string, n, size int) []Message {
	ms := make([]Message, n)
	for i := range ms {
		ms[i] = Message{Topic: topic, Partition: -1, Key: fmt.Appendf(nil, "%s-%d", prefix, i), Value: make([]byte, size)}
	}
	return ms
}

// waitLiveClients waits until LiveClients() is want.
func waitLiveClients(t testing.TB, want int64, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for LiveClients() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d live librdkafka clients, want %d", what, LiveClients(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSinksIdempotentErrorsPerTask: tasks share one idempotent producer;
// one of them writes a record too large for its topic. That task, and only
// that one, gets the delivery error, however the writes interleave.
func TestSinksIdempotentErrorsPerTask(t *testing.T) {
	_, cl := newTestCluster(t, 2, "out", "small")
	setTopicConfig(t, newKgo(t, cl), "small", "max.message.bytes", "1000")
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	const rounds, healthy, n = 5, 4, 300
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make([]error, healthy+1)
		for i := range healthy + 1 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msgs := messages("out", fmt.Sprintf("r%dt%d", round, i), n, 100)
				if i == healthy {
					// The bad record comes last: the other tasks' records
					// are delivered around its failure.
					msgs = append(messages("small", "bad", 50, 10), Message{Topic: "small", Partition: -1, Key: []byte("big"), Value: make([]byte, 5000)})
				}
				errs[i] = s.WriteIdempotent(ctx, IdempotentTask{Job: "j", Incarnation: "i", Cluster: cl}, msgs)
			}()
		}
		wg.Wait()
		for i, err := range errs[:healthy] {
			if err != nil {
				t.Errorf("round %d: healthy task %d: %v, want nil (the error is the other task's)", round, i, err)
			}
		}
		err := errs[healthy]
		if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), "small") || !strings.Contains(err.Error(), "max.message.bytes") {
			t.Fatalf("round %d: task with the big record: %v, want a permanent error naming topic small and max.message.bytes", round, err)
		}
	}
	got := countRecords(t, cl, "out", rounds*healthy*n)
	for round := range rounds {
		for i := range healthy {
			if k := fmt.Sprintf("r%dt%d", round, i); got[k] != n {
				t.Errorf("task %s: %d records in out, want %d", k, got[k], n)
			}
		}
	}
	if txns, idem, _ := s.Clients(); txns != 0 || idem != 1 {
		t.Errorf("Clients = %d transactional, %d idempotent, want 0, 1 (one shared producer)", txns, idem)
	}
}

// TestPermanentErrors: errors that a retry would repeat wrap ErrPermanent
// and name the topic or property; transient ones do not.
func TestPermanentErrors(t *testing.T) {
	c, cl := newTestCluster(t, 2, "out", "small", "denied", "flaky")
	setTopicConfig(t, newKgo(t, cl), "small", "max.message.bytes", "1000")
	failProduce(c, "denied", int16(kerr.TopicAuthorizationFailed.Code))
	failProduce(c, "flaky", int16(kerr.NotEnoughReplicas.Code))
	ctx := testCtx(t)
	one := func(topic string, partition int32, size int) []Message {
		return []Message{{Topic: topic, Partition: partition, Key: []byte("k"), Value: make([]byte, size)}}
	}
	for _, tc := range []struct {
		name      string
		props     map[string]string
		msgs      []Message
		permanent bool
		mentions  []string
	}{
		{"record too large for the topic", nil, one("small", -1, 5000), true, []string{"small", "max.message.bytes"}},
		{"record too large for the producer", map[string]string{"message.max.bytes": "2000"}, one("out", 0, 5000), true, []string{"out/0", "5001 bytes", "message.max.bytes"}},
		{"missing topic", nil, one("nope", -1, 10), true, []string{`"nope"`, "does not exist", "create it"}},
		{"missing partition", nil, one("out", 7, 10), true, []string{"out/7", "partition"}},
		{"topic authorization", nil, one("denied", 0, 10), true, []string{"denied", "authorization"}},
		{"acks 1 with idempotence", map[string]string{"acks": "1"}, one("out", 0, 10), true, []string{"acks"}},
		{"unknown property", map[string]string{"no.such.property": "1"}, one("out", 0, 10), true, []string{"no.such.property"}},
		{"broker not enough replicas", map[string]string{"message.timeout.ms": "1000"}, one("flaky", 0, 10), false, []string{"flaky"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSinks(testLogger(t))
			defer s.Close()
			err := s.WriteIdempotent(ctx, IdempotentTask{Job: "j", Cluster: cl, Properties: tc.props}, tc.msgs)
			if err == nil {
				t.Fatalf("WriteIdempotent = nil, want an error")
			}
			t.Logf("error: %v", err)
			if errors.Is(err, ErrPermanent) != tc.permanent {
				t.Errorf("WriteIdempotent = %v: permanent %v, want %v", err, errors.Is(err, ErrPermanent), tc.permanent)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("WriteIdempotent = %v: does not say %q", err, m)
				}
			}
			if tc.name == "missing topic" && !errors.Is(err, ErrUnknownTopic) {
				t.Errorf("WriteIdempotent = %v, want ErrUnknownTopic", err)
			}
		})
	}
}

// txnTask is a transactional write of partition 0 of source topic src.
func txnTask(cl Cluster, job, incarnation string, until int64) TxnTask {
	return TxnTask{
		Job: job, Incarnation: incarnation, Cluster: cl,
		TransactionalID: "test:" + job + ":" + incarnation + ":src:0",
		Timeout:         10 * time.Second,
		Group:           "test:" + job + ":" + incarnation,
		Source:          Range{Topic: "src", Partition: 0, From: until - 1, Until: until},
	}
}

// TestTransactPermanentErrors: in a transaction too, a record too large or a
// missing topic fails permanently and names the topic, conflicting
// properties fail permanently, and the writer stays usable for the next
// transaction.
func TestTransactPermanentErrors(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out", "small")
	setTopicConfig(t, newKgo(t, cl), "small", "max.message.bytes", "1000")
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	ctx := testCtx(t)

	task := txnTask(cl, "j", "i1", 1)
	bad := append(messages("out", "a", 10, 10), Message{Topic: "small", Partition: -1, Value: make([]byte, 5000)})
	_, err := s.Transact(ctx, task, bad)
	if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), "small") {
		t.Errorf("Transact with a record too large for topic small = %v, want a permanent error naming it", err)
	}
	_, err = s.Transact(ctx, task, messages("nope", "a", 1, 10))
	if !errors.Is(err, ErrPermanent) || !errors.Is(err, ErrUnknownTopic) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Transact to a missing topic = %v, want a permanent ErrUnknownTopic naming it", err)
	}
	// The same writer commits the next transaction.
	if skipped, err := s.Transact(ctx, task, messages("out", "ok", 10, 10)); err != nil || skipped {
		t.Fatalf("Transact after the failures = %v, %v, want written", skipped, err)
	}
	if got := countRecords(t, cl, "out", 10); got["ok"] != 10 || got["a"] != 0 {
		t.Errorf("committed records by key prefix: %v, want ok:10 and none of the aborted ones", got)
	}

	task = txnTask(cl, "j2", "i1", 1)
	task.Properties = map[string]string{"enable.idempotence": "false"}
	if _, err := s.Transact(ctx, task, messages("out", "x", 1, 10)); !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), "enable.idempotence") {
		t.Errorf("Transact with enable.idempotence=false = %v, want a permanent error naming the property", err)
	}
}

// TestTransactFencedIsNotPermanent: a writer fenced by a newer one with the
// same transactional id fails with ErrFenced, which a retry (the newer
// writer) resolves: it is not permanent.
func TestTransactFencedIsNotPermanent(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out")
	old, cur := NewSinks(testLogger(t)), NewSinks(testLogger(t))
	t.Cleanup(old.Close)
	t.Cleanup(cur.Close)
	ctx := testCtx(t)
	task := txnTask(cl, "j", "i1", 1)
	if _, err := old.Transact(ctx, task, messages("out", "a", 1, 10)); err != nil {
		t.Fatal(err)
	}
	task.Source = Range{Topic: "src", Partition: 0, From: 1, Until: 2}
	if _, err := cur.Transact(ctx, task, messages("out", "b", 1, 10)); err != nil {
		t.Fatal(err)
	}
	task.Source = Range{Topic: "src", Partition: 0, From: 2, Until: 3}
	_, err := old.Transact(ctx, task, messages("out", "c", 1, 10))
	if !errors.Is(err, ErrFenced) || errors.Is(err, ErrPermanent) {
		t.Errorf("Transact by the fenced writer = %v, want ErrFenced and not ErrPermanent", err)
	}
}

// compressions returns the compression codec of each record of topic, by
// key prefix (kgo reports the codec of the batch a record came in).
func compressions(t testing.TB, cl Cluster, topic string, want int) map[string]map[uint8]int {
	t.Helper()
	k := newKgo(t, cl, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	got, n := map[string]map[uint8]int{}, 0
	ctx := testCtx(t)
	for n < want {
		fs := k.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %d records of %d: %v", topic, n, want, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			prefix, _, _ := strings.Cut(string(r.Key), "-")
			if got[prefix] == nil {
				got[prefix] = map[uint8]int{}
			}
			got[prefix][r.Attrs.CompressionType()]++
			n++
		})
	}
	return got
}

// TestSinksSettingsChangeReplacesWriter: a transactional writer is reused
// only with the settings it was created with; new properties (an --update
// of the sink) get a new producer, and the old one is closed.
func TestSinksSettingsChangeReplacesWriter(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out")
	base := LiveClients()
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	task := txnTask(cl, "j", "i1", 1)
	task.Properties = map[string]string{"compression.type": "none"}
	if _, err := s.Transact(ctx, task, messages("out", "plain", 50, 100)); err != nil {
		t.Fatal(err)
	}
	task.Properties = map[string]string{"compression.type": "gzip"}
	task.Source = Range{Topic: "src", Partition: 0, From: 1, Until: 2}
	if _, err := s.Transact(ctx, task, messages("out", "gzip", 50, 100)); err != nil {
		t.Fatal(err)
	}
	got := compressions(t, cl, "out", 100)
	if got["plain"][0] != 50 || got["gzip"][1] != 50 {
		t.Errorf("compression codecs by key prefix: %v, want plain: {0: 50} and gzip: {1: 50}", got)
	}
	if txns, _, groups := s.Clients(); txns != 1 || groups != 1 {
		t.Errorf("Clients = %d writers, %d groups, want 1, 1", txns, groups)
	}
	waitLiveClients(t, base+2, "after the writer was replaced") // one producer, one group client
	s.Close()
	waitLiveClients(t, base, "after Close")
}

// TestSinksCapacity: Sinks keeps at most its capacity of writers and of
// idempotent producers; evicted ones are closed.
func TestSinksCapacity(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out")
	base := LiveClients()
	s := NewSinks(testLogger(t), WithCapacity(2))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	for i := range 5 {
		job := fmt.Sprintf("j%d", i)
		if _, err := s.Transact(ctx, txnTask(cl, job, "i1", 1), messages("out", job, 1, 10)); err != nil {
			t.Fatal(err)
		}
		c := cl
		c.Properties = map[string]string{"client.id": job}
		if err := s.WriteIdempotent(ctx, IdempotentTask{Job: "idem" + job, Cluster: c}, messages("out", "idem"+job, 1, 10)); err != nil {
			t.Fatal(err)
		}
		txns, idem, groups := s.Clients()
		if txns > 2 || idem > 2 || groups > 2 {
			t.Fatalf("after %d jobs: Clients = %d writers, %d idempotent producers, %d groups, want at most 2 each", i+1, txns, idem, groups)
		}
	}
	waitLiveClients(t, base+6, "after 5 jobs with capacity 2") // 2 writers, 2 groups, 2 idempotent producers
	got := countRecords(t, cl, "out", 10)
	for i := range 5 {
		if got[fmt.Sprintf("j%d", i)] != 1 || got[fmt.Sprintf("idemj%d", i)] != 1 {
			t.Errorf("records by job: %v, want one of each", got)
			break
		}
	}
	s.Close()
	waitLiveClients(t, base, "after Close")
}

// TestSinksReleaseOldIncarnation: a task of a new incarnation of a job (a
// job deleted and submitted again, or reset), or with other sink settings,
// releases the clients of the job's earlier ones; ForgetJob releases all.
func TestSinksReleaseOldIncarnation(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out")
	base := LiveClients()
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	for _, inc := range []string{"i1", "i2", "i3"} {
		if _, err := s.Transact(ctx, txnTask(cl, "j", inc, 1), messages("out", inc, 1, 10)); err != nil {
			t.Fatal(err)
		}
		if txns, _, groups := s.Clients(); txns != 1 || groups != 1 {
			t.Fatalf("incarnation %s: Clients = %d writers, %d groups, want 1, 1", inc, txns, groups)
		}
	}
	for _, id := range []string{"a", "b", "c"} {
		c := cl
		c.Properties = map[string]string{"client.id": id}
		if err := s.WriteIdempotent(ctx, IdempotentTask{Job: "k", Incarnation: "i1", Cluster: c}, messages("out", id, 1, 10)); err != nil {
			t.Fatal(err)
		}
		if _, idem, _ := s.Clients(); idem != 1 {
			t.Fatalf("client.id %s: %d idempotent producers, want 1", id, idem)
		}
	}
	waitLiveClients(t, base+3, "after three incarnations and three client ids")
	s.ForgetJob("j")
	s.ForgetJob("k")
	if txns, idem, groups := s.Clients(); txns+idem+groups != 0 {
		t.Errorf("after ForgetJob: Clients = %d, %d, %d, want none", txns, idem, groups)
	}
	waitLiveClients(t, base, "after ForgetJob")
}

// TestSinksEvictInUse: a writer evicted while its task is in a transaction
// is closed only when the task is done with it, and the task commits.
func TestSinksEvictInUse(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out")
	base := LiveClients()
	s := NewSinks(testLogger(t), WithCapacity(1))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	inTxn, resume := make(chan struct{}), make(chan struct{})
	a := txnTask(cl, "a", "i1", 1)
	a.BeforeCommit = func() {
		close(inTxn)
		<-resume
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Transact(ctx, a, messages("out", "a", 10, 10))
		errc <- err
	}()
	<-inTxn
	if _, err := s.Transact(ctx, txnTask(cl, "b", "i1", 1), messages("out", "b", 10, 10)); err != nil {
		t.Fatal(err)
	}
	if txns, _, _ := s.Clients(); txns != 1 {
		t.Errorf("Clients = %d writers, want 1", txns)
	}
	close(resume)
	if err := <-errc; err != nil {
		t.Fatalf("Transact of the evicted writer: %v", err)
	}
	if got := countRecords(t, cl, "out", 20); got["a"] != 10 || got["b"] != 10 {
		t.Errorf("records by job: %v, want a:10 b:10", got)
	}
	waitLiveClients(t, base+2, "after the evicted writer's task")
}

// TestSinkTopicAutoCreated: with brokers that create topics on demand, a
// missing sink topic is created, not refused: the topic check asks the way
// a producer does.
func TestSinkTopicAutoCreated(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.SeedTopics(1, "src"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl := Cluster{Bootstrap: strings.Join(c.ListenAddrs(), ",")}
	s := NewSinks(testLogger(t))
	t.Cleanup(s.Close)
	ctx := testCtx(t)
	if err := s.WriteIdempotent(ctx, IdempotentTask{Job: "j", Cluster: cl}, messages("fresh", "a", 5, 10)); err != nil {
		t.Fatalf("WriteIdempotent to a topic the broker creates: %v", err)
	}
	if _, err := s.Transact(ctx, txnTask(cl, "j2", "i1", 1), messages("fresh2", "b", 5, 10)); err != nil {
		t.Fatalf("Transact to a topic the broker creates: %v", err)
	}
	if got := countRecords(t, cl, "fresh", 5); got["a"] != 5 {
		t.Errorf("records in fresh: %v, want a:5", got)
	}
	if got := countRecords(t, cl, "fresh2", 5); got["b"] != 5 {
		t.Errorf("records in fresh2: %v, want b:5", got)
	}
}

// TestTransactAuthorizationErrors: a transaction refused for lack of rights
// on the transactional id or on the group fails permanently, saying which.
func TestTransactAuthorizationErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		key      kmsg.Key
		respond  func(kmsg.Request) kmsg.Response
		mentions string
	}{
		{"transactional id", kmsg.InitProducerID, func(r kmsg.Request) kmsg.Response {
			resp := r.(*kmsg.InitProducerIDRequest).ResponseKind().(*kmsg.InitProducerIDResponse)
			resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
			return resp
		}, "transactional id"},
		{"group", kmsg.AddOffsetsToTxn, func(r kmsg.Request) kmsg.Response {
			resp := r.(*kmsg.AddOffsetsToTxnRequest).ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
			resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
			return resp
		}, "group test:j:i1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, cl := newTestCluster(t, 1, "src", "out")
			c.ControlKey(int16(tc.key), func(r kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				return tc.respond(r), nil, true
			})
			s := NewSinks(testLogger(t))
			defer s.Close()
			_, err := s.Transact(testCtx(t), txnTask(cl, "j", "i1", 1), messages("out", "a", 1, 10))
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), tc.mentions) {
				t.Errorf("Transact = %v, want a permanent error about the %s", err, tc.mentions)
			}
		})
	}
}

// TestSinksFenceSkipsTheCachedWriter: worker A holds a cached writer of an
// id; worker B's attempt of the same range opens a transaction and stalls
// (frozen). A's re-run with Fence creates a new writer whose
// InitTransactions fences B at once, and commits; B's commit then fails.
// Without Fence, A would reuse its cached writer, which B had fenced.
func TestSinksFenceSkipsTheCachedWriter(t *testing.T) {
	_, cl := newTestCluster(t, 1, "src", "out")
	a, b := NewSinks(testLogger(t)), NewSinks(testLogger(t))
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	ctx := testCtx(t)
	if _, err := a.Transact(ctx, txnTask(cl, "j", "i1", 1), messages("out", "first", 1, 10)); err != nil {
		t.Fatal(err)
	}
	stalled, _, err := b.BeginTxn(ctx, txnTask(cl, "j", "i1", 2))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if err := stalled.Write(ctx, messages("out", "zombie", 5, 10)); err != nil {
		t.Fatal(err)
	}
	rerun := txnTask(cl, "j", "i1", 2)
	rerun.Fence = true
	if _, err := a.Transact(ctx, rerun, messages("out", "rerun", 5, 10)); err != nil {
		t.Fatalf("fencing re-run: %v", err)
	}
	if err := stalled.Commit(ctx); err == nil {
		t.Fatal("the fenced attempt committed")
	}
	got := countRecords(t, cl, "out", 6)
	if got["first"] != 1 || got["rerun"] != 5 || got["zombie"] != 0 {
		t.Fatalf("committed records by prefix %v; want first 1, rerun 5, zombie 0", got)
	}
}
