package coordinator

import (
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

const (
	// minSplitRecords: without limits.max_records_per_task a partition's
	// range is split only above this many records, where reading it on
	// several workers gains more than the extra seeks cost.
	minSplitRecords = 100_000
	// maxPiecesPerRange bounds the tasks of one partition in a batch
	// whatever max_records_per_task says: pieces grow instead.
	maxPiecesPerRange = 1024
)

// taskRange is the range one task reads: a whole partition range of the
// batch, or one piece of it.
type taskRange struct {
	*sluicev1.OffsetRange
	piece int32 // index among the pieces of its partition's range
}

// splitRanges cuts a batch's ranges into the ranges of its tasks. A range
// above maxPerTask records becomes ceil(n/maxPerTask) pieces of nearly
// equal size that tile it in offset order. maxPerTask 0 splits hot
// partitions only: a range above both its even share of the workers'
// slots (the batch's records / slots) and minSplitRecords. Without
// splittable (the transactional Kafka sink, whose transactions are per
// partition) every range is one task.
func splitRanges(ranges []*sluicev1.OffsetRange, maxPerTask int64, slots int, splittable bool) []taskRange {
	out := make([]taskRange, 0, len(ranges))
	limit := maxPerTask
	if splittable && limit <= 0 {
		var total int64
		for _, r := range ranges {
			total = addSat(total, r.GetUntilOffset()-r.GetFromOffset())
		}
		share := total / int64(max(slots, 1))
		if total%int64(max(slots, 1)) != 0 {
			share++
		}
		limit = max(share, minSplitRecords)
	}
	for _, r := range ranges {
		n := r.GetUntilOffset() - r.GetFromOffset()
		if !splittable || n <= limit {
			out = append(out, taskRange{OffsetRange: r})
			continue
		}
		pieces := n / limit
		if n%limit != 0 {
			pieces++
		}
		pieces = min(pieces, maxPiecesPerRange)
		size, extra := n/pieces, n%pieces
		from := r.GetFromOffset()
		for i := range pieces {
			until := from + size
			if i < extra {
				until++
			}
			out = append(out, taskRange{
				OffsetRange: &sluicev1.OffsetRange{Topic: r.GetTopic(), Partition: r.GetPartition(), FromOffset: from, UntilOffset: until},
				piece:       int32(i),
			})
			from = until
		}
	}
	return out
}

// liveSlots is the number of task slots of the live workers.
func (d *dispatcher) liveSlots() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, w := range d.workers {
		if w.alive() {
			n += w.slots
		}
	}
	return n
}
