package worker

import (
	"context"
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// A packed task (several ranges) is read through the pool, echoes its
// ranges, and returns every record of each range.
func TestRunTaskSeveralRanges(t *testing.T) {
	env := newTaskEnv(t, nil)
	t.Cleanup(env.w.pool.Close)
	env.produce(300, 20)
	task := env.task(&sluicev1.JobSpec{}, 0)
	task.Range = nil
	// The in topic has one partition: one range, read by the pool.
	task.Ranges = []*sluicev1.OffsetRange{{Topic: "in", Partition: 0, FromOffset: 10, UntilOffset: 300}}
	res := env.w.runTask(context.Background(), task)
	if res.GetError() != "" || res.GetRecordsIn() != 290 || len(res.GetRecords()) != 290 {
		t.Fatalf("error %q, %d in, %d records; want the 290 records", res.GetError(), res.GetRecordsIn(), len(res.GetRecords()))
	}
	if len(res.GetRanges()) != 1 || res.GetRanges()[0].GetFromOffset() != 10 {
		t.Fatalf("result ranges %v, want the task's", res.GetRanges())
	}
	for i, r := range res.GetRecords() {
		if r.GetOffset() != int64(10+i) {
			t.Fatalf("record %d at offset %d, want %d", i, r.GetOffset(), 10+i)
		}
	}
}

// A task with several ranges for the transactional Kafka sink, whose
// transactions are per source partition, is refused fatally before it
// reads anything.
func TestRunTaskSeveralRangesTransactionalRefused(t *testing.T) {
	env := newTaskEnv(t, nil)
	t.Cleanup(env.w.pool.Close)
	spec := &sluicev1.JobSpec{Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: "out"}}}}
	task := env.task(spec, 0)
	task.Range = nil
	task.Ranges = []*sluicev1.OffsetRange{
		{Topic: "in", Partition: 0, FromOffset: 0, UntilOffset: 1}, {Topic: "other", Partition: 0, FromOffset: 0, UntilOffset: 1},
	}
	res := env.w.runTask(context.Background(), task)
	if !res.GetFatal() || !strings.Contains(res.GetError(), "2 ranges for a transactional Kafka sink") {
		t.Fatalf("fatal %v, error %q; want a fatal refusal", res.GetFatal(), res.GetError())
	}
}
