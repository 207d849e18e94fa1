package coordinator

import (
	"fmt"
	"reflect"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func rng(topic string, p int32, from, until int64) *sluicev1.OffsetRange {
	return &sluicev1.OffsetRange{Topic: topic, Partition: p, FromOffset: from, UntilOffset: until}
}

func pieceStrings(trs []taskRange) []string {
	out := []string{}
	for _, tr := range trs {
		out = append(out, fmt.Sprintf("%s/%d#%d [%d, %d)", tr.GetTopic(), tr.GetPartition(), tr.piece, tr.GetFromOffset(), tr.GetUntilOffset()))
	}
	return out
}

func TestSplitRanges(t *testing.T) {
	tests := []struct {
		name       string
		ranges     []*sluicev1.OffsetRange
		maxPerTask int64
		slots      int
		splittable bool
		want       []string
	}{
		{
			name:       "below the limit stays whole",
			ranges:     []*sluicev1.OffsetRange{rng("a", 0, 0, 100), rng("a", 1, 50, 60)},
			maxPerTask: 100, slots: 4, splittable: true,
			want: []string{"a/0#0 [0, 100)", "a/1#0 [50, 60)"},
		},
		{
			name:       "above the limit: equal pieces in offset order",
			ranges:     []*sluicev1.OffsetRange{rng("a", 0, 1000, 1250), rng("a", 1, 0, 10)},
			maxPerTask: 100, slots: 4, splittable: true,
			want: []string{"a/0#0 [1000, 1084)", "a/0#1 [1084, 1167)", "a/0#2 [1167, 1250)", "a/1#0 [0, 10)"},
		},
		{
			name:       "not splittable: transactional sink",
			ranges:     []*sluicev1.OffsetRange{rng("a", 0, 0, 1_000_000)},
			maxPerTask: 100, slots: 4, splittable: false,
			want: []string{"a/0#0 [0, 1000000)"},
		},
		{
			name:   "auto: a hot partition uses the free slots",
			ranges: []*sluicev1.OffsetRange{rng("a", 0, 0, 800_000), rng("a", 1, 0, 1000), rng("a", 2, 0, 1000)},
			slots:  4, splittable: true,
			// 802,000 records over 4 slots: 200,500 each
			want: []string{"a/0#0 [0, 200000)", "a/0#1 [200000, 400000)", "a/0#2 [400000, 600000)", "a/0#3 [600000, 800000)", "a/1#0 [0, 1000)", "a/2#0 [0, 1000)"},
		},
		{
			name:   "auto: even partitions stay whole",
			ranges: []*sluicev1.OffsetRange{rng("a", 0, 0, 500_000), rng("a", 1, 0, 500_000)},
			slots:  2, splittable: true,
			want: []string{"a/0#0 [0, 500000)", "a/1#0 [0, 500000)"},
		},
		{
			name:   "auto: small batches are not split",
			ranges: []*sluicev1.OffsetRange{rng("a", 0, 0, 90_000)},
			slots:  8, splittable: true,
			want: []string{"a/0#0 [0, 90000)"},
		},
		{
			name:   "auto without workers counts one slot",
			ranges: []*sluicev1.OffsetRange{rng("a", 0, 0, 300_000)},
			slots:  0, splittable: true,
			want: []string{"a/0#0 [0, 300000)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pieceStrings(splitRanges(tc.ranges, tc.maxPerTask, tc.slots, tc.splittable))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("splitRanges = %q, want %q", got, tc.want)
			}
		})
	}
}

// Pieces tile every range exactly, whatever the sizes, and never exceed
// the piece bound.
func TestSplitRangesTile(t *testing.T) {
	for _, n := range []int64{1, 2, 99, 100, 101, 1000, 123_457, 10_000_000} {
		for _, maxPerTask := range []int64{1, 3, 100, 1000, 1 << 40} {
			r := rng("t", 3, 77, 77+n)
			got := splitRanges([]*sluicev1.OffsetRange{r}, maxPerTask, 8, true)
			if len(got) > maxPiecesPerRange {
				t.Fatalf("n=%d max=%d: %d pieces", n, maxPerTask, len(got))
			}
			next := r.GetFromOffset()
			for i, p := range got {
				if p.GetFromOffset() != next || p.GetUntilOffset() <= p.GetFromOffset() || p.piece != int32(i) {
					t.Fatalf("n=%d max=%d: piece %d is %v#%d, want it to start at %d", n, maxPerTask, i, p.OffsetRange, p.piece, next)
				}
				if len(got) < maxPiecesPerRange && p.GetUntilOffset()-p.GetFromOffset() > maxPerTask {
					t.Fatalf("n=%d max=%d: piece %d has %d records", n, maxPerTask, i, p.GetUntilOffset()-p.GetFromOffset())
				}
				next = p.GetUntilOffset()
			}
			if next != r.GetUntilOffset() {
				t.Fatalf("n=%d max=%d: pieces end at %d, want %d", n, maxPerTask, next, r.GetUntilOffset())
			}
		}
	}
}

func TestPackRanges(t *testing.T) {
	whole := func(rs ...*sluicev1.OffsetRange) []taskRange {
		out := make([]taskRange, len(rs))
		for i, r := range rs {
			out[i] = taskRange{OffsetRange: r}
		}
		return out
	}
	many := func(n int, records int64) []*sluicev1.OffsetRange {
		out := make([]*sluicev1.OffsetRange, n)
		for i := range out {
			out[i] = rng("t", int32(i), 100, 100+records)
		}
		return out
	}
	workers := func(n, slots int) []liveWorker {
		ws := make([]liveWorker, n)
		for i := range ws {
			ws[i] = liveWorker{id: fmt.Sprintf("w%d", i+1), slots: slots}
		}
		return ws
	}
	tests := []struct {
		name      string
		in        []taskRange
		workers   []liveWorker
		packable  bool
		wantTasks int
		wantMax   int // ranges in the biggest task; 0: not checked (hashing decides)
	}{
		{"no more ranges than slots", whole(many(8, 1)...), workers(2, 4), true, 8, 1},
		{"1,024 partitions of one record on 4 workers: a task each", whole(many(1024, 1)...), workers(4, 4), true, 4, 0},
		{"1,024 partitions of 1,000 records on 4x4 slots: a task a slot", whole(many(1024, 1000)...), workers(4, 4), true, 16, 0},
		{"1,024 partitions of 100 records on 1 worker: 8,000 records a task", whole(many(1024, 100)...), workers(1, 16), true, 13, 79},
		{"10,000 partitions on 1 worker of 2 slots: tasks of at most 2,048", whole(many(10_000, 1)...), workers(1, 2), true, 5, 2000},
		{"not packable: transactional sink", whole(many(1024, 1)...), workers(4, 4), false, 1024, 1},
		{"big ranges stay alone", whole(append(many(4, 1), rng("big", 0, 0, 50_000), rng("big", 1, 0, 50_000))...), workers(1, 2), true, 3, 4},
		{"no workers counts one slot", whole(many(5, 3)...), nil, true, 1, 5},
		{"pieces of a split range are never packed", append(splitRanges([]*sluicev1.OffsetRange{rng("hot", 0, 0, 12_000)}, 4_000, 1, true),
			whole(rng("cold", 0, 0, 100), rng("cold", 1, 0, 100))...), workers(1, 1), true, 4, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := packRanges(tc.in, tc.workers, tc.packable)
			if len(got) != tc.wantTasks {
				t.Fatalf("%d tasks, want %d", len(got), tc.wantTasks)
			}
			// A packed task's ranges all hash to one worker, which gets at
			// most a task per slot.
			perWorker, rangesOf := map[int]int{}, map[int]int{}
			for _, tr := range got {
				if len(tr.ranges) == 0 {
					continue
				}
				o := owner(tr.ranges[0], tc.workers)
				perWorker[o]++
				rangesOf[o] += len(tr.ranges)
				for _, r := range tr.ranges {
					if owner(r, tc.workers) != o {
						t.Fatalf("a packed task holds %v (worker %d) and %v (worker %d)", r, owner(r, tc.workers), tr.ranges[0], o)
					}
				}
			}
			for o, n := range perWorker {
				if o >= 0 && n > max(tc.workers[o].slots, (rangesOf[o]+maxRangesPerTask-1)/maxRangesPerTask) {
					t.Fatalf("worker %s gets %d packed tasks of %d ranges for %d slots", tc.workers[o].id, n, rangesOf[o], tc.workers[o].slots)
				}
			}
			seen := map[string]int{}
			biggest := 0
			for _, tr := range got {
				rs := tr.ranges
				if tr.OffsetRange != nil {
					if len(tr.ranges) > 0 {
						t.Fatalf("task with both a range and ranges")
					}
					rs = []*sluicev1.OffsetRange{tr.OffsetRange}
				}
				biggest = max(biggest, len(rs))
				for i, r := range rs {
					seen[fmt.Sprintf("%s/%d [%d, %d)", r.GetTopic(), r.GetPartition(), r.GetFromOffset(), r.GetUntilOffset())]++
					if i > 0 && r.GetTopic() == rs[i-1].GetTopic() && r.GetPartition() <= rs[i-1].GetPartition() {
						t.Fatalf("packed ranges out of order: %v after %v", r, rs[i-1])
					}
				}
			}
			if tc.wantMax > 0 && biggest != tc.wantMax {
				t.Errorf("biggest task has %d ranges, want %d", biggest, tc.wantMax)
			}
			if len(seen) != len(tc.in) {
				t.Fatalf("%d distinct ranges in the tasks, want %d", len(seen), len(tc.in))
			}
			for r, n := range seen {
				if n != 1 {
					t.Fatalf("range %s in %d tasks", r, n)
				}
			}
		})
	}
}
