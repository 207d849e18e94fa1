package coordinator

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// placement chooses the worker of each task of a job (spec.placement). It
// is pure: the dispatcher hands it a snapshot of its live workers, and every
// mode respects their free slots.
//
//   - consistent: rendezvous hashing over all workers, so that a partition
//     sticks to one worker and its cached consumer is reused;
//   - fixed: rendezvous hashing over the workers carrying the label that
//     placement.fixed names for the partition (a partition entry beats a
//     topic-wide one); without such a worker the task waits;
//   - brokers: rendezvous hashing over the workers on the host of the
//     partition's leader, or over all workers when none is on that host.
type placement struct {
	mode sluicev1.PlacementMode
	// fixed: the label of each listed partition, and of whole topics.
	partLabels  map[partitionKey]string
	topicLabels map[string]string
	// brokers: the host of each partition's leader; a partition missing
	// here (the lookup failed) is placed as in consistent mode.
	leaders map[partitionKey]string
	// consistent: the worker of each of the batch's tasks under bounded
	// loads (see balance); a task missing here is placed by rendezvous.
	prefer map[placeKey]string
	// processors the job's steps call (sorted): only workers that have all
	// of them run its tasks (processors.go).
	processors []string
}

// newPlacement compiles a job's placement; leaders is for brokers mode.
// A nil *placement places as consistent mode does.
func newPlacement(pl *sluicev1.Placement, leaders map[partitionKey]string) *placement {
	p := &placement{mode: pl.GetMode(), leaders: leaders}
	if p.mode != sluicev1.PlacementMode_PLACEMENT_MODE_FIXED {
		return p
	}
	p.partLabels, p.topicLabels = map[partitionKey]string{}, map[string]string{}
	for _, f := range pl.GetFixed() {
		if len(f.GetPartitions()) == 0 {
			p.topicLabels[f.GetTopic()] = f.GetWorkerLabel()
		}
		for _, part := range f.GetPartitions() {
			p.partLabels[partitionKey{f.GetTopic(), part}] = f.GetWorkerLabel()
		}
	}
	return p
}

// placeKey is what places a task: its partition, and which piece of the
// partition's range it is when the range was split into several tasks.
type placeKey struct {
	partitionKey
	piece int32
}

// placeKeyOf is the task's placeKey. A task that carries the ranges of
// several partitions is placed by its first.
func placeKeyOf(task *sluicev1.Task) placeKey {
	r := task.GetRange()
	if r == nil && len(task.GetRanges()) > 0 {
		r = task.GetRanges()[0]
	}
	return placeKey{partitionKey{r.GetTopic(), r.GetPartition()}, task.GetPiece()}
}

// workerInfo is what placement knows of a live worker.
type workerInfo struct {
	id     string
	slots  int
	free   int // slots not taken by a dispatch of this coordinator
	labels []string
	host   string
	// processors the worker registered, sorted (processors.go).
	processors []string
}

func (w *workerInfo) hasLabel(l string) bool {
	for _, x := range w.labels {
		if x == l {
			return true
		}
	}
	return false
}

// placementWait is why a task can run on no live worker whatever their
// slots; it waits, and the job's message says why.
type placementWait struct{ reason string }

func (e *placementWait) Error() string { return e.reason }

// chooseAmong is choose among workers that have the job's processors: the
// index in ws of the worker to run a task of pk, or:
// errNoWorkers without a live worker; *placementWait when the placement
// allows none of them; errNoSlot when the worker the task should wait for
// (or, with spill, every allowed worker) has no free slot. Without spill
// the task goes to its preferred worker or waits for it; with spill any
// allowed worker with a free slot will do, the preferred group first.
// Workers in avoid are passed over while others qualify; exclude (a
// speculative copy's original worker) never runs it.
func (p *placement) chooseAmong(k placeKey, ws []workerInfo, avoid map[string]bool, exclude string, spill bool) (int, error) {
	if len(ws) == 0 {
		return -1, errNoWorkers
	}
	pk := k.partitionKey
	// tier[i]: 0 preferred, 1 allowed as a fallback, -1 not allowed.
	tier := make([]int8, len(ws))
	fallback := false
	switch {
	case p == nil:
	case p.mode == sluicev1.PlacementMode_PLACEMENT_MODE_FIXED:
		label, ok := p.partLabels[pk]
		if !ok {
			label, ok = p.topicLabels[pk.Topic]
		}
		if !ok {
			return -1, &placementWait{fmt.Sprintf("no placement.fixed entry covers %s", pk)}
		}
		carried := false
		for i := range ws {
			if ws[i].hasLabel(label) {
				carried = true
			} else {
				tier[i] = -1
			}
		}
		if !carried {
			return -1, &placementWait{fmt.Sprintf("no live worker has label %q (placement.fixed for %s)", label, pk)}
		}
	case p.mode == sluicev1.PlacementMode_PLACEMENT_MODE_BROKERS:
		host := p.leaders[pk]
		local := false
		for i := range ws {
			if host != "" && strings.EqualFold(ws[i].host, host) && ws[i].id != exclude {
				local = true
			} else {
				tier[i] = 1
			}
		}
		if !local {
			clear(tier)
		}
		fallback = local
	case len(p.prefer) > 0:
		id, ok := p.prefer[k]
		found := false
		for i := range ws {
			if ok && ws[i].id == id && id != exclude {
				found = true
			} else {
				tier[i] = 1
			}
		}
		if !found {
			clear(tier)
		}
		fallback = found
	}
	for i := range ws {
		if ws[i].id == exclude {
			tier[i] = -1
		}
	}
	if !spill {
		best := p.best(k, ws, tier, avoid, 0, false)
		if best < 0 || ws[best].free <= 0 {
			return -1, errNoSlot
		}
		return best, nil
	}
	if best := p.best(k, ws, tier, avoid, 0, true); best >= 0 {
		return best, nil
	}
	if fallback {
		if best := p.best(k, ws, tier, avoid, 1, true); best >= 0 {
			return best, nil
		}
	}
	return -1, errNoSlot
}

// best is the highest-scoring worker of tier at most maxTier (and with a
// free slot if needsFree), preferring those not in avoid; -1 if none.
func (p *placement) best(k placeKey, ws []workerInfo, tier []int8, avoid map[string]bool, maxTier int8, needsFree bool) int {
	best, bestAvoided := -1, false
	var bestScore uint64
	for i := range ws {
		if tier[i] < 0 || tier[i] > maxTier || (needsFree && ws[i].free <= 0) {
			continue
		}
		score := rendezvous(k, ws[i].id)
		avoided := avoid[ws[i].id]
		if best < 0 || (bestAvoided && !avoided) || (bestAvoided == avoided && score > bestScore) {
			best, bestScore, bestAvoided = i, score, avoided
		}
	}
	return best
}

// balance gives each task of a batch (by its placeKey, in task order) its
// worker under consistent placement with bounded loads: each task takes
// the highest-scoring worker for its key that still has room, a worker's
// room being its share of the batch's tasks by slots, rounded up. While a
// batch's tasks stay the same, each keeps its worker batch after batch (and
// its consumers and prefetch), and no worker gets more than its share:
// rendezvous alone put 5 of 8 partitions on one of two equal workers, whose
// fifth task then waited for a slot while the other worker had one free.
func balance(keys []placeKey, ws []liveWorker) map[placeKey]string {
	total := totalSlots(ws)
	if len(ws) == 0 || total == 0 {
		return nil
	}
	room := make([]int, len(ws))
	for i, w := range ws {
		room[i] = (len(keys)*w.slots + total - 1) / total
	}
	out := make(map[placeKey]string, len(keys))
	order := make([]int, len(ws))
	scores := make([]uint64, len(ws))
	for _, k := range keys {
		for i, w := range ws {
			order[i], scores[i] = i, rendezvous(k, w.id)
		}
		sort.Slice(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
		for _, i := range order {
			if room[i] > 0 {
				room[i]--
				out[k] = ws[i].id
				break
			}
		}
	}
	return out
}

// rendezvous is the score of worker id for k: each partition goes to its
// highest-scoring worker, and only the partitions of a worker that joins or
// leaves move. The pieces of a split range spread over the workers; the
// first keeps the partition's worker and its consumer.
func rendezvous(k placeKey, id string) uint64 {
	// The bytes of "%s\x00%d\x00%s", or "%s\x00%d\x00%d\x00%s" for a later
	// piece, without fmt: packing scores every partition of a batch.
	var buf [128]byte
	b := append(buf[:0], k.Topic...)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(k.Partition), 10)
	b = append(b, 0)
	if k.piece != 0 {
		b = strconv.AppendInt(b, int64(k.piece), 10)
		b = append(b, 0)
	}
	b = append(b, id...)
	h := fnv.New64a()
	_, _ = h.Write(b)
	return mix64(h.Sum64())
}

// mix64 is MurmurHash3's 64-bit finalizer. FNV alone leaves the high bits
// of ids that differ in their last bytes ("w1", "w2", ...) correlated, and
// rendezvous compares whole scores: 1,024 partitions on 4 workers went
// 255/130/128/511.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
