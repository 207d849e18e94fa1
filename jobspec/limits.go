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

// Bounds of a job spec, which is user input stored in etcd and sent to every
// worker with each task: submit refuses a spec above them, naming the field
// and the bound.
const (
	// MaxSpecBytes bounds a spec's encoded size; the job record, spec
	// included, must fit one etcd request (about 1.4 MiB).
	MaxSpecBytes = 256 << 10
	// MaxNameLength bounds the job name (a DNS label).
	MaxNameLength = 63
	// MaxSteps bounds the number of steps.
	MaxSteps = 64
	// MaxExpressionLength bounds each CEL expression, in bytes.
	MaxExpressionLength = 16 << 10
	// MaxProperties bounds the Kafka client properties of the source, and
	// of the sink, and the sink's headers.
	MaxProperties = 64
	// MaxPropertyNameLength bounds a property's (or header's) name.
	MaxPropertyNameLength = 256
	// MaxPropertyValueLength bounds a property's value; an inline PEM
	// certificate chain (ssl.ca.pem) fits.
	MaxPropertyValueLength = 64 << 10
)

// Pages of GetResults: a request's limit may be 1 to MaxResultsPage;
// 0 asks for DefaultResultsPage.
const (
	DefaultResultsPage = 100
	MaxResultsPage     = 1000
)

// MaxGRPCMessageBytes is the largest gRPC message the coordinator and
// the workers receive: a task result carries up to MaxTaskOutputBytes of
// output records, and the rest of the result fits in what remains.
const MaxGRPCMessageBytes = 64 << 20

// Bounds of source.schema_registry: its URL, each credential, and the CA
// certificates.
const (
	MaxRegistryURLLength  = 2048
	MaxCredentialLength   = 4096
	MaxRegistryCAPEMBytes = 64 << 10
)
