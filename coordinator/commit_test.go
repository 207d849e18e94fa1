package coordinator

import (
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestPipelined: only a batch whose commit leads to nothing outside etcd,
// with a small result, commits beside the next batch.
func TestPipelined(t *testing.T) {
	small := &sluicev1.BatchResult{Aggregates: []*sluicev1.KeyAggregate{{Key: "k", Count: 1}}}
	big := &sluicev1.BatchResult{Records: []*sluicev1.OutputRecord{{Value: []byte(strings.Repeat("x", pipelineResultBytes))}}}
	kafkaSink := &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: "out"}}}
	for _, tc := range []struct {
		name   string
		spec   *sluicev1.JobSpec
		agg    *aggState
		result *sluicev1.BatchResult
		want   bool
	}{
		{name: "aggregate collected", spec: &sluicev1.JobSpec{Aggregate: &sluicev1.Aggregate{}}, result: small, want: true},
		{name: "no result", spec: &sluicev1.JobSpec{}, want: true},
		{name: "records over 1 MiB", spec: &sluicev1.JobSpec{}, result: big},
		{name: "kafka sink", spec: &sluicev1.JobSpec{Sink: kafkaSink}, result: small},
		{name: "update stream", spec: &sluicev1.JobSpec{Sink: kafkaSink, Aggregate: &sluicev1.Aggregate{Running: true}}, result: small},
		{name: "running totals", spec: &sluicev1.JobSpec{Aggregate: &sluicev1.Aggregate{Running: true}}, agg: &aggState{}, result: small},
		{name: "dead letters", spec: &sluicev1.JobSpec{
			DeadLetter:    &sluicev1.DeadLetter{Topic: "dlq"},
			OnRecordError: sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_DEAD_LETTER,
		}, result: small},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &jobRunner{spec: tc.spec, agg: tc.agg}
			if got := r.pipelined(&finished{result: tc.result}); got != tc.want {
				t.Errorf("pipelined = %v, want %v", got, tc.want)
			}
		})
	}
}
