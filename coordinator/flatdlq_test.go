package coordinator

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func withDeadLetter(s *sluicev1.JobSpec, dl *sluicev1.DeadLetter) {
	s.OnRecordError = sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER
	s.DeadLetter = dl
}

// Every flatMap and dead-letter setting that is refused is InvalidArgument
// naming its field.
func TestValidateFlatMapAndDeadLetter(t *testing.T) {
	flatMap := func(s *sluicev1.JobSpec, exprs ...string) {
		for _, e := range exprs {
			s.Steps = append(s.Steps, &sluicev1.Step{Kind: &sluicev1.Step_FlatMap{FlatMap: e}})
		}
	}
	tests := []struct {
		name      string
		modify    func(s *sluicev1.JobSpec)
		wantField string // "" = valid
		wantIn    string
	}{
		{"flatMap of a list", func(s *sluicev1.JobSpec) { flatMap(s, "json.items") }, "", ""},
		{"flatMap not a list", func(s *sluicev1.JobSpec) { flatMap(s, "json.items", "'x'") }, "steps[4].flatMap", "want a list"},
		{"flatMap syntax", func(s *sluicev1.JobSpec) { flatMap(s, "json.items.map(") }, "steps[3].flatMap", "Syntax error"},
		{"flatMap too long", func(s *sluicev1.JobSpec) { flatMap(s, "["+strings.Repeat("1,", 20000)+"1]") }, "steps[3].flatMap", "at most"},
		{"dead letter", func(s *sluicev1.JobSpec) { withDeadLetter(s, &sluicev1.DeadLetter{Topic: "bad-clicks"}) }, "", ""},
		{"dead letter without a topic", func(s *sluicev1.JobSpec) { withDeadLetter(s, nil) },
			"dead_letter.topic", "required by on_record_error RECORD_ERROR_POLICY_DEAD_LETTER"},
		{"dead letter without the policy", func(s *sluicev1.JobSpec) { s.DeadLetter = &sluicev1.DeadLetter{Topic: "dlq"} },
			"dead_letter", "is only used with on_record_error RECORD_ERROR_POLICY_DEAD_LETTER"},
		{"dead letter bad topic", func(s *sluicev1.JobSpec) { withDeadLetter(s, &sluicev1.DeadLetter{Topic: "a/b"}) },
			"dead_letter.topic", `"a/b" is not a valid Kafka topic name`},
		{"dead letter to a source topic", func(s *sluicev1.JobSpec) { withDeadLetter(s, &sluicev1.DeadLetter{Topic: "clicks"}) },
			"dead_letter.topic", "is a source topic"},
		{"dead letter owned property", func(s *sluicev1.JobSpec) {
			withDeadLetter(s, &sluicev1.DeadLetter{Topic: "dlq", Properties: map[string]string{"transactional.id": "x"}})
		}, "dead_letter.properties", `"transactional.id"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := validJobSpec()
			tc.modify(s)
			err := Validate(s)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.wantField || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("Validate = %v, want a *ValidationError for %s with %q", err, tc.wantField, tc.wantIn)
			}
			if st := status.Convert(toStatus(err)); st.Code() != codes.InvalidArgument {
				t.Errorf("code %s, want InvalidArgument", st.Code())
			}
		})
	}
}

// The dead-letter cluster and properties go through the Kafka policy, and
// its credentials are redacted.
func TestDeadLetterPolicyAndRedaction(t *testing.T) {
	s := validJobSpec()
	withDeadLetter(s, &sluicev1.DeadLetter{Topic: "dlq", Properties: map[string]string{"sasl.kerberos.kinit.cmd": "id"}})
	var ve *ValidationError
	if err := CheckPolicy(s, kafkasrc.Policy{}); !errors.As(err, &ve) || ve.Field != "dead_letter.properties" {
		t.Fatalf("CheckPolicy = %v, want dead_letter.properties refused", err)
	}
	withDeadLetter(s, &sluicev1.DeadLetter{Topic: "dlq", Properties: map[string]string{"linger.msx": "1"}})
	if err := CheckPolicy(s, kafkasrc.Policy{}); !errors.As(err, &ve) || ve.Field != "dead_letter.properties" || !strings.Contains(err.Error(), "linger.msx") {
		t.Fatalf("CheckPolicy = %v, want the typo linger.msx refused in dead_letter.properties", err)
	}
	withDeadLetter(s, &sluicev1.DeadLetter{Topic: "dlq", BootstrapServers: "elsewhere:9092"})
	if err := CheckPolicy(s, kafkasrc.Policy{Bootstrap: []string{"localhost:9092", "localhost:9093"}}); !errors.As(err, &ve) || ve.Field != "dead_letter.bootstrap_servers" {
		t.Fatalf("CheckPolicy = %v, want dead_letter.bootstrap_servers refused", err)
	}

	withDeadLetter(s, &sluicev1.DeadLetter{Topic: "dlq", Properties: map[string]string{"sasl.password": "hunter2", "linger.ms": "5"}})
	job := redacted(&sluicev1.Job{Spec: s})
	if got := job.GetSpec().GetDeadLetter().GetProperties(); got["sasl.password"] != kafkasrc.Redacted || got["linger.ms"] != "5" {
		t.Errorf("redacted dead_letter.properties = %v", got)
	}
	if s.GetDeadLetter().GetProperties()["sasl.password"] != "hunter2" {
		t.Errorf("redacted modified the stored spec")
	}
	update := validJobSpec()
	withDeadLetter(update, &sluicev1.DeadLetter{Topic: "dlq", Properties: map[string]string{"sasl.password": kafkasrc.Redacted}})
	if err := keepSecrets(update, s); err != nil || update.GetDeadLetter().GetProperties()["sasl.password"] != "hunter2" {
		t.Errorf("keepSecrets: %v, password %q", err, update.GetDeadLetter().GetProperties()["sasl.password"])
	}
}
