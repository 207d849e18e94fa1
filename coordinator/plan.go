package coordinator

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/window"
)

// partitionKey names a partition of a topic.
type partitionKey struct {
	Topic     string
	Partition int32
}

func (p partitionKey) String() string { return fmt.Sprintf("%s/%d", p.Topic, p.Partition) }

// partitionState is what planning knows of one partition.
type partitionState struct {
	partitionKey
	// From is the committed offset (next to read).
	From int64
	// Earliest is the log start offset (0 where unknown).
	Earliest int64
	// Latest is the high watermark, or the last stable offset under read_committed.
	Latest int64
}

// limits are the caps on one batch's size.
type limits struct {
	Interval            time.Duration
	MaxRatePerPartition int64
	MaxRecordsPerBatch  int64
	MinRatePerPartition int64
	// Rate is records per second over the job, from backpressure or the
	// initial rate (RateSource says which); 0 is none.
	Rate       float64
	RateSource sluicev1.CapSource
}

// planRanges cuts one batch: for every partition [from, min(latest, from+cap)).
// The cap is the smallest of the per-partition rate, the partition's share
// of the job's rate (backpressure or initial rate) and of the batch-wide
// limit, both split across partitions in proportion to their lag (Spark's
// DirectKafkaInputDStream and Structured Streaming's maxOffsetsPerTrigger);
// min_rate_per_partition raises the rate caps but not the batch-wide one.
// Empty ranges are dropped. The result is sorted by topic and partition so
// that a plan is deterministic; the cap says which limit applied.
func planRanges(parts []partitionState, lim limits) ([]*sluicev1.OffsetRange, *sluicev1.BatchCap, error) {
	sorted := append([]partitionState(nil), parts...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Topic != sorted[j].Topic {
			return sorted[i].Topic < sorted[j].Topic
		}
		return sorted[i].Partition < sorted[j].Partition
	})

	var totalLag int64
	for _, p := range sorted {
		if p.Latest < p.From {
			return nil, nil, fmt.Errorf("partition %s: latest offset %d is below committed offset %d (topic recreated or truncated)",
				p.partitionKey, p.Latest, p.From)
		}
		totalLag = addSat(totalLag, subSat(p.Latest, p.From))
	}

	ms := lim.Interval.Milliseconds()
	var staticRate int64 = math.MaxInt64
	if lim.MaxRatePerPartition > 0 {
		// Integer milliseconds: float seconds would make 100/s x 290ms 28.99 records.
		staticRate = max(mulDivSat(lim.MaxRatePerPartition, ms, 1000), 1)
	}
	var floor int64
	if lim.MinRatePerPartition > 0 {
		floor = max(mulDivSat(lim.MinRatePerPartition, ms, 1000), 1)
	}

	var ranges []*sluicev1.OffsetRange
	var allowed int64
	unlimited := false
	cut := map[sluicev1.CapSource]int64{}
	binding := map[sluicev1.CapSource]int{}
	for _, p := range sorted {
		lag := subSat(p.Latest, p.From)
		if lag == 0 {
			continue
		}
		capN, src := staticRate, sluicev1.CapSource_CAP_SOURCE_STATIC
		if lim.MaxRatePerPartition <= 0 {
			src = sluicev1.CapSource_CAP_SOURCE_NONE
		}
		if lim.Rate > 0 {
			// The partition's share of the job's rate, at least one record
			// so that a small partition is never starved.
			share := lim.Rate * float64(ms) / 1000 * float64(lag) / float64(totalLag)
			n := int64(math.MaxInt64)
			if share < math.MaxInt64/2 {
				n = max(int64(share), 1)
			}
			if n < capN {
				capN, src = n, lim.RateSource
			}
		}
		if src != sluicev1.CapSource_CAP_SOURCE_NONE && capN < floor {
			capN, src = floor, sluicev1.CapSource_CAP_SOURCE_MIN_RATE
		}
		if lim.MaxRecordsPerBatch > 0 && totalLag > lim.MaxRecordsPerBatch {
			// The share in proportion to the lag, exactly (no float rounding
			// past 2^53); a share below one is one.
			if n := max(mulDivSat(lim.MaxRecordsPerBatch, lag, totalLag), 1); n < capN {
				capN, src = n, sluicev1.CapSource_CAP_SOURCE_STATIC
			}
		}
		if src == sluicev1.CapSource_CAP_SOURCE_NONE {
			unlimited = true
		} else {
			allowed = addSat(allowed, capN)
		}
		binding[src]++
		n := min(lag, capN)
		if n < lag {
			cut[src] = addSat(cut[src], lag-n)
		}
		ranges = append(ranges, &sluicev1.OffsetRange{
			Topic: p.Topic, Partition: p.Partition, FromOffset: p.From, UntilOffset: p.From + n,
		})
	}
	bc := &sluicev1.BatchCap{Source: sluicev1.CapSource_CAP_SOURCE_NONE, Limited: len(cut) > 0}
	if !unlimited {
		bc.MaxRecords = allowed
	}
	// The batch's cap is the limit that cut the most records, or, when
	// none cut any, the one that bound the most partitions.
	var best int64 = -1
	for _, src := range []sluicev1.CapSource{
		sluicev1.CapSource_CAP_SOURCE_STATIC, sluicev1.CapSource_CAP_SOURCE_ESTIMATE,
		sluicev1.CapSource_CAP_SOURCE_INITIAL, sluicev1.CapSource_CAP_SOURCE_MIN_RATE,
	} {
		score := int64(binding[src])
		if bc.Limited {
			score = cut[src]
		}
		if score > 0 && score > best {
			best, bc.Source = score, src
		}
	}
	if bc.Source == sluicev1.CapSource_CAP_SOURCE_ESTIMATE || bc.Source == sluicev1.CapSource_CAP_SOURCE_INITIAL {
		bc.Rate = int64(min(lim.Rate, math.MaxInt64/2))
	}
	return ranges, bc, nil
}

// addSat is a+b for non-negative a and b, saturating at math.MaxInt64.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// subSat is a-b for a >= b, saturating at math.MaxInt64 (a offset far
// above a negative one).
func subSat(a, b int64) int64 {
	d := a - b
	if d < 0 {
		return math.MaxInt64
	}
	return d
}

// mulDivSat is a*b/c for non-negative a and b and positive c, computed on
// 128 bits and saturating at math.MaxInt64: a rate of 1e18 records per
// second times a batch interval must cap a range, not wrap negative.
func mulDivSat(a, b, c int64) int64 {
	if a <= 0 || b <= 0 || c <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi >= uint64(c) {
		return math.MaxInt64 // the quotient needs more than 64 bits
	}
	q, _ := bits.Div64(hi, lo, uint64(c))
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// startingOffsets resolves where a new job starts on every known partition.
func startingOffsets(so *sluicev1.StartingOffsets, earliest, latest map[partitionKey]int64) map[partitionKey]int64 {
	out := make(map[partitionKey]int64, len(earliest))
	pick := func(pos sluicev1.StartPosition, pk partitionKey) int64 {
		if pos == sluicev1.StartPosition_START_POSITION_LATEST {
			return latest[pk]
		}
		return earliest[pk]
	}
	explicit := map[partitionKey]int64{}
	others := sluicev1.StartPosition_START_POSITION_EARLIEST
	switch k := so.GetKind().(type) {
	case *sluicev1.StartingOffsets_Position:
		others = k.Position
	case *sluicev1.StartingOffsets_Explicit:
		for _, po := range k.Explicit.GetOffsets() {
			explicit[partitionKey{po.GetTopic(), po.GetPartition()}] = po.GetOffset()
		}
		if k.Explicit.GetOthers() != sluicev1.StartPosition_START_POSITION_UNSPECIFIED {
			others = k.Explicit.GetOthers()
		}
	}
	for pk := range earliest {
		if off, ok := explicit[pk]; ok {
			out[pk] = off
			continue
		}
		out[pk] = pick(others, pk)
	}
	return out
}

// startsEarly reports whether the next batch starts as soon as the last
// one is done instead of at its tick: when a cap cut the last batch's ranges
// (limited: records were left for later, the job is behind), no batch waits
// idle for the clock. As Structured Streaming's triggers, where a micro-batch
// runs as soon as the previous one ends while there is data left. Not when
// the user capped the rate per partition (max_rate_per_partition: batches
// back to back would read faster than that), nor with processing-time
// windows, whose panes are cut on the ticks.
func startsEarly(limited bool, spec *sluicev1.JobSpec) bool {
	if !limited || spec.GetLimits().GetMaxRatePerPartition() > 0 {
		return false
	}
	w := window.Of(spec)
	return !w.Windowed || w.EventTime
}

// nextBatchTime decides the tick of the next batch: the first tick after the
// previous batch's, or the latest elapsed tick when the job is behind, so that
// a slow batch does not leave a queue of stale ticks behind it.
func nextBatchTime(prev time.Time, interval time.Duration, now time.Time) time.Time {
	next := prev.Add(interval)
	if prev.IsZero() {
		return now.Truncate(interval)
	}
	if now.Sub(next) >= interval {
		return now.Truncate(interval)
	}
	return next
}

// findDataLoss finds partitions whose committed offset Kafka can no longer
// serve: below the log start (retention deleted records before they were
// read), or above the latest offset (the partition went backwards: topic
// recreated or truncated). Each yields a DataLoss whose until is where reading
// resumes, and the states are moved there.
func findDataLoss(states []partitionState) ([]partitionState, []*sluicev1.DataLoss) {
	var losses []*sluicev1.DataLoss
	out := make([]partitionState, len(states))
	for i, p := range states {
		switch {
		case p.From < p.Earliest:
			losses = append(losses, &sluicev1.DataLoss{
				Topic: p.Topic, Partition: p.Partition, FromOffset: p.From, UntilOffset: p.Earliest,
				Reason: fmt.Sprintf("offsets %d to %d were deleted (log start is now %d) before they were read", p.From, p.Earliest-1, p.Earliest),
			})
			p.From = p.Earliest
		case p.From > p.Latest:
			losses = append(losses, &sluicev1.DataLoss{
				Topic: p.Topic, Partition: p.Partition, FromOffset: p.From, UntilOffset: p.Earliest,
				Reason: fmt.Sprintf("committed offset %d is above the latest offset %d (topic recreated or truncated); reading restarts at the earliest offset %d", p.From, p.Latest, p.Earliest),
			})
			p.From = p.Earliest
		}
		out[i] = p
	}
	return out, mergeLosses(losses)
}

// advanceOffsets returns the offsets after a batch: a partition with data
// loss first moves to where reading resumes, then every range's partition
// moves to its until; other partitions keep their offset.
func advanceOffsets(prev *sluicev1.CommittedOffsets, losses []*sluicev1.DataLoss, ranges []*sluicev1.OffsetRange, batchID int64) *sluicev1.CommittedOffsets {
	for _, l := range losses {
		ranges = append([]*sluicev1.OffsetRange{{Topic: l.GetTopic(), Partition: l.GetPartition(), UntilOffset: l.GetUntilOffset()}}, ranges...)
	}
	// At 10,000 partitions this runs twice a batch. The offsets are
	// allocated together, and a plan's ranges, in the order of prev,
	// are merged into them without a map; ranges in another order or of
	// new partitions take the map. BenchmarkAdvanceOffsets: from 3.6 ms a
	// call to 0.6-0.8 ms.
	prevs := prev.GetOffsets()
	out := &sluicev1.CommittedOffsets{BatchId: batchID, Offsets: make([]*sluicev1.PartitionOffset, len(prevs))}
	backing := make([]sluicev1.PartitionOffset, len(prevs))
	for i, po := range prevs {
		o := &backing[i]
		o.Topic, o.Partition, o.Offset = po.GetTopic(), po.GetPartition(), po.GetOffset()
		out.Offsets[i] = o
	}
	if !mergeRanges(out.Offsets, ranges) {
		idx := make(map[partitionKey]int, len(out.Offsets))
		for i, po := range out.Offsets {
			idx[partitionKey{po.GetTopic(), po.GetPartition()}] = i
		}
		for _, r := range ranges {
			pk := partitionKey{r.GetTopic(), r.GetPartition()}
			if i, ok := idx[pk]; ok {
				out.Offsets[i].Offset = r.GetUntilOffset()
				continue
			}
			idx[pk] = len(out.Offsets)
			out.Offsets = append(out.Offsets, &sluicev1.PartitionOffset{Topic: r.GetTopic(), Partition: r.GetPartition(), Offset: r.GetUntilOffset()})
		}
	}
	if !slices.IsSortedFunc(out.Offsets, compareOffsets) {
		sortOffsets(out.Offsets)
	}
	return out
}

// mergeRanges sets each range's partition in offs to the range's end, and
// reports whether it could: every range's partition is in offs, and the
// ranges come in offs' order. When it cannot, it may have set some: the
// caller applies all of the ranges again.
func mergeRanges(offs []*sluicev1.PartitionOffset, ranges []*sluicev1.OffsetRange) bool {
	j := 0
	for _, r := range ranges {
		topic, part := r.GetTopic(), r.GetPartition()
		for j < len(offs) && (offs[j].GetTopic() != topic || offs[j].GetPartition() != part) {
			j++
		}
		if j == len(offs) {
			return false
		}
		offs[j].Offset = r.GetUntilOffset()
	}
	return true
}

// compareOffsets orders offsets by topic, then partition.
func compareOffsets(a, b *sluicev1.PartitionOffset) int {
	return cmp.Or(strings.Compare(a.GetTopic(), b.GetTopic()), cmp.Compare(a.GetPartition(), b.GetPartition()))
}

func sortOffsets(offs []*sluicev1.PartitionOffset) { slices.SortFunc(offs, compareOffsets) }

// committedLookup returns a lookup of offs' offsets by partition. Asked
// for partitions in offs' order, as planning asks (the partitions of a
// job's topics, in order, against offsets sorted the same way when its
// topics are), it walks offs; the map is built only at the first
// partition out of that order. At 10,000 partitions that map was one of
// the maps keyed by partition that took a fifth of the coordinator's CPU.
func committedLookup(offs *sluicev1.CommittedOffsets) func(partitionKey) (int64, bool) {
	list := offs.GetOffsets()
	next := 0
	var m map[partitionKey]int64
	return func(pk partitionKey) (int64, bool) {
		if next < len(list) && list[next].GetTopic() == pk.Topic && list[next].GetPartition() == pk.Partition {
			next++
			return list[next-1].GetOffset(), true
		}
		if m == nil {
			m = offsetMap(offs)
		}
		off, ok := m[pk]
		return off, ok
	}
}

// offsetMap indexes committed offsets by partition.
func offsetMap(offs *sluicev1.CommittedOffsets) map[partitionKey]int64 {
	m := make(map[partitionKey]int64, len(offs.GetOffsets()))
	for _, po := range offs.GetOffsets() {
		m[partitionKey{po.GetTopic(), po.GetPartition()}] = po.GetOffset()
	}
	return m
}

// cutDeleted applies the log start offsets Kafka reports now to a planned
// batch about to be re-run (the job was stopped or down past the
// retention): a range whose start was deleted starts at the log start
// instead, or is dropped when all of it was deleted. Each cut yields a
// DataLoss up to the log start itself, not only to the range's end: the
// offsets between the range's end and the log start are gone too, and
// reporting them here keeps the loss one span instead of a second one in
// the next batch. The batch is not modified.
func cutDeleted(b *sluicev1.Batch, earliest map[partitionKey]int64) (kept []*sluicev1.OffsetRange, losses []*sluicev1.DataLoss) {
	for _, rg := range b.GetRanges() {
		e := earliest[partitionKey{rg.GetTopic(), rg.GetPartition()}]
		if rg.GetFromOffset() >= e {
			kept = append(kept, rg)
			continue
		}
		losses = append(losses, &sluicev1.DataLoss{
			Topic: rg.GetTopic(), Partition: rg.GetPartition(), FromOffset: rg.GetFromOffset(), UntilOffset: e,
			Reason: fmt.Sprintf("offsets %d to %d were deleted (log start is now %d) before planned batch %d read them",
				rg.GetFromOffset(), e-1, e, b.GetId()),
		})
		if e < rg.GetUntilOffset() {
			kept = append(kept, &sluicev1.OffsetRange{Topic: rg.GetTopic(), Partition: rg.GetPartition(), FromOffset: e, UntilOffset: rg.GetUntilOffset()})
		}
	}
	return kept, losses
}

// mergeLosses merges the data loss spans of one partition that overlap or
// touch ([500,687) and [687,700) are [500,700)), which is what a user wants
// to read; the merged span's reason joins the distinct reasons. The result
// is sorted by topic and partition. A span that goes backwards (until below
// from: the topic was recreated and reading restarts lower) is kept as it
// is, and within a partition that has one the order of the spans is kept,
// since the last span says where reading resumes. The input is not
// modified.
func mergeLosses(losses []*sluicev1.DataLoss) []*sluicev1.DataLoss {
	if len(losses) == 0 {
		return losses
	}
	byPart := map[partitionKey][]*sluicev1.DataLoss{}
	var order []partitionKey
	for _, l := range losses {
		pk := partitionKey{l.GetTopic(), l.GetPartition()}
		if _, ok := byPart[pk]; !ok {
			order = append(order, pk)
		}
		byPart[pk] = append(byPart[pk], l)
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i].Topic != order[j].Topic {
			return order[i].Topic < order[j].Topic
		}
		return order[i].Partition < order[j].Partition
	})
	forward := func(l *sluicev1.DataLoss) bool { return l.GetFromOffset() <= l.GetUntilOffset() }
	out := make([]*sluicev1.DataLoss, 0, len(losses))
	for _, pk := range order {
		spans := append([]*sluicev1.DataLoss(nil), byPart[pk]...)
		allForward := true
		for _, l := range spans {
			allForward = allForward && forward(l)
		}
		if allForward {
			sort.SliceStable(spans, func(i, j int) bool { return spans[i].GetFromOffset() < spans[j].GetFromOffset() })
		}
		var merged []*sluicev1.DataLoss
		for _, l := range spans {
			if n := len(merged); n > 0 {
				prev := merged[n-1]
				if forward(prev) && forward(l) && l.GetFromOffset() <= prev.GetUntilOffset() && prev.GetFromOffset() <= l.GetUntilOffset() {
					merged[n-1] = &sluicev1.DataLoss{
						Topic: pk.Topic, Partition: pk.Partition,
						FromOffset:  min(prev.GetFromOffset(), l.GetFromOffset()),
						UntilOffset: max(prev.GetUntilOffset(), l.GetUntilOffset()),
						Reason:      joinReasons(prev.GetReason(), l.GetReason()),
					}
					continue
				}
			}
			merged = append(merged, proto.Clone(l).(*sluicev1.DataLoss))
		}
		out = append(out, merged...)
	}
	return out
}

// joinReasons joins two reasons (each possibly already joined), each once.
func joinReasons(a, b string) string {
	if a == "" {
		return b
	}
	have := strings.Split(a, "; ")
	for _, r := range strings.Split(b, "; ") {
		if r != "" && !slices.Contains(have, r) {
			have = append(have, r)
		}
	}
	return strings.Join(have, "; ")
}
