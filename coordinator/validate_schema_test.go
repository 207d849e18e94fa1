package coordinator

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestValidateSchemaRegistry(t *testing.T) {
	reg := func(s *sluicev1.JobSpec, r *sluicev1.SchemaRegistry) {
		s.Source.ValueFormat = "avro"
		s.Source.SchemaRegistry = r
	}
	tests := []struct {
		name        string
		modify      func(s *sluicev1.JobSpec)
		wantField   string
		wantInError []string
	}{
		{"unknown value format", func(s *sluicev1.JobSpec) { s.Source.ValueFormat = "thrift" }, "source.value_format", []string{`"thrift"`, "avro, protobuf or jsonschema"}},
		{"unknown key format", func(s *sluicev1.JobSpec) { s.Source.KeyFormat = "AVRO" }, "source.key_format", []string{`"AVRO"`}},
		{"no registry", func(s *sluicev1.JobSpec) { s.Source.ValueFormat = "protobuf" }, "source.schema_registry.url", []string{"required"}},
		{"registry without a registry format", func(s *sluicev1.JobSpec) {
			s.Source.SchemaRegistry = &sluicev1.SchemaRegistry{Url: "http://r:8081"}
		}, "source.schema_registry", []string{"only with"}},
		{"ftp registry", func(s *sluicev1.JobSpec) { reg(s, &sluicev1.SchemaRegistry{Url: "ftp://r:8081"}) }, "source.schema_registry.url", []string{"http:// or https://"}},
		{"credentials in the url", func(s *sluicev1.JobSpec) { reg(s, &sluicev1.SchemaRegistry{Url: "https://u:p@r"}) }, "source.schema_registry.url", []string{"username"}},
		{"username without password", func(s *sluicev1.JobSpec) { reg(s, &sluicev1.SchemaRegistry{Url: "https://r", Username: "u"}) }, "source.schema_registry.username", nil},
		{"basic and bearer", func(s *sluicev1.JobSpec) {
			reg(s, &sluicev1.SchemaRegistry{Url: "https://r", Username: "u", Password: "p", BearerToken: "t"})
		}, "source.schema_registry.bearer_token", []string{"not both"}},
		{"token too long", func(s *sluicev1.JobSpec) {
			reg(s, &sluicev1.SchemaRegistry{Url: "https://r", BearerToken: strings.Repeat("t", 4097)})
		}, "source.schema_registry.bearer_token", []string{"4096"}},
		{"bad CA", func(s *sluicev1.JobSpec) { reg(s, &sluicev1.SchemaRegistry{Url: "https://r", CaPem: "x"}) }, "source.schema_registry.ca_pem", nil},
		{"timeout too long", func(s *sluicev1.JobSpec) {
			reg(s, &sluicev1.SchemaRegistry{Url: "https://r", Timeout: durationpb.New(61e9)})
		}, "source.schema_registry.timeout", []string{"at most 1m0s"}},
		{"record without a registry value format", func(s *sluicev1.JobSpec) {
			s.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "record.n > 1"}}}
		}, "steps[0].filter", []string{"source.value_format"}},
		{"record_key without a registry key format", func(s *sluicev1.JobSpec) {
			reg(s, &sluicev1.SchemaRegistry{Url: "https://r"})
			s.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "record_key.id == 1"}}}
		}, "steps[0].filter", []string{"source.key_format"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := validJobSpec()
			tc.modify(s)
			err := Validate(s)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a *ValidationError for %s", err, tc.wantField)
			}
			if ve.Field != tc.wantField {
				t.Errorf("Field = %q, want %q (error: %v)", ve.Field, tc.wantField, err)
			}
			for _, sub := range tc.wantInError {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("error %q, want it to contain %q", err, sub)
				}
			}
		})
	}
	s := validJobSpec()
	s.Source.KeyFormat, s.Source.ValueFormat = "jsonschema", "protobuf"
	s.Source.SchemaRegistry = &sluicev1.SchemaRegistry{Url: "https://r:8081", Username: "u", Password: "p"}
	s.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "record.n > 1 && record_key.id == 'a'"}}}
	if err := Validate(s); err != nil {
		t.Errorf("valid registry spec: %v", err)
	}
}

func TestRegistryCredentialsRedacted(t *testing.T) {
	spec := validJobSpec()
	spec.Source.ValueFormat = "avro"
	spec.Source.SchemaRegistry = &sluicev1.SchemaRegistry{Url: "https://r", Username: "u", Password: "pa55"}
	job := &sluicev1.Job{Spec: spec}
	out := redacted(job)
	if got := out.GetSpec().GetSource().GetSchemaRegistry().GetPassword(); got != "[redacted]" {
		t.Errorf("password shown as %q", got)
	}
	if spec.GetSource().GetSchemaRegistry().GetPassword() != "pa55" {
		t.Error("redacted changed the stored spec")
	}
	// Sent back redacted, the stored value is kept; a new job must send it.
	if err := keepSecrets(out.GetSpec(), spec); err != nil || out.GetSpec().GetSource().GetSchemaRegistry().GetPassword() != "pa55" {
		t.Errorf("keepSecrets: %v, password %q", err, out.GetSpec().GetSource().GetSchemaRegistry().GetPassword())
	}
	fresh := redacted(job).GetSpec()
	err := keepSecrets(fresh, nil)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "source.schema_registry.password" {
		t.Errorf("keepSecrets of a new job: %v, want source.schema_registry.password", err)
	}
	bearer := validJobSpec()
	bearer.Source.ValueFormat = "avro"
	bearer.Source.SchemaRegistry = &sluicev1.SchemaRegistry{Url: "https://r", BearerToken: "tok"}
	if got := redacted(&sluicev1.Job{Spec: bearer}).GetSpec().GetSource().GetSchemaRegistry().GetBearerToken(); got != "[redacted]" {
		t.Errorf("bearer token shown as %q", got)
	}
}

func TestPolicyAllowedSchemaRegistry(t *testing.T) {
	s := validJobSpec()
	s.Source.ValueFormat = "avro"
	s.Source.SchemaRegistry = &sluicev1.SchemaRegistry{Url: "https://other:8081"}
	p := kafkasrc.Policy{SchemaRegistries: []string{"https://registry:8081"}}
	err := CheckPolicy(s, p)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "source.schema_registry.url" || !strings.Contains(err.Error(), "https://registry:8081") {
		t.Errorf("CheckPolicy = %v, want source.schema_registry.url refused", err)
	}
	s.Source.SchemaRegistry.Url = "https://registry:8081"
	if err := CheckPolicy(s, p); err != nil {
		t.Errorf("allowed registry: %v", err)
	}
}
