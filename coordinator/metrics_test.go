package coordinator

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func states(n int, lag int64) []partitionState {
	out := make([]partitionState, n)
	for i := range out {
		out[i] = partitionState{partitionKey: partitionKey{"t", int32(i)}, From: 10, Latest: 10 + lag}
	}
	return out
}

func TestJobMetricsLag(t *testing.T) {
	tests := []struct {
		name           string
		states         []partitionState
		wantTotal      float64
		wantPartitions int
	}{
		{"per partition", states(3, 7), 21, 3},
		{"latest below committed counts no lag", []partitionState{{partitionKey: partitionKey{"t", 0}, From: 10, Latest: 4}}, 0, 1},
		{"at the bound", states(MaxLagPartitions, 1), MaxLagPartitions, MaxLagPartitions},
		{"past the bound only the total", states(MaxLagPartitions+1, 1), MaxLagPartitions + 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMetrics(prometheus.NewRegistry(), func() float64 { return 0 })
			j := m.job("j")
			j.planned(states(2, 5), nil) // series from an earlier plan
			j.planned(tt.states, &sluicev1.BatchCap{Rate: 300})
			if got := testutil.ToFloat64(m.lag.WithLabelValues("j")); got != tt.wantTotal {
				t.Errorf("sluice_job_lag_records = %v, want %v", got, tt.wantTotal)
			}
			if got := testutil.CollectAndCount(m.partitionLag); got != tt.wantPartitions {
				t.Errorf("%d sluice_job_partition_lag_records series, want %d", got, tt.wantPartitions)
			}
			if got := testutil.ToFloat64(m.rateCap.WithLabelValues("j")); got != 300 {
				t.Errorf("sluice_job_rate_cap_records_per_second = %v, want 300", got)
			}
		})
	}
}

func TestJobMetricsCommittedAndDeleted(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), func() float64 { return 0 })
	a, b := m.job("a"), m.job("b")
	batch := &sluicev1.Batch{Metrics: &sluicev1.BatchMetrics{
		RecordsIn: 10, RecordsOut: 7, RecordsFailed: 1,
		ProcessingTime: durationpb.New(2e8), SchedulingDelay: durationpb.New(1e8), TotalDelay: durationpb.New(3e8),
	}}
	a.committed(batch)
	a.committed(batch)
	b.committed(batch)
	a.attempt()
	a.retry()
	a.failure(failDeadline)
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"records in", testutil.ToFloat64(m.recordsIn.WithLabelValues("a")), 20},
		{"records out", testutil.ToFloat64(m.recordsOut.WithLabelValues("a")), 14},
		{"records failed", testutil.ToFloat64(m.recordsFailed.WithLabelValues("a")), 2},
		{"batches", testutil.ToFloat64(m.batches.WithLabelValues("a")), 2},
		{"attempts", testutil.ToFloat64(m.taskAttempts.WithLabelValues("a")), 1},
		{"retries", testutil.ToFloat64(m.taskRetries.WithLabelValues("a")), 1},
		{"deadline failures", testutil.ToFloat64(m.taskFailures.WithLabelValues("a", failDeadline)), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	m.deleteJob("a")
	if n := testutil.CollectAndCount(m.recordsIn); n != 1 {
		t.Errorf("%d sluice_job_records_in_total series after deleting a, want b's only", n)
	}
	if n := testutil.CollectAndCount(m.taskFailures); n != 4 {
		t.Errorf("%d sluice_job_task_failures_total series after deleting a, want b's 4 reasons", n)
	}
	// A nil jobMetrics (a runner in a test) counts nothing and does not panic.
	var none *jobMetrics
	none.committed(batch)
	none.planned(states(1, 1), nil)
	none.attempt()
	none.retry()
	none.failure(failError)
}

// TestJobMetricsLagUpdates: the next plan moves a partition's series (the
// gauge kept from the plan before), and a new runner of the job (a new
// jobMetrics) drops the series its plan no longer has.
func TestJobMetricsLagUpdates(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), func() float64 { return 0 })
	j := m.job("j")
	j.planned(states(3, 7), nil)
	j.planned(states(3, 2), nil)
	if got := testutil.ToFloat64(m.partitionLag.WithLabelValues("j", "t", "2")); got != 2 {
		t.Errorf("t/2 lag after the second plan = %v, want 2", got)
	}
	m.job("j").planned(states(1, 4), nil)
	if got := testutil.CollectAndCount(m.partitionLag); got != 1 {
		t.Errorf("%d series after a new runner planned one partition, want 1", got)
	}
	if got := testutil.ToFloat64(m.partitionLag.WithLabelValues("j", "t", "0")); got != 4 {
		t.Errorf("t/0 lag = %v, want 4", got)
	}
}
