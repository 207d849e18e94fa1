package coordinator

import (
	"sort"

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

// taskRange is what one task reads: a whole partition range of the batch,
// one piece of it, or (ranges set, OffsetRange nil) several small ranges.
type taskRange struct {
	*sluicev1.OffsetRange
	piece  int32 // index among the pieces of its partition's range
	split  bool  // one of several pieces of a range
	ranges []*sluicev1.OffsetRange
}

const (
	// packRecords: ranges below this many records are packed several to a
	// task when a batch has more ranges than the workers have slots.
	packRecords = 10_000
	// maxRangesPerTask bounds a packed task (its message and its reader's
	// assignment).
	maxRangesPerTask = 2048
	// packRecordsPerTask: small ranges are packed into one task per this
	// many records (up to one per slot). Every task costs a dispatch, a
	// consumer and a fetch; below this, fewer tasks finish sooner.
	packRecordsPerTask = 50_000
)

// packRanges packs the small whole ranges of a batch (below packRecords)
// into tasks of about packRecordsPerTask records, at most one per slot,
// balanced by records, when there are more of them than slots or they are
// few records: the cost of a batch over a thousand partitions is then a few
// tasks, not a thousand. Bigger ranges and split pieces stay tasks of
// their own. A packed task's ranges are in topic and partition order.
// Without packable (the transactional Kafka sink, one transaction per
// partition) nothing is packed.
func packRanges(trs []taskRange, slots int, packable bool) []taskRange {
	var small []int
	for i, tr := range trs {
		if tr.OffsetRange != nil && !tr.split && tr.GetUntilOffset()-tr.GetFromOffset() < packRecords {
			small = append(small, i)
		}
	}
	// As few tasks as keep the slots busy: one per packRecordsPerTask
	// records, at most one per slot, at least enough for maxRangesPerTask.
	var smallRecords int64
	for _, i := range small {
		smallRecords += rangeRecords(trs[i])
	}
	groups := int(min(int64(max(slots, 1)), (smallRecords+packRecordsPerTask-1)/packRecordsPerTask))
	groups = max(groups, 1, (len(small)+maxRangesPerTask-1)/maxRangesPerTask)
	if !packable || len(small) <= max(slots, 1) {
		// Few enough for the cached consumers, whose prefetch makes the
		// next batch of a partition cheapest.
		return trs
	}
	// Longest first to the least loaded group (ties: the lower index), so
	// that the tasks are about even.
	order := append([]int(nil), small...)
	sort.SliceStable(order, func(a, b int) bool {
		return rangeRecords(trs[order[a]]) > rangeRecords(trs[order[b]])
	})
	load := make([]int64, groups)
	members := make([][]int, groups)
	for _, i := range order {
		g := 0
		for j := range groups {
			if len(members[j]) < maxRangesPerTask && (len(members[g]) >= maxRangesPerTask || load[j] < load[g]) {
				g = j
			}
		}
		load[g] += rangeRecords(trs[i])
		members[g] = append(members[g], i)
	}
	out := make([]taskRange, 0, len(trs)-len(small)+groups)
	isSmall := map[int]bool{}
	for _, i := range small {
		isSmall[i] = true
	}
	for i, tr := range trs {
		if !isSmall[i] {
			out = append(out, tr)
		}
	}
	for _, m := range members {
		sort.Ints(m) // trs is in topic and partition order
		switch len(m) {
		case 0:
		case 1:
			out = append(out, trs[m[0]])
		default:
			packed := taskRange{}
			for _, i := range m {
				packed.ranges = append(packed.ranges, trs[i].OffsetRange)
			}
			out = append(out, packed)
		}
	}
	return out
}

// rangeRecords is the offsets a whole range or piece spans.
func rangeRecords(tr taskRange) int64 { return tr.GetUntilOffset() - tr.GetFromOffset() }

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
				split:       true,
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
