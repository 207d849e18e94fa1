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

// inputRate is Spark's input rate over the last rateBatches ticks: the
// records of the committed batches whose batch time falls in that window,
// per second. A tick with nothing to read makes no batch, so an idle job's
// rate falls to 0 rather than keeping the rate of its last batches.
func inputRate(batches []*sluicev1.Batch, interval time.Duration, now time.Time) float64 {
	if interval <= 0 {
		return 0
	}
	window := rateBatches * interval
	since := now.Add(-window)
	var records int64
	for _, b := range batches {
		if b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED || !b.GetBatchTime().AsTime().After(since) {
			continue
		}
		records += b.GetMetrics().GetRecordsIn()
	}
	return float64(records) / window.Seconds()
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
