package coordinator

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// specSeeds are job specs as users write them: the examples, the README's
// Kafka sink, and the specs of the validation tests.
func specSeeds(f *testing.F) [][]byte {
	f.Helper()
	var seeds [][]byte
	job, err := os.ReadFile("../examples/job.json")
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, job)
	req := &sluicev1.SubmitJobRequest{}
	data, err := os.ReadFile("../examples/submit-request.json")
	if err != nil {
		f.Fatal(err)
	}
	if err := protojson.Unmarshal(data, req); err != nil {
		f.Fatalf("examples/submit-request.json: %v", err)
	}
	sink := validJobSpec()
	sink.Aggregate = nil
	sink.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
		Topic: "orders-doubled", Headers: map[string]string{"origin": "topic"},
		Mode:       sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL,
		Properties: map[string]string{"compression.type": "zstd"},
	}}}
	routed := validJobSpec()
	routed.Aggregate = nil
	routed.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
		TopicExpr: "json.topic", PartitionExpr: "int(json.p)", TransactionalIdPrefix: "orders",
		Mode: sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT,
	}}}
	fixed := validJobSpec()
	fixed.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED, Fixed: []*sluicev1.FixedPlacement{
		{Topic: "clicks", Partitions: []int32{0, 1}, WorkerLabel: "zone-a"}, {Topic: "orders.v1", WorkerLabel: "zone-b"},
	}}
	registry := validJobSpec()
	registry.Source.ValueFormat, registry.Source.KeyFormat = "avro", "protobuf"
	registry.Source.SchemaRegistry = &sluicev1.SchemaRegistry{Url: "https://registry:8081", Username: "u", Password: "p"}
	registry.Steps = []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "record.status == 'PAID' && record_key.id != ''"}}}
	for _, s := range []*sluicev1.JobSpec{req.GetSpec(), validJobSpec(), sink, routed, fixed, registry} {
		j, err := protojson.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, j)
	}
	// Refused as users get them wrong.
	for _, s := range []string{
		`{"name": "Bad_Name", "source": {"bootstrapServers": "k:9092", "topics": ["t"]}}`,
		`{"name": "j", "source": {"bootstrapServers": "k:9092", "topics": ["t", "t"]}}`,
		`{"name": "j", "source": {"bootstrapServers": "k:9092", "topics": ["t"], "properties": {"plugin.library.paths": "/tmp/x.so"}}}`,
		`{"name": "j", "source": {"bootstrapServers": "k:9092", "topics": ["t"]}, "steps": [{"filter": "json.ms +"}]}`,
		`{"name": "j", "source": {"bootstrapServers": "k:9092", "topics": ["t"]}, "steps": [{"map": {"key": "size(key) * 1.5"}}]}`,
		`{"name": "j", "source": {"bootstrapServers": "k:9092", "topics": ["t"]}, "batchInterval": "1ms", "limits": {"taskTimeout": "-1s"}}`,
		`{"name": "j", "source": {"bootstrapServers": "k:9092", "topics": ["t"], "startingOffsets": {"explicit": {"offsets": [{"topic": "u", "partition": 0, "offset": "1"}]}}}}`,
		`{"name": "j", "source": {"bootstrapServers": "k:9092", "topics": ["t"]}, "sink": {"kafka": {"topic": "o", "headers": {"sluice-x": "key"}, "properties": {"transactional.id": "x"}}}}`,
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// Formats of a spec: as the SDK and CLI read a job file (JSON or YAML),
// and as SubmitJob receives it (the protobuf binary encoding, which mutates
// into other valid specs far more often than text does).
const (
	specJSON byte = iota
	specYAML
	specBinary
)

func parseSpec(data []byte, format byte) (*sluicev1.JobSpec, error) {
	if format == specBinary {
		spec := &sluicev1.JobSpec{}
		return spec, proto.Unmarshal(data, spec)
	}
	return client.ParseSpec(data, format == specYAML)
}

// FuzzValidateSpec reads any bytes as a job spec, as JSON or YAML the way
// the SDK and CLI do (client.ParseSpec) or in the binary encoding, and
// checks it as SubmitJob does (Validate, then the Kafka policy). Nothing
// panics or hangs. A spec Validate accepts compiles, and is accepted again
// after the round trips it makes: etcd's binary encoding, and the JSON
// GetJob shows, credentials redacted, sent back as an update. A refused
// spec gets InvalidArgument naming the field, in a status that can be
// sent: valid UTF-8, the field in a BadRequest, not much longer than the
// spec.
func FuzzValidateSpec(f *testing.F) {
	for _, j := range specSeeds(f) {
		f.Add(j, specJSON)
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(y, specYAML)
		if spec, err := client.ParseSpec(j, false); err == nil {
			b, err := proto.Marshal(spec)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, specBinary)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, format byte) {
		format %= 3
		timer := time.AfterFunc(20*time.Second, func() {
			panic(fmt.Sprintf("parse and Validate of %q (format %d) still running after 20s: a hang", data, format))
		})
		defer timer.Stop()
		spec, err := parseSpec(data, format)
		if err != nil {
			return
		}
		err = Validate(spec)
		if err != nil {
			checkRefusal(t, len(data), err)
			return
		}
		checkAccepted(t, spec)
		for _, p := range fuzzPolicies {
			if err := CheckPolicy(spec, p); err != nil {
				checkRefusal(t, len(data), err)
			}
		}
		bin, err := proto.Marshal(spec)
		if err != nil {
			t.Fatalf("accepted spec does not marshal: %v", err)
		}
		// Unknown fields (from a newer client) are kept in etcd but not in
		// JSON: compare without them.
		stored := &sluicev1.JobSpec{}
		if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(bin, stored); err != nil {
			t.Fatalf("accepted spec does not unmarshal: %v", err)
		}
		if err := Validate(stored); err != nil {
			t.Fatalf("accepted spec, read back from its binary encoding, is refused: %v", err)
		}
		// What GetJob shows (credentials redacted), sent back as an update,
		// is the same spec.
		shown, err := protojson.Marshal(redacted(&sluicev1.Job{Spec: spec}).GetSpec())
		if err != nil {
			t.Fatalf("accepted spec does not marshal as JSON: %v", err)
		}
		again, err := client.ParseSpec(shown, false)
		if err != nil {
			t.Fatalf("accepted spec, as JSON %s, does not parse: %v", shown, err)
		}
		if err := Validate(again); err != nil {
			t.Fatalf("accepted spec, as JSON %s, is refused: %v", shown, err)
		}
		if err := keepSecrets(again, spec); err != nil {
			t.Fatalf("accepted spec, as JSON %s, keeps its credentials: %v", shown, err)
		}
		if !proto.Equal(again, stored) {
			t.Fatalf("accepted spec, as JSON %s and back, is\n%v\nnot\n%v", shown, again, stored)
		}
	})
}

// fuzzPolicies are the operator's Kafka policy by default, and with a file
// directory and a bootstrap allow-list.
var fuzzPolicies = []kafkasrc.Policy{
	{},
	{FileDir: "/etc/sluice/kafka", Bootstrap: []string{"127.0.0.1:19092", "localhost:9092"}},
}

// checkAccepted checks what the coordinator and workers do with an accepted
// spec: compile it, and derive its Kafka settings and limits.
func checkAccepted(t *testing.T, spec *sluicev1.JobSpec) {
	t.Helper()
	if _, err := steps.Compile(spec); err != nil {
		t.Fatalf("Validate accepted a spec that does not compile: %v", err)
	}
	jobspec.Source(spec)
	jobspec.Sink(spec)
	if jobspec.Transactional(spec) {
		if id := jobspec.TransactionalID(spec, jobspec.NewIncarnation(), "t", 0); !utf8.ValidString(id) {
			t.Fatalf("transactional id %q is not valid UTF-8", id)
		}
	}
	if n := jobspec.TaskOutputBytes(spec); n <= 0 || n > jobspec.MaxTaskOutputBytes {
		t.Fatalf("TaskOutputBytes = %d, want 1 to %d", n, jobspec.MaxTaskOutputBytes)
	}
	jobspec.SpeculationMultiplier(spec)
}

// checkRefusal checks the status SubmitJob returns for a refused spec of n
// bytes.
func checkRefusal(t *testing.T, n int, err error) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field == "" || ve.Reason == "" {
		t.Fatalf("Validate error = %T %v, want a *ValidationError naming a field", err, err)
	}
	st := status.Convert(toStatus(err))
	if st.Code() != codes.InvalidArgument || !utf8.ValidString(st.Message()) {
		t.Fatalf("status = %v %q, want InvalidArgument, valid UTF-8", st.Code(), st.Message())
	}
	// %q of a field may take 10 bytes a byte (\U0001f600); CEL's text is cut.
	if max := 10*n + 8<<10; len(st.Message()) > max {
		t.Fatalf("status message of %d bytes for a spec of %d bytes, want at most %d: %.300q...", len(st.Message()), n, max, st.Message())
	}
	if _, err := proto.Marshal(st.Proto()); err != nil {
		t.Fatalf("status does not marshal: %v", err)
	}
	var field string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
			field = br.GetFieldViolations()[0].GetField()
		}
	}
	if field != ve.Field {
		t.Fatalf("status details name field %q, want %q: %v", field, ve.Field, st.Details())
	}
}
