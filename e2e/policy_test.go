package e2e

import (
	"bytes"
	"context"
	"io"
	"maps"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// logCapture keeps what a logger writes, and passes it on to the test log.
type logCapture struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.b.Write(p)
	c.mu.Unlock()
	c.t.Log(string(p))
	return len(p), nil
}

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

func (c *logCapture) logger(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: io.Writer(c)})
}

// TestPolicyStoredJobFailsAlone: a job stored with a property that loads
// code (written to etcd directly, as a job stored before the policy would
// be) fails with a message naming the property, without any Kafka client
// made for it; another job keeps running.
func TestPolicyStoredJobFailsAlone(t *testing.T) {
	const topic, parts, n = "good", 2, 2000
	logs := &logCapture{t: t}
	tc := newTestCluster(t, clusterOptions{workers: 1, partitions: parts, topics: []string{topic},
		coord: func(c *coordinator.Config) { c.Logger = logs.logger("coord") }})
	ctx := context.Background()

	bad := countJob("bad", tc.Brokers, topic)
	bad.Source.Properties = map[string]string{"plugin.library.paths": "/nonexistent/evil.so"}
	now := timestamppb.Now()
	if err := tc.Coord.Store().CreateJob(ctx, &sluicev1.Job{Spec: bad, State: sluicev1.JobState_JOB_STATE_RUNNING,
		CreateTime: now, UpdateTime: now, Incarnation: jobspec.NewIncarnation()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Client.Submit(ctx, countJob("ok", tc.Brokers, topic)); err != nil {
		t.Fatal(err)
	}
	counts, ends := map[string]int64{}, map[string]int64{}
	produceKeyed(t, tc.producer(), topic, parts, n, 3, counts, ends)
	tc.waitOffsets("ok", ends, time.Minute)
	if got := tc.mergedCounts("ok"); !maps.Equal(got, counts) {
		t.Fatalf("job ok: counts differ from the ground truth")
	}

	var j *sluicev1.Job
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if j, err = tc.Client.Job(ctx, "bad"); err == nil && j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job bad: %v (%q), %v; want FAILED", j.GetState(), j.GetMessage(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if msg := j.GetMessage(); !strings.Contains(msg, `"plugin.library.paths"`) || !strings.Contains(msg, "source.properties") {
		t.Errorf("job bad failed with %q, want a message naming source.properties and plugin.library.paths", msg)
	}
	if out := logs.String(); strings.Contains(out, "dlopen") || strings.Contains(out, "evil.so") {
		t.Errorf("the coordinator handed the refused property to librdkafka:\n%s", out)
	}
	// Nor can it be resumed, or submitted.
	if _, err := tc.Client.Submit(ctx, bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "plugin.library.paths") {
		t.Errorf("submit with plugin.library.paths: %v, want InvalidArgument naming it", err)
	}
}

// TestPolicyBootstrapAndSecrets: with --allowed-bootstrap, a job naming
// another broker is refused. A job reading a SASL/PLAIN cluster with its
// password in source.properties runs (the worker gets the real password),
// while GetJob, ListJobs, SubmitJob, the CLI and the coordinator's and
// workers' logs never show it.
func TestPolicyBootstrapAndSecrets(t *testing.T) {
	const topic, parts, n = "secure", 2, 2000
	const password = "pl41n-S3cret-pw"
	k, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(parts, topic),
		kfake.EnableSASL(), kfake.Superuser("PLAIN", "alice", password))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	secure := k.ListenAddrs()[0]

	logs := &logCapture{t: t}
	tc := newTestCluster(t, clusterOptions{workers: 1,
		coord: func(c *coordinator.Config) {
			c.Logger = logs.logger("coord")
			c.KafkaPolicy = kafkasrc.Policy{Bootstrap: []string{secure}}
		},
		worker: func(c *worker.Config) { c.Logger = logs.logger("worker") },
	})
	ctx := context.Background()

	// Any other broker is refused, for the source and for the sink.
	_, err = tc.Client.Submit(ctx, countJob("elsewhere", tc.Brokers, topic))
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "source.bootstrap_servers") ||
		!strings.Contains(st.Message(), tc.Brokers) {
		t.Errorf("job on %s: %v, want InvalidArgument naming source.bootstrap_servers and the address", tc.Brokers, err)
	}
	sinkElsewhere := countJob("sink-elsewhere", secure, topic)
	sinkElsewhere.Aggregate = nil
	sinkElsewhere.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: "out", BootstrapServers: tc.Brokers}}}
	_, err = tc.Client.Submit(ctx, sinkElsewhere)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "sink.kafka.bootstrap_servers") {
		t.Errorf("sink on %s: %v, want InvalidArgument naming sink.kafka.bootstrap_servers", tc.Brokers, err)
	}

	prod, err := kgo.NewClient(kgo.SeedBrokers(secure), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.SASL(plain.Auth{User: "alice", Pass: password}.AsMechanism()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	counts, ends := map[string]int64{}, map[string]int64{}
	produceKeyed(t, prod, topic, parts, n, 5, counts, ends)

	spec := countJob("sasl", secure, topic)
	spec.Source.Properties = map[string]string{
		"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": password,
	}
	j, err := tc.Client.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := j.GetSpec().GetSource().GetProperties()["sasl.password"]; got != "[redacted]" {
		t.Errorf("SubmitJob shows sasl.password %q, want [redacted]", got)
	}
	tc.waitOffsets("sasl", ends, time.Minute)
	if got := tc.mergedCounts("sasl"); !maps.Equal(got, counts) {
		t.Fatalf("counts differ from the ground truth")
	}
	if j, err = tc.Client.Job(ctx, "sasl"); err != nil || j.GetSpec().GetSource().GetProperties()["sasl.password"] != "[redacted]" {
		t.Errorf("GetJob: %v, %v; want sasl.password [redacted]", j.GetSpec().GetSource().GetProperties(), err)
	}
	jobs, err := tc.Client.Jobs(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].GetSpec().GetSource().GetProperties()["sasl.password"] != "[redacted]" {
		t.Errorf("ListJobs: %v, %v; want sasl.password [redacted]", jobs, err)
	}

	for _, args := range [][]string{{"job", "sasl"}, {"jobs", "-o", "json"}} {
		out, err := exec.Command(sluiceBin, append(args, "--coordinator", tc.Addr)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sluice %v: %v\n%s", args, err, out)
		}
		if strings.Contains(string(out), password) || !strings.Contains(string(out), "[redacted]") {
			t.Errorf("sluice %v shows the password or no [redacted]:\n%s", args, out)
		}
	}
	if strings.Contains(logs.String(), password) {
		t.Errorf("the logs show the password")
	}
}
