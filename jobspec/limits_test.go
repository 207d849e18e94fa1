package jobspec

import (
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestTaskOutputBytes(t *testing.T) {
	for _, tc := range []struct {
		limit, want int64
	}{
		{0, 32 << 20},
		{1 << 20, 1 << 20},
		{48 << 20, 48 << 20},
	} {
		spec := &sluicev1.JobSpec{Limits: &sluicev1.Limits{MaxTaskOutputBytes: tc.limit}}
		if got := TaskOutputBytes(spec); got != tc.want {
			t.Errorf("TaskOutputBytes(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
	if got := TaskOutputBytes(nil); got != DefaultTaskOutputBytes {
		t.Errorf("TaskOutputBytes(nil) = %d, want the default", got)
	}
}

func TestSpeculationMultiplier(t *testing.T) {
	for _, tc := range []struct {
		k, want float64
	}{
		{0, 3}, {-1, 0}, {1.5, 1.5}, {1000, 1000},
	} {
		spec := &sluicev1.JobSpec{Limits: &sluicev1.Limits{SpeculationMultiplier: tc.k}}
		if got := SpeculationMultiplier(spec); got != tc.want {
			t.Errorf("SpeculationMultiplier(%v) = %v, want %v", tc.k, got, tc.want)
		}
	}
}

// The bounds fit what carries them: a task result with the largest output
// fits a gRPC message, and a spec fits an etcd request (1.4 MiB by default)
// with room for the rest of the job record.
func TestBoundsFit(t *testing.T) {
	if MaxTaskOutputBytes >= MaxGRPCMessageBytes {
		t.Errorf("MaxTaskOutputBytes %d does not leave room in a %d-byte message", MaxTaskOutputBytes, MaxGRPCMessageBytes)
	}
	if MaxSpecBytes > 1<<20 {
		t.Errorf("MaxSpecBytes %d leaves too little of an etcd request", MaxSpecBytes)
	}
	if MaxPropertyValueLength*2 > MaxSpecBytes || MaxExpressionLength*2 > MaxSpecBytes {
		t.Errorf("one value or expression may take half a spec")
	}
	if DefaultResultsPage > MaxResultsPage {
		t.Errorf("DefaultResultsPage %d above MaxResultsPage %d", DefaultResultsPage, MaxResultsPage)
	}
}
