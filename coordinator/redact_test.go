package coordinator_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-stream/sluice/coordinator"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// syncBuffer is a bytes.Buffer that a logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const (
	sourceSecret = "s3cret-source-Pa55"
	sinkSecret   = "s3cret-sink-Pa55"
)

func secretSpec(name string) *sluicev1.JobSpec {
	spec := jobSpec(name, "127.0.0.1:1")
	spec.Aggregate = nil
	spec.Source.Properties = map[string]string{
		"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": sourceSecret,
	}
	spec.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
		Topic: "out", Mode: sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT,
		Properties: map[string]string{"ssl.key.password": sinkSecret, "compression.type": "zstd"},
	}}}
	return spec
}

// checkRedacted fails if job shows a credential, and checks it shows
// [redacted] in their place and the other properties as they are.
func checkRedacted(t *testing.T, what string, job *sluicev1.Job) {
	t.Helper()
	text := protojson.Format(job)
	if strings.Contains(text, sourceSecret) || strings.Contains(text, sinkSecret) {
		t.Errorf("%s shows a credential: %s", what, text)
	}
	if got := job.GetSpec().GetSource().GetProperties()["sasl.password"]; got != "[redacted]" {
		t.Errorf("%s: source sasl.password = %q, want [redacted]", what, got)
	}
	if got := job.GetSpec().GetSink().GetKafka().GetProperties()["ssl.key.password"]; got != "[redacted]" {
		t.Errorf("%s: sink ssl.key.password = %q, want [redacted]", what, got)
	}
	if got := job.GetSpec().GetSource().GetProperties()["sasl.username"]; got != "alice" {
		t.Errorf("%s: sasl.username = %q, want alice (not a credential)", what, got)
	}
}

// Credentials are redacted in every JobService response that carries a
// spec and never logged, while etcd (and so the workers' tasks) holds the
// real values; an update that sends [redacted] back keeps them.
func TestSecretsRedacted(t *testing.T) {
	logs := &syncBuffer{}
	s := newServer(t, func(_ *clientv3.Client, cfg *coordinator.Config) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: logs})
	})
	ctx := testContext(t)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.coord.Run(runCtx) // leads, and runs the job against a missing broker: errors are logged
	}()
	stopRun := sync.OnceFunc(func() { cancel(); <-done })
	defer stopRun()

	j, err := s.client.Submit(ctx, secretSpec("sec"))
	if err != nil {
		t.Fatal(err)
	}
	checkRedacted(t, "SubmitJob", j)
	stored, err := s.store.Job(ctx, "sec")
	if err != nil {
		t.Fatal(err)
	}
	if got := stored.Value.GetSpec().GetSource().GetProperties()["sasl.password"]; got != sourceSecret {
		t.Fatalf("stored sasl.password = %q, want the real value", got)
	}
	if j, err = s.client.Job(ctx, "sec"); err != nil {
		t.Fatal(err)
	}
	checkRedacted(t, "GetJob", j)
	jobs, err := s.client.Jobs(ctx)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("ListJobs = %v, %v", jobs, err)
	}
	checkRedacted(t, "ListJobs", jobs[0])

	// The spec as GetJob shows it, edited and submitted as an update,
	// keeps the stored credentials.
	edited := j.GetSpec()
	edited.BatchInterval = durationpb.New(2 * time.Second)
	if j, err = s.client.Update(ctx, edited); err != nil {
		t.Fatalf("update with [redacted] credentials: %v", err)
	}
	checkRedacted(t, "SubmitJob update", j)
	stored, err = s.store.Job(ctx, "sec")
	if err != nil {
		t.Fatal(err)
	}
	if got := stored.Value.GetSpec().GetSource().GetProperties()["sasl.password"]; got != sourceSecret {
		t.Errorf("after the update, stored sasl.password = %q, want the kept value", got)
	}
	if got := stored.Value.GetSpec().GetSink().GetKafka().GetProperties()["ssl.key.password"]; got != sinkSecret {
		t.Errorf("after the update, stored ssl.key.password = %q, want the kept value", got)
	}
	if got := stored.Value.GetSpec().GetBatchInterval().AsDuration(); got != 2*time.Second {
		t.Errorf("after the update, batch interval %s, want 2s", got)
	}

	// A new value replaces the stored one.
	edited.Source.Properties["sasl.password"] = "rotated-Pa55"
	if _, err = s.client.Update(ctx, edited); err != nil {
		t.Fatal(err)
	}
	if stored, err = s.store.Job(ctx, "sec"); err != nil || stored.Value.GetSpec().GetSource().GetProperties()["sasl.password"] != "rotated-Pa55" {
		t.Errorf("after a rotation, stored sasl.password = %q (%v), want rotated-Pa55", stored.Value.GetSpec().GetSource().GetProperties()["sasl.password"], err)
	}

	// [redacted] for a credential the job does not have is refused.
	other := secretSpec("other")
	other.Source.Properties["sasl.password"] = "[redacted]"
	_, err = s.client.Submit(ctx, other)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), `"sasl.password"`) {
		t.Errorf("new job with a [redacted] password: %v, want InvalidArgument naming sasl.password", err)
	}

	stopped, err := s.client.Stop(ctx, "sec")
	if err != nil {
		t.Fatal(err)
	}
	checkRedacted(t, "StopJob", stopped)
	resumed, err := s.client.Resume(ctx, "sec")
	if err != nil {
		t.Fatal(err)
	}
	checkRedacted(t, "ResumeJob", resumed)

	stopRun()
	out := logs.String()
	if out == "" {
		t.Fatal("the coordinator logged nothing; the check below would prove nothing")
	}
	for _, secret := range []string{sourceSecret, sinkSecret, "rotated-Pa55"} {
		if strings.Contains(out, secret) {
			t.Errorf("the coordinator's log shows %q:\n%s", secret, out)
		}
	}
}

// A stored job that the policy refuses (stored before it, or under a looser
// one) gets InvalidArgument naming the property from every call that would
// make a Kafka client for it, and no client is made.
func TestStoredJobRefusedByPolicy(t *testing.T) {
	s := newServer(t, nil)
	ctx := testContext(t)
	spec := jobSpec("old", "127.0.0.1:1")
	spec.Aggregate = nil
	spec.Source.Properties = map[string]string{"ssl.engine.location": "/nonexistent/engine.so"}
	spec.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: "out"}}}
	now := timestamppb.Now()
	if err := s.store.CreateJob(ctx, &sluicev1.Job{Spec: spec, State: sluicev1.JobState_JOB_STATE_STOPPED, CreateTime: now, UpdateTime: now}); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"ResetOffsets": func() error {
			_, err := s.client.ResetOffsets(ctx, "old", &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}})
			return err
		},
		"ListTransactions":  func() error { _, err := s.client.Transactions(ctx, "old"); return err },
		"AbortTransactions": func() error { _, err := s.client.AbortTransactions(ctx, "old"); return err },
	}
	for name, call := range calls {
		st := status.Convert(call())
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), `"ssl.engine.location"`) {
			t.Errorf("%s: %v %q, want InvalidArgument naming ssl.engine.location", name, st.Code(), st.Message())
		}
	}
}
