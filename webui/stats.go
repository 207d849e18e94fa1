package webui

import (
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// defaultBatchInterval is JobSpec.batch_interval's default.
const defaultBatchInterval = time.Second

func batchInterval(spec *sluicev1.JobSpec) time.Duration {
	if d := spec.GetBatchInterval(); d != nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	return defaultBatchInterval
}

// inputRate is Spark's input rate: records read per second of batch
// interval, averaged over the committed batches given (planned ones have
// not read anything yet); 0 with none.
func inputRate(batches []*sluicev1.Batch, interval time.Duration) float64 {
	var records int64
	n := 0
	for _, b := range batches {
		if b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED {
			continue
		}
		records += b.GetMetrics().GetRecordsIn()
		n++
	}
	if n == 0 || interval <= 0 {
		return 0
	}
	return float64(records) / (float64(n) * interval.Seconds())
}

// totalLag sums the partitions' lag; a partition's negative lag (offsets
// read before a truncation) counts as none.
func totalLag(parts []*sluicev1.PartitionProgress) int64 {
	var lag int64
	for _, p := range parts {
		lag += max(p.GetLag(), 0)
	}
	return lag
}
