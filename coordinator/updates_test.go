package coordinator

import (
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestUpdateMessages(t *testing.T) {
	spec := &sluicev1.JobSpec{
		Name:      "totals",
		Aggregate: &sluicev1.Aggregate{Running: true, Functions: []sluicev1.AggregateFunction{sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT, sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM}},
		Sink:      &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{Topic: "out"}}},
	}
	start := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	res := &sluicev1.BatchResult{
		Totals: []*sluicev1.KeyAggregate{{Key: "a", Count: 3, Sum: 4.5, Min: 1, Max: 2}, {Key: "\\xff", KeyBytes: []byte{0xff}, Count: 1}},
		Windows: []*sluicev1.WindowResult{{
			Start: timestamppb.New(start), End: timestamppb.New(start.Add(time.Minute)),
			Aggregates: []*sluicev1.KeyAggregate{{Key: "a", Count: 2, Sum: 3}},
		}},
	}
	msgs, err := updateMessages(spec, 7, res)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ key, value string }{
		{"a", `{"count":3,"sum":4.5}`},
		{"\xff", `{"count":1,"sum":0}`},
		{"a", `{"window":{"start":"2026-11-21T10:00:00Z","end":"2026-11-21T10:01:00Z"},"count":2,"sum":3}`},
	}
	if len(msgs) != len(want) {
		t.Fatalf("%d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if string(m.Key) != want[i].key || string(m.Value) != want[i].value || m.Topic != "out" || m.Partition != -1 {
			t.Errorf("message %d = %q %s to %s/%d, want %q %s to out/-1", i, m.Key, m.Value, m.Topic, m.Partition, want[i].key, want[i].value)
		}
		if len(m.Headers) != 2 || string(m.Headers[0].Value) != "totals" || string(m.Headers[1].Value) != "7" {
			t.Errorf("message %d headers %v, want sluice-job totals and sluice-batch 7", i, m.Headers)
		}
	}
	res.Totals[0].Sum = math.Inf(1)
	if _, err := updateMessages(spec, 7, res); err == nil || !strings.Contains(err.Error(), `key "a"`) {
		t.Errorf("an infinite sum: err = %v, want it to name the key", err)
	}
}

func TestChangedTotals(t *testing.T) {
	totals := []*sluicev1.KeyAggregate{{Key: "a", Count: 5}, {Key: "b", Count: 1}, {Key: "c", Count: 9}}
	got := changedTotals(totals, []*sluicev1.KeyAggregate{{Key: "a", Count: 1}, {Key: "c", Count: 2}})
	if len(got) != 2 || got[0].GetCount() != 5 || got[1].GetCount() != 9 {
		t.Fatalf("changedTotals = %v, want the totals of a and c", got)
	}
}
