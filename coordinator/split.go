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
	packRecordsPerTask = 8_000
)

// liveWorker is a live worker as packing sees it.
type liveWorker struct {
	id    string
	slots int
}

func totalSlots(ws []liveWorker) int {
	n := 0
	for _, w := range ws {
		n += w.slots
	}
	return n
}

// owner is the index in ws of the worker that consistent placement gives
// r's partition (-1 without workers).
func owner(r *sluicev1.OffsetRange, ws []liveWorker) int {
	k := placeKey{partitionKey: partitionKey{r.GetTopic(), r.GetPartition()}}
	best, bestScore := -1, uint64(0)
	for i, w := range ws {
		if score := rendezvous(k, w.id); best < 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// packRanges packs the small whole ranges of a batch (below packRecords)
// into a few tasks when there are more of them than the workers have
// slots: the cost of a batch over a thousand partitions is then a few
// tasks, not a thousand. Bigger ranges and split pieces stay tasks of their
// own. Without packable (the transactional Kafka sink, one transaction per
// partition) nothing is packed.
//
// Ranges are packed by the worker their partition hashes to, into one task
// per packRecordsPerTask records, at most one per slot of that worker
// (and at most maxRangesPerTask ranges each), dealt in partition order.
// So a worker's tasks carry the same partitions batch after batch, and its
// sticky pool consumers find them assigned, their records prefetched. A
// packed task's ranges are in topic and partition order.
func packRanges(trs []taskRange, ws []liveWorker, packable bool) []taskRange {
	var small []int
	for i, tr := range trs {
		if tr.OffsetRange != nil && !tr.split && rangeRecords(tr) < packRecords {
			small = append(small, i)
		}
	}
	if !packable || len(small) <= max(totalSlots(ws), 1) {
		// Few enough for the cached consumers, whose prefetch makes the
		// next batch of a partition cheapest.
		return trs
	}
	byOwner := map[int][]int{}
	isSmall := make(map[int]bool, len(small))
	for _, i := range small {
		o := owner(trs[i].OffsetRange, ws)
		byOwner[o] = append(byOwner[o], i)
		isSmall[i] = true
	}
	out := make([]taskRange, 0, len(trs)-len(small)+max(totalSlots(ws), 1))
	for i, tr := range trs {
		if !isSmall[i] {
			out = append(out, tr)
		}
	}
	owners := make([]int, 0, len(byOwner))
	for o := range byOwner {
		owners = append(owners, o)
	}
	sort.Ints(owners)
	for _, o := range owners {
		members := byOwner[o] // in trs order: topic and partition
		slots := 1
		if o >= 0 {
			slots = max(ws[o].slots, 1)
		}
		var records int64
		for _, i := range members {
			records += rangeRecords(trs[i])
		}
		groups := int(min(int64(slots), (records+packRecordsPerTask-1)/packRecordsPerTask))
		groups = max(groups, 1, (len(members)+maxRangesPerTask-1)/maxRangesPerTask)
		for g := range groups {
			var packed []*sluicev1.OffsetRange
			for j := g; j < len(members); j += groups {
				packed = append(packed, trs[members[j]].OffsetRange)
			}
			switch len(packed) {
			case 0:
			case 1:
				out = append(out, taskRange{OffsetRange: packed[0]})
			default:
				out = append(out, taskRange{ranges: packed})
			}
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

// liveWorkers are the live workers and their slots, by id.
func (d *dispatcher) liveWorkers() []liveWorker {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ws []liveWorker
	for _, w := range d.workers {
		if w.alive() {
			ws = append(ws, liveWorker{id: w.id, slots: w.slots})
		}
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].id < ws[j].id })
	return ws
}
