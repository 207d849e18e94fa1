package jobspec

import sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"

// Defaults and bounds of the limits that both the coordinator and the
// workers apply.
const (
	DefaultTaskOutputBytes = 32 << 20
	MaxTaskOutputBytes     = 48 << 20 // below the 64 MiB gRPC message limit, with room for the rest of the result
	// DefaultSpeculationMultiplier: a task is speculated past 3x its
	// batch's median task duration.
	DefaultSpeculationMultiplier = 3.0
	MaxSpeculationMultiplier     = 1000.0
)

// TaskOutputBytes is the cap on the output records one collect task returns.
func TaskOutputBytes(spec *sluicev1.JobSpec) int64 {
	if n := spec.GetLimits().GetMaxTaskOutputBytes(); n > 0 {
		return n
	}
	return DefaultTaskOutputBytes
}

// SpeculationMultiplier is the multiple of the batch's median task duration
// past which a task is speculated; 0 means speculation is off.
func SpeculationMultiplier(spec *sluicev1.JobSpec) float64 {
	switch k := spec.GetLimits().GetSpeculationMultiplier(); {
	case k < 0:
		return 0
	case k == 0:
		return DefaultSpeculationMultiplier
	default:
		return k
	}
}
