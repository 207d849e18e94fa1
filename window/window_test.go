package window

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestAssign(t *testing.T) {
	tests := []struct {
		name          string
		length, slide time.Duration
		at            int64
		want          [][2]int64
	}{
		{"tumbling start", 3 * time.Second, 3 * time.Second, 3000, [][2]int64{{3000, 6000}}},
		{"tumbling inside", 3 * time.Second, 3 * time.Second, 5999, [][2]int64{{3000, 6000}}},
		{"sliding in two", 4 * time.Second, 2 * time.Second, 5000, [][2]int64{{2000, 6000}, {4000, 8000}}},
		{"sliding on a start", 4 * time.Second, 2 * time.Second, 4000, [][2]int64{{2000, 6000}, {4000, 8000}}},
		{"sliding in three", 3 * time.Second, time.Second, 2500, [][2]int64{{0, 3000}, {1000, 4000}, {2000, 5000}}},
		{"length not a multiple of slide", 5 * time.Second, 2 * time.Second, 4500, [][2]int64{{0, 5000}, {2000, 7000}, {4000, 9000}}},
		{"before the epoch", 2 * time.Second, 2 * time.Second, -1, [][2]int64{{-2000, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Windows{Length: tt.length, Slide: tt.slide}.Assign(tt.at)
			if len(got) != len(tt.want) {
				t.Fatalf("Assign(%d) = %v, want %v", tt.at, got, tt.want)
			}
			for i, p := range got {
				if p.Start != tt.want[i][0] || p.End != tt.want[i][1] {
					t.Fatalf("Assign(%d) = %v, want %v", tt.at, got, tt.want)
				}
			}
		})
	}
}

func agg(key string, count int64, sum float64) *sluicev1.KeyAggregate {
	return &sluicev1.KeyAggregate{Key: key, Count: count, Sum: sum, Min: sum, Max: sum}
}

// render is a state or windows as "key=count/sum" lists, for comparison.
func render(aggs []*sluicev1.KeyAggregate) string {
	var b strings.Builder
	for _, a := range aggs {
		b.WriteString(a.GetKey())
		b.WriteString("=")
		b.WriteString(fmt.Sprintf("%d/%g", a.GetCount(), a.GetSum()))
		b.WriteString(";")
	}
	return b.String()
}

func TestFoldRunning(t *testing.T) {
	s := State{}
	batches := [][]*sluicev1.KeyAggregate{
		{agg("a", 2, 3), agg("b", 1, 1)},
		{},
		{agg("a", 1, 10), agg("c", 4, 4)},
	}
	for i, aggs := range batches {
		var err error
		s, _, err = s.Fold(Batch{ID: int64(i + 1), Time: time.UnixMilli(int64(i) * 1000), Interval: time.Second, Aggregates: aggs}, Config{Running: true})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, want := render(s.Totals), render([]*sluicev1.KeyAggregate{agg("a", 3, 13), agg("b", 1, 1), agg("c", 4, 4)}); got != want {
		t.Fatalf("totals = %s, want %s", got, want)
	}
	if s.BatchID != 3 || s.Keys() != 3 {
		t.Fatalf("batch id %d, keys %d; want 3, 3", s.BatchID, s.Keys())
	}
	if s.Totals[0].GetAvg() != 13.0/3 {
		t.Fatalf("avg of a = %v, want 13/3", s.Totals[0].GetAvg())
	}
	if _, _, err := s.Fold(Batch{ID: 3}, Config{Running: true}); err == nil || !strings.Contains(err.Error(), "batch 3 is already in the state") {
		t.Fatalf("folding batch 3 again: err = %v, want it refused", err)
	}
}

func TestFoldWindows(t *testing.T) {
	type step struct {
		at      int64 // batch time, ms
		aggs    []*sluicev1.KeyAggregate
		emitted []string // "start-end:rendered"
		open    int
	}
	tests := []struct {
		name  string
		w     Windows
		steps []step
	}{
		{
			name: "tumbling 3 batches",
			w:    Windows{Length: 3 * time.Second, Slide: 3 * time.Second},
			steps: []step{
				{at: 0, aggs: []*sluicev1.KeyAggregate{agg("a", 1, 1)}, open: 1},
				{at: 1000, aggs: []*sluicev1.KeyAggregate{agg("a", 1, 2)}, open: 1},
				{at: 2000, aggs: []*sluicev1.KeyAggregate{agg("b", 1, 5)}, emitted: []string{"0-3000:" + render([]*sluicev1.KeyAggregate{agg("a", 2, 3), agg("b", 1, 5)})}},
				{at: 3000, aggs: []*sluicev1.KeyAggregate{agg("a", 7, 7)}, open: 1},
			},
		},
		{
			name: "a batch after a gap emits the window it skipped past",
			w:    Windows{Length: 2 * time.Second, Slide: 2 * time.Second},
			steps: []step{
				{at: 0, aggs: []*sluicev1.KeyAggregate{agg("a", 1, 1)}, open: 1},
				{at: 4000, aggs: []*sluicev1.KeyAggregate{agg("a", 1, 1)}, emitted: []string{"0-2000:" + render([]*sluicev1.KeyAggregate{agg("a", 1, 1)})}, open: 1},
			},
		},
		{
			name: "sliding 2 of 1",
			w:    Windows{Length: 2 * time.Second, Slide: time.Second},
			steps: []step{
				{at: 0, aggs: []*sluicev1.KeyAggregate{agg("a", 1, 1)}, emitted: []string{"-1000-1000:" + render([]*sluicev1.KeyAggregate{agg("a", 1, 1)})}, open: 1},
				{at: 1000, aggs: []*sluicev1.KeyAggregate{agg("a", 2, 2)}, emitted: []string{"0-2000:" + render([]*sluicev1.KeyAggregate{agg("a", 3, 3)})}, open: 1},
				{at: 2000, aggs: nil, emitted: []string{"1000-3000:" + render([]*sluicev1.KeyAggregate{agg("a", 2, 2)})}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := State{}
			for i, st := range tt.steps {
				next, emitted, err := s.Fold(Batch{ID: int64(i + 1), Time: time.UnixMilli(st.at), Interval: time.Second, Aggregates: st.aggs}, Config{Windowed: true, Windows: tt.w})
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, p := range emitted {
					got = append(got, strings.Join([]string{itoa(p.Start), "-", itoa(p.End), ":", render(p.Aggregates)}, ""))
				}
				if strings.Join(got, "|") != strings.Join(st.emitted, "|") {
					t.Fatalf("batch at %d emitted %v, want %v", st.at, got, st.emitted)
				}
				if len(next.Open) != st.open {
					t.Fatalf("batch at %d left %d windows open, want %d", st.at, len(next.Open), st.open)
				}
				// Folding the same batch into the old state again (a replay)
				// gives the same windows: the old state is not modified.
				again, emittedAgain, _ := s.Fold(Batch{ID: int64(i + 1), Time: time.UnixMilli(st.at), Interval: time.Second, Aggregates: st.aggs}, Config{Windowed: true, Windows: tt.w})
				if !proto.Equal(again.Encode(), next.Encode()) || len(emittedAgain) != len(emitted) {
					t.Fatalf("replaying the batch at %d gave another state", st.at)
				}
				s = next
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestCodecRoundTrip(t *testing.T) {
	s := State{
		BatchID: 9,
		Totals:  []*sluicev1.KeyAggregate{{Key: "a", Count: 3, Sum: 1.5, Min: -1, Max: 2, Avg: 0.5}, {Key: "\\xff", KeyBytes: []byte{0xff}, Count: 1}},
		Open:    []Pane{{Start: 1000, End: 3000, Aggregates: []*sluicev1.KeyAggregate{{Key: "k", Count: 2, Avg: 0}}}},
	}
	enc := s.Encode()
	if len(enc.GetTotals().GetSums()) != 2 || len(enc.GetWindows()[0].GetAggregates().GetSums()) != 0 {
		t.Fatalf("columns: totals sums %v, window sums %v; want the window's all-zero sums omitted", enc.GetTotals().GetSums(), enc.GetWindows()[0].GetAggregates().GetSums())
	}
	raw, err := proto.Marshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	var back sluicev1.AggregateState
	if err := proto.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	got := Decode(&back)
	if got.BatchID != 9 || len(got.Totals) != 2 || len(got.Open) != 1 {
		t.Fatalf("decoded %+v", got)
	}
	// Sorted by exact key: "a" (0x61) before 0xff.
	if got.Totals[0].GetKey() != "a" || got.Totals[0].GetAvg() != 0.5 || got.Totals[0].GetMin() != -1 {
		t.Fatalf("totals[0] = %v", got.Totals[0])
	}
	if string(got.Totals[1].GetKeyBytes()) != "\xff" {
		t.Fatalf("totals[1] = %v, want key_bytes ff kept", got.Totals[1])
	}
	if !proto.Equal(got.Encode(), enc) {
		t.Fatalf("re-encoded state differs")
	}
}

func win(start, end int64, aggs ...*sluicev1.KeyAggregate) *sluicev1.WindowResult {
	return Pane{Start: start, End: end, Aggregates: aggs}.Result()
}

func TestFoldEventTime(t *testing.T) {
	c := Config{Windowed: true, EventTime: true, Windows: Windows{Length: 10 * time.Second, Slide: 10 * time.Second}, Delay: 2 * time.Second}
	type step struct {
		windows  []*sluicev1.WindowResult
		maxEvent int64
		saw      bool
		emitted  string // "start:rendered|..."
		wm       int64
		open     int
	}
	steps := []step{
		// Two tasks' parts of window 0 merge; the watermark is 9000-2000.
		{windows: []*sluicev1.WindowResult{win(0, 10000, agg("a", 1, 1)), win(0, 10000, agg("a", 2, 2), agg("b", 1, 1))}, maxEvent: 9000, saw: true, wm: 7000, open: 1},
		// An empty batch changes nothing.
		{wm: 7000, open: 1},
		// Event time 12500: the watermark reaches 10500, past window 0's end.
		{windows: []*sluicev1.WindowResult{win(10000, 20000, agg("c", 1, 1))}, maxEvent: 12500, saw: true, wm: 10500, open: 1,
			emitted: "0:" + render([]*sluicev1.KeyAggregate{agg("a", 3, 3), agg("b", 1, 1)})},
		// An older max event time never moves the watermark back; a part of
		// the emitted window (which workers would not send) is ignored.
		{windows: []*sluicev1.WindowResult{win(0, 10000, agg("a", 5, 5)), win(10000, 20000, agg("c", 1, 1))}, maxEvent: 11000, saw: true, wm: 10500, open: 1},
		{windows: []*sluicev1.WindowResult{win(20000, 30000, agg("d", 1, 1))}, maxEvent: 40000, saw: true, wm: 38000, open: 0,
			emitted: "10000:" + render([]*sluicev1.KeyAggregate{agg("c", 2, 2)}) + "|20000:" + render([]*sluicev1.KeyAggregate{agg("d", 1, 1)})},
	}
	s := State{}
	for i, st := range steps {
		b := Batch{ID: int64(i + 1), Windows: st.windows, MaxEventTime: st.maxEvent, SawEvents: st.saw}
		next, emitted, err := s.Fold(b, c)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range emitted {
			got = append(got, itoa(p.Start)+":"+render(p.Aggregates))
		}
		if strings.Join(got, "|") != st.emitted {
			t.Fatalf("batch %d emitted %v, want %s", i+1, got, st.emitted)
		}
		if !next.HasWatermark || next.Watermark != st.wm || len(next.Open) != st.open {
			t.Fatalf("batch %d: watermark %d (%v), %d open; want %d, %d", i+1, next.Watermark, next.HasWatermark, len(next.Open), st.wm, st.open)
		}
		again, _, _ := s.Fold(b, c)
		if !proto.Equal(again.Encode(), next.Encode()) {
			t.Fatalf("replaying batch %d gave another state", i+1)
		}
		back := Decode(next.Encode())
		if back.Watermark != next.Watermark || back.HasWatermark != next.HasWatermark {
			t.Fatalf("the watermark did not survive encoding")
		}
		s = next
	}
}
