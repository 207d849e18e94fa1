package jobspec

import (
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestDeadLetterNames(t *testing.T) {
	dlq := sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER
	kafka := &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: "out", BootstrapServers: "sink:9092"}}}
	idem := &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: "out", Mode: sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_IDEMPOTENT}}}
	tests := []struct {
		name          string
		spec          *sluicev1.JobSpec
		txn, perPart  bool
		cluster       string
		readCommitted bool
	}{
		{"collect", &sluicev1.JobSpec{OnRecordError: dlq, DeadLetter: &sluicev1.DeadLetter{Topic: "d"}}, true, true, "src:9092", false},
		{"collect, own cluster", &sluicev1.JobSpec{OnRecordError: dlq, DeadLetter: &sluicev1.DeadLetter{Topic: "d", BootstrapServers: "dlq:9092"}}, true, true, "dlq:9092", false},
		{"transactional sink", &sluicev1.JobSpec{OnRecordError: dlq, DeadLetter: &sluicev1.DeadLetter{Topic: "d"}, Sink: kafka}, false, true, "sink:9092", false},
		{"idempotent sink", &sluicev1.JobSpec{OnRecordError: dlq, DeadLetter: &sluicev1.DeadLetter{Topic: "d"}, Sink: idem}, false, false, "src:9092", false},
		// The coordinator writes an aggregate's update stream; the tasks
		// write their dead letters in transactions of their own.
		{"update stream", &sluicev1.JobSpec{OnRecordError: dlq, DeadLetter: &sluicev1.DeadLetter{Topic: "d"}, Sink: kafka, Aggregate: &sluicev1.Aggregate{Running: true}}, true, true, "sink:9092", false},
		{"skip policy", &sluicev1.JobSpec{OnRecordError: sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_SKIP}, false, false, "src:9092", false},
	}
	for _, tt := range tests {
		tt.spec.Name = "j"
		tt.spec.Source = &sluicev1.KafkaSource{BootstrapServers: "src:9092"}
		if got := DeadLetterTxn(tt.spec); got != tt.txn {
			t.Errorf("%s: DeadLetterTxn = %v, want %v", tt.name, got, tt.txn)
		}
		if got := PerPartitionTasks(tt.spec); got != tt.perPart {
			t.Errorf("%s: PerPartitionTasks = %v, want %v", tt.name, got, tt.perPart)
		}
		if c := DeadLetterCluster(tt.spec); c.Bootstrap != tt.cluster || c.ReadCommitted != tt.readCommitted {
			t.Errorf("%s: DeadLetterCluster = %+v, want %s", tt.name, c, tt.cluster)
		}
	}
	spec := &sluicev1.JobSpec{Name: "j"}
	if got := DeadLetterTransactionalID(spec, "ab12", "in.v1", 3); got != "sluice-dlq:j:ab12:in.v1:3" {
		t.Errorf("DeadLetterTransactionalID = %q", got)
	}
	if got := DeadLetterTransactionalIDPrefix(spec, "ab12"); got != "sluice-dlq:j:ab12:" {
		t.Errorf("DeadLetterTransactionalIDPrefix = %q", got)
	}
	if got := DeadLetterGroupID("j", "ab12"); got != "sluice:j:ab12:dlq" {
		t.Errorf("DeadLetterGroupID = %q", got)
	}
}
