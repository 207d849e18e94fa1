package coordinator

import (
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

var update = flag.Bool("update", false, "update golden files")

// ps builds a partitionState.
func partState(topic string, partition int32, from, latest int64) partitionState {
	return partitionState{partitionKey: partitionKey{topic, partition}, From: from, Latest: latest}
}

// rangeStrings renders ranges as "topic/partition [from, until)" for readable diffs.
func rangeStrings(t *testing.T, rs []*sluicev1.OffsetRange) []string {
	t.Helper()
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s/%d [%d, %d)", r.GetTopic(), r.GetPartition(), r.GetFromOffset(), r.GetUntilOffset()))
	}
	return out
}

func TestPlanRanges(t *testing.T) {
	tests := []struct {
		name  string
		parts []partitionState
		lim   limits
		want  []string
		cap   string // the batch's cap, checked when set
	}{
		{
			name: "no partitions",
			want: []string{},
		},
		{
			name:  "no limits reads the whole lag",
			parts: []partitionState{partState("a", 0, 10, 1010), partState("a", 1, 0, 3)},
			want:  []string{"a/0 [10, 1010)", "a/1 [0, 3)"},
		},
		{
			name:  "empty ranges are dropped",
			parts: []partitionState{partState("a", 0, 5, 5), partState("a", 1, 5, 10), partState("a", 2, 0, 0)},
			lim:   limits{Interval: time.Second, MaxRatePerPartition: 100, MaxRecordsPerBatch: 1000},
			want:  []string{"a/1 [5, 10)"},
		},
		{
			name:  "all partitions caught up",
			parts: []partitionState{partState("a", 0, 7, 7), partState("b", 0, 0, 0)},
			lim:   limits{Interval: time.Second, MaxRecordsPerBatch: 10},
			want:  []string{},
		},
		{
			name:  "rate cap is rate times interval",
			parts: []partitionState{partState("a", 0, 0, 2000), partState("a", 1, 100, 400), partState("a", 2, 0, 500)},
			lim:   limits{Interval: 500 * time.Millisecond, MaxRatePerPartition: 1000},
			want:  []string{"a/0 [0, 500)", "a/1 [100, 400)", "a/2 [0, 500)"},
		},
		{
			name:  "rate cap is at least one record",
			parts: []partitionState{partState("a", 0, 0, 10)},
			lim:   limits{Interval: 100 * time.Millisecond, MaxRatePerPartition: 1},
			want:  []string{"a/0 [0, 1)"},
		},
		{
			name:  "batch limit split by lag",
			parts: []partitionState{partState("a", 0, 0, 600), partState("a", 1, 1000, 1300), partState("a", 2, 0, 100)},
			lim:   limits{Interval: time.Second, MaxRecordsPerBatch: 100},
			want:  []string{"a/0 [0, 60)", "a/1 [1000, 1030)", "a/2 [0, 10)"},
		},
		{
			name:  "batch limit share of at least one is floored",
			parts: []partitionState{partState("a", 0, 0, 5), partState("a", 1, 0, 5), partState("a", 2, 0, 5)},
			lim:   limits{Interval: time.Second, MaxRecordsPerBatch: 10}, // 3.33 each
			want:  []string{"a/0 [0, 3)", "a/1 [0, 3)", "a/2 [0, 3)"},
		},
		{
			name:  "batch limit share below one is ceiled",
			parts: []partitionState{partState("a", 0, 0, 1000), partState("a", 1, 50, 51)},
			lim:   limits{Interval: time.Second, MaxRecordsPerBatch: 100}, // 99.9 and 0.0999
			want:  []string{"a/0 [0, 99)", "a/1 [50, 51)"},
		},
		{
			name:  "batch limit at or above total lag reads everything",
			parts: []partitionState{partState("a", 0, 0, 70), partState("a", 1, 0, 30)},
			lim:   limits{Interval: time.Second, MaxRecordsPerBatch: 100},
			want:  []string{"a/0 [0, 70)", "a/1 [0, 30)"},
		},
		{
			name:  "both caps: rate binds one partition, share the other",
			parts: []partitionState{partState("a", 0, 0, 900), partState("a", 1, 0, 100)},
			// shares 180 and 20; rate cap 80
			lim:  limits{Interval: time.Second, MaxRatePerPartition: 80, MaxRecordsPerBatch: 200},
			want: []string{"a/0 [0, 80)", "a/1 [0, 20)"},
		},
		{
			name:  "both caps: rate binds all",
			parts: []partitionState{partState("a", 0, 0, 1000), partState("a", 1, 0, 200)},
			// shares 500 and 100; rate cap 2/s x 10s = 20
			lim:  limits{Interval: 10 * time.Second, MaxRatePerPartition: 2, MaxRecordsPerBatch: 600},
			want: []string{"a/0 [0, 20)", "a/1 [0, 20)"},
		},
		{
			name: "sorted by topic then partition whatever the input order",
			parts: []partitionState{
				partState("b", 1, 0, 1), partState("a", 10, 0, 1), partState("b", 0, 0, 1), partState("a", 2, 0, 1), partState("a", 0, 0, 1),
			},
			want: []string{"a/0 [0, 1)", "a/2 [0, 1)", "a/10 [0, 1)", "b/0 [0, 1)", "b/1 [0, 1)"},
		},
		{
			name: "batch limit is split across topics",
			parts: []partitionState{
				partState("orders", 0, 0, 300), partState("clicks", 1, 40, 140), partState("clicks", 0, 0, 400), partState("orders", 1, 0, 200),
			},
			lim: limits{Interval: time.Second, MaxRecordsPerBatch: 100}, // total lag 1000
			want: []string{
				"clicks/0 [0, 40)", "clicks/1 [40, 50)", "orders/0 [0, 30)", "orders/1 [0, 20)",
			},
			cap: "STATIC rate=0 max=100 limited",
		},
		{
			name:  "no caps at all",
			parts: []partitionState{partState("a", 0, 0, 10)},
			want:  []string{"a/0 [0, 10)"},
			cap:   "NONE rate=0 max=0",
		},
		{
			name:  "estimate split by lag",
			parts: []partitionState{partState("a", 0, 0, 6000), partState("a", 1, 0, 3000), partState("a", 2, 0, 1000)},
			lim:   limits{Interval: 500 * time.Millisecond, Rate: 1000, RateSource: sluicev1.CapSource_CAP_SOURCE_ESTIMATE},
			want:  []string{"a/0 [0, 300)", "a/1 [0, 150)", "a/2 [0, 50)"},
			cap:   "ESTIMATE rate=1000 max=500 limited",
		},
		{
			name:  "initial rate caps the first batch",
			parts: []partitionState{partState("a", 0, 0, 1_000_000), partState("a", 1, 0, 1_000_000)},
			lim:   limits{Interval: time.Second, Rate: 100_000, RateSource: sluicev1.CapSource_CAP_SOURCE_INITIAL},
			want:  []string{"a/0 [0, 50000)", "a/1 [0, 50000)"},
			cap:   "INITIAL rate=100000 max=100000 limited",
		},
		{
			name:  "estimate above the lag: caught up, not limited",
			parts: []partitionState{partState("a", 0, 0, 10), partState("a", 1, 0, 30)},
			lim:   limits{Interval: time.Second, Rate: 1000, RateSource: sluicev1.CapSource_CAP_SOURCE_ESTIMATE},
			want:  []string{"a/0 [0, 10)", "a/1 [0, 30)"},
			cap:   "ESTIMATE rate=1000 max=1000",
		},
		{
			name:  "static rate below the estimate wins",
			parts: []partitionState{partState("a", 0, 0, 5000), partState("a", 1, 0, 5000)},
			lim:   limits{Interval: time.Second, MaxRatePerPartition: 100, Rate: 1000, RateSource: sluicev1.CapSource_CAP_SOURCE_ESTIMATE},
			want:  []string{"a/0 [0, 100)", "a/1 [0, 100)"},
			cap:   "STATIC rate=0 max=200 limited",
		},
		{
			name:  "estimate share below one record is one",
			parts: []partitionState{partState("a", 0, 0, 100_000), partState("a", 1, 0, 1)},
			lim:   limits{Interval: time.Second, Rate: 100, RateSource: sluicev1.CapSource_CAP_SOURCE_ESTIMATE},
			want:  []string{"a/0 [0, 99)", "a/1 [0, 1)"},
		},
		{
			name:  "min rate per partition raises the estimate",
			parts: []partitionState{partState("a", 0, 0, 9000), partState("a", 1, 0, 1000)},
			// shares 90 and 10; floor 50 records per 1s
			lim:  limits{Interval: time.Second, MinRatePerPartition: 50, Rate: 100, RateSource: sluicev1.CapSource_CAP_SOURCE_ESTIMATE},
			want: []string{"a/0 [0, 90)", "a/1 [0, 50)"},
			cap:  "ESTIMATE rate=100 max=140 limited",
		},
		{
			name:  "min rate floor binds most",
			parts: []partitionState{partState("a", 0, 0, 1000), partState("a", 1, 0, 1000), partState("a", 2, 0, 1000)},
			lim:   limits{Interval: time.Second, MinRatePerPartition: 200, Rate: 30, RateSource: sluicev1.CapSource_CAP_SOURCE_ESTIMATE},
			want:  []string{"a/0 [0, 200)", "a/1 [0, 200)", "a/2 [0, 200)"},
			cap:   "MIN_RATE rate=0 max=600 limited",
		},
		{
			name:  "batch limit beats the min rate floor",
			parts: []partitionState{partState("a", 0, 0, 1000), partState("a", 1, 0, 1000)},
			lim:   limits{Interval: time.Second, MinRatePerPartition: 200, MaxRecordsPerBatch: 100, Rate: 30, RateSource: sluicev1.CapSource_CAP_SOURCE_ESTIMATE},
			want:  []string{"a/0 [0, 50)", "a/1 [0, 50)"},
			cap:   "STATIC rate=0 max=100 limited",
		},
		{
			name:  "min rate without any other cap does nothing",
			parts: []partitionState{partState("a", 0, 0, 1000)},
			lim:   limits{Interval: time.Second, MinRatePerPartition: 10},
			want:  []string{"a/0 [0, 1000)"},
			cap:   "NONE rate=0 max=0",
		},
		{
			name:  "huge estimate saturates",
			parts: []partitionState{partState("a", 0, 0, math.MaxInt64)},
			lim:   limits{Interval: 24 * time.Hour, Rate: 1e18, RateSource: sluicev1.CapSource_CAP_SOURCE_ESTIMATE},
			want:  []string{fmt.Sprintf("a/0 [0, %d)", int64(math.MaxInt64))},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]partitionState(nil), tc.parts...)
			got, bc, err := planRanges(tc.parts, tc.lim)
			if err != nil {
				t.Fatalf("planRanges(%v, %+v) error: %v", tc.parts, tc.lim, err)
			}
			if gs := rangeStrings(t, got); !reflect.DeepEqual(gs, tc.want) {
				t.Errorf("planRanges(%v, %+v) = %q, want %q", tc.parts, tc.lim, gs, tc.want)
			}
			if tc.cap != "" && capString(bc) != tc.cap {
				t.Errorf("planRanges(%v, %+v) cap = %q, want %q", tc.parts, tc.lim, capString(bc), tc.cap)
			}
			if !reflect.DeepEqual(tc.parts, in) {
				t.Errorf("planRanges modified its input: %v, want %v", tc.parts, in)
			}
		})
	}
}

func TestPlanRangesRateCapRounding(t *testing.T) {
	got, _, err := planRanges([]partitionState{partState("a", 0, 0, 1000)}, limits{Interval: 290 * time.Millisecond, MaxRatePerPartition: 100})
	if err != nil {
		t.Fatal(err)
	}
	if gs, want := rangeStrings(t, got), []string{"a/0 [0, 29)"}; !reflect.DeepEqual(gs, want) {
		t.Errorf("planRanges(100/s x 290ms) = %q, want %q", gs, want)
	}
}

func TestPlanRangesLatestBelowFrom(t *testing.T) {
	tests := []struct {
		name     string
		parts    []partitionState
		wantPart string
	}{
		{
			name:     "only partition",
			parts:    []partitionState{partState("orders", 3, 100, 50)},
			wantPart: "orders/3",
		},
		{
			name:     "among healthy partitions",
			parts:    []partitionState{partState("orders", 0, 0, 10), partState("clicks", 7, 500, 499), partState("orders", 1, 0, 10)},
			wantPart: "clicks/7",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := planRanges(tc.parts, limits{Interval: time.Second})
			if err == nil {
				t.Fatalf("planRanges(%v) = %v, want an error", tc.parts, got)
			}
			if !strings.Contains(err.Error(), tc.wantPart) {
				t.Errorf("planRanges(%v) error = %q, want it to name %s", tc.parts, err, tc.wantPart)
			}
			if got != nil {
				t.Errorf("planRanges(%v) = %v with error, want nil ranges", tc.parts, got)
			}
		})
	}
}

// TestPlanRangesGolden plans one batch of 64 partitions over two topics with
// seeded random lags and both caps.
func TestPlanRangesGolden(t *testing.T) {
	rng := rand.New(rand.NewSource(64))
	var parts []partitionState
	for _, topic := range []string{"clicks", "orders"} {
		for p := int32(0); p < 32; p++ {
			from := rng.Int63n(1_000_000)
			var lag int64
			switch r := rng.Intn(10); {
			case r == 0: // caught up
			case r < 4: // small
				lag = 1 + rng.Int63n(50)
			default: // large
				lag = 1 + rng.Int63n(50_000)
			}
			parts = append(parts, partState(topic, p, from, from+lag))
		}
	}
	rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	lim := limits{Interval: 500 * time.Millisecond, MaxRatePerPartition: 2000, MaxRecordsPerBatch: 40_000}

	ranges, _, err := planRanges(parts, lim)
	if err != nil {
		t.Fatalf("planRanges: %v", err)
	}

	// Invariants, independent of the golden file.
	lag := map[partitionKey]int64{}
	for _, p := range parts {
		lag[p.partitionKey] = p.Latest - p.From
	}
	var total int64
	for i, r := range ranges {
		pk := partitionKey{r.GetTopic(), r.GetPartition()}
		n := r.GetUntilOffset() - r.GetFromOffset()
		if n <= 0 || n > 1000 || n > lag[pk] {
			t.Errorf("range %s has %d records, want 1..min(1000, lag %d)", pk, n, lag[pk])
		}
		if i > 0 {
			prev := ranges[i-1]
			if prev.GetTopic() > r.GetTopic() || prev.GetTopic() == r.GetTopic() && prev.GetPartition() >= r.GetPartition() {
				t.Errorf("range %s follows %s/%d: not sorted", pk, prev.GetTopic(), prev.GetPartition())
			}
		}
		total += n
	}
	if total > lim.MaxRecordsPerBatch+int64(len(ranges)) {
		t.Errorf("plan has %d records, want at most %d (+1 per range for ceiled shares)", total, lim.MaxRecordsPerBatch)
	}

	var b strings.Builder
	for _, r := range ranges {
		fmt.Fprintf(&b, "%s/%d [%d, %d) %d\n", r.GetTopic(), r.GetPartition(), r.GetFromOffset(), r.GetUntilOffset(),
			r.GetUntilOffset()-r.GetFromOffset())
	}
	got := b.String()
	golden := filepath.Join("testdata", "plan_64.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("planRanges(64 partitions) =\n%s\nwant (%s)\n%s", got, golden, want)
	}
}

func TestStartingOffsets(t *testing.T) {
	a0, a1, b0 := partitionKey{"a", 0}, partitionKey{"a", 1}, partitionKey{"b", 0}
	earliest := map[partitionKey]int64{a0: 0, a1: 10, b0: 5}
	latest := map[partitionKey]int64{a0: 100, a1: 110, b0: 50}
	position := func(p sluicev1.StartPosition) *sluicev1.StartingOffsets {
		return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: p}}
	}
	explicit := func(others sluicev1.StartPosition, offs ...*sluicev1.PartitionOffset) *sluicev1.StartingOffsets {
		return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{
			Explicit: &sluicev1.ExplicitOffsets{Offsets: offs, Others: others},
		}}
	}
	tests := []struct {
		name string
		so   *sluicev1.StartingOffsets
		want map[partitionKey]int64
	}{
		{
			name: "unset is earliest",
			so:   nil,
			want: earliest,
		},
		{
			name: "earliest",
			so:   position(sluicev1.StartPosition_START_POSITION_EARLIEST),
			want: earliest,
		},
		{
			name: "latest",
			so:   position(sluicev1.StartPosition_START_POSITION_LATEST),
			want: latest,
		},
		{
			name: "explicit, others default earliest",
			so:   explicit(sluicev1.StartPosition_START_POSITION_UNSPECIFIED, &sluicev1.PartitionOffset{Topic: "a", Partition: 1, Offset: 42}),
			want: map[partitionKey]int64{a0: 0, a1: 42, b0: 5},
		},
		{
			name: "explicit, others earliest",
			so:   explicit(sluicev1.StartPosition_START_POSITION_EARLIEST, &sluicev1.PartitionOffset{Topic: "b", Partition: 0, Offset: 7}),
			want: map[partitionKey]int64{a0: 0, a1: 10, b0: 7},
		},
		{
			name: "explicit, others latest",
			so: explicit(sluicev1.StartPosition_START_POSITION_LATEST,
				&sluicev1.PartitionOffset{Topic: "a", Partition: 1, Offset: 42},
				&sluicev1.PartitionOffset{Topic: "a", Partition: 0, Offset: 3}),
			want: map[partitionKey]int64{a0: 3, a1: 42, b0: 50},
		},
		{
			name: "explicit offset of an unknown partition is ignored",
			so:   explicit(sluicev1.StartPosition_START_POSITION_UNSPECIFIED, &sluicev1.PartitionOffset{Topic: "a", Partition: 9, Offset: 42}),
			want: earliest,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := startingOffsets(tc.so, earliest, latest)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("startingOffsets(%v) = %v, want %v", tc.so, got, tc.want)
			}
		})
	}
}

func TestNextBatchTime(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		prev     time.Time
		interval time.Duration
		now      time.Time
		want     time.Time
	}{
		{
			name:     "first batch is now truncated to the interval",
			interval: time.Second,
			now:      t0.Add(1700 * time.Millisecond),
			want:     t0.Add(time.Second),
		},
		{
			name:     "first batch on a tick",
			interval: 500 * time.Millisecond,
			now:      t0.Add(1500 * time.Millisecond),
			want:     t0.Add(1500 * time.Millisecond),
		},
		{
			name:     "on time: the next tick",
			prev:     t0,
			interval: time.Second,
			now:      t0.Add(300 * time.Millisecond),
			want:     t0.Add(time.Second),
		},
		{
			name:     "late by less than an interval: still the next tick",
			prev:     t0,
			interval: time.Second,
			now:      t0.Add(1900 * time.Millisecond),
			want:     t0.Add(time.Second),
		},
		{
			name:     "behind by a full interval: the latest elapsed tick",
			prev:     t0,
			interval: time.Second,
			now:      t0.Add(2 * time.Second),
			want:     t0.Add(2 * time.Second),
		},
		{
			name:     "behind by several intervals: stale ticks are skipped",
			prev:     t0,
			interval: time.Second,
			now:      t0.Add(5200 * time.Millisecond),
			want:     t0.Add(5 * time.Second),
		},
		{
			name:     "clock behind the previous batch: the next tick",
			prev:     t0.Add(time.Second),
			interval: time.Second,
			now:      t0,
			want:     t0.Add(2 * time.Second),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := nextBatchTime(tc.prev, tc.interval, tc.now)
			if !got.Equal(tc.want) {
				t.Errorf("nextBatchTime(%v, %v, %v) = %v, want %v", tc.prev, tc.interval, tc.now, got, tc.want)
			}
		})
	}
}

func TestAdvanceOffsets(t *testing.T) {
	po := func(topic string, partition int32, off int64) *sluicev1.PartitionOffset {
		return &sluicev1.PartitionOffset{Topic: topic, Partition: partition, Offset: off}
	}
	or := func(topic string, partition int32, from, until int64) *sluicev1.OffsetRange {
		return &sluicev1.OffsetRange{Topic: topic, Partition: partition, FromOffset: from, UntilOffset: until}
	}
	tests := []struct {
		name    string
		prev    *sluicev1.CommittedOffsets
		losses  []*sluicev1.DataLoss
		ranges  []*sluicev1.OffsetRange
		batchID int64
		want    *sluicev1.CommittedOffsets
	}{
		{
			name:    "no ranges keeps every offset",
			prev:    &sluicev1.CommittedOffsets{BatchId: 3, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 10), po("b", 0, 5)}},
			batchID: 4,
			want:    &sluicev1.CommittedOffsets{BatchId: 4, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 10), po("b", 0, 5)}},
		},
		{
			name:    "ranges advance to until, others keep their offset",
			prev:    &sluicev1.CommittedOffsets{BatchId: 3, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 10), po("a", 1, 20), po("b", 0, 5)}},
			ranges:  []*sluicev1.OffsetRange{or("a", 1, 20, 30), or("b", 0, 5, 6)},
			batchID: 4,
			want:    &sluicev1.CommittedOffsets{BatchId: 4, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 10), po("a", 1, 30), po("b", 0, 6)}},
		},
		{
			name: "new partitions are added and the result is sorted",
			prev: &sluicev1.CommittedOffsets{BatchId: 7, Offsets: []*sluicev1.PartitionOffset{po("b", 0, 5), po("a", 1, 20)}},
			ranges: []*sluicev1.OffsetRange{
				or("c", 0, 0, 7), or("a", 2, 0, 4), or("a", 1, 20, 25), or("a", 10, 3, 9),
			},
			batchID: 8,
			want: &sluicev1.CommittedOffsets{BatchId: 8, Offsets: []*sluicev1.PartitionOffset{
				po("a", 1, 25), po("a", 2, 4), po("a", 10, 9), po("b", 0, 5), po("c", 0, 7),
			}},
		},
		{
			name: "data loss moves a partition to where reading resumes",
			prev: &sluicev1.CommittedOffsets{BatchId: 2, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 10), po("a", 1, 500), po("b", 0, 5)}},
			losses: []*sluicev1.DataLoss{
				{Topic: "a", Partition: 0, FromOffset: 10, UntilOffset: 40},
				{Topic: "a", Partition: 1, FromOffset: 500, UntilOffset: 0},
			},
			ranges:  []*sluicev1.OffsetRange{or("b", 0, 5, 8)},
			batchID: 3,
			want:    &sluicev1.CommittedOffsets{BatchId: 3, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 40), po("a", 1, 0), po("b", 0, 8)}},
		},
		{
			name:    "a range after data loss wins",
			prev:    &sluicev1.CommittedOffsets{BatchId: 2, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 10)}},
			losses:  []*sluicev1.DataLoss{{Topic: "a", Partition: 0, FromOffset: 10, UntilOffset: 40}},
			ranges:  []*sluicev1.OffsetRange{or("a", 0, 40, 60)},
			batchID: 3,
			want:    &sluicev1.CommittedOffsets{BatchId: 3, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 60)}},
		},
		{
			name:    "ranges in another order than the offsets",
			prev:    &sluicev1.CommittedOffsets{BatchId: 3, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 10), po("a", 1, 20), po("b", 0, 5)}},
			ranges:  []*sluicev1.OffsetRange{or("b", 0, 5, 6), or("a", 0, 10, 11)},
			batchID: 4,
			want:    &sluicev1.CommittedOffsets{BatchId: 4, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 11), po("a", 1, 20), po("b", 0, 6)}},
		},
		{
			name:    "a partition's later range wins, next to it or apart",
			prev:    &sluicev1.CommittedOffsets{BatchId: 3, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 10), po("b", 0, 5)}},
			ranges:  []*sluicev1.OffsetRange{or("a", 0, 10, 12), or("a", 0, 12, 15), or("b", 0, 5, 6), or("a", 0, 15, 17)},
			batchID: 4,
			want:    &sluicev1.CommittedOffsets{BatchId: 4, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 17), po("b", 0, 6)}},
		},
		{
			name:    "ranges in order, then a new partition",
			prev:    &sluicev1.CommittedOffsets{BatchId: 3, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 10), po("b", 0, 5)}},
			ranges:  []*sluicev1.OffsetRange{or("a", 0, 10, 12), or("b", 0, 5, 6), or("a", 5, 0, 3)},
			batchID: 4,
			want:    &sluicev1.CommittedOffsets{BatchId: 4, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 12), po("a", 5, 3), po("b", 0, 6)}},
		},
		{
			name:    "unsorted offsets come out sorted",
			prev:    &sluicev1.CommittedOffsets{BatchId: 3, Offsets: []*sluicev1.PartitionOffset{po("b", 0, 5), po("a", 0, 10)}},
			ranges:  []*sluicev1.OffsetRange{or("b", 0, 5, 6), or("a", 0, 10, 11)},
			batchID: 4,
			want:    &sluicev1.CommittedOffsets{BatchId: 4, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 11), po("b", 0, 6)}},
		},
		{
			name:    "from nothing",
			prev:    nil,
			ranges:  []*sluicev1.OffsetRange{or("b", 0, 0, 2), or("a", 0, 1, 3)},
			batchID: 1,
			want:    &sluicev1.CommittedOffsets{BatchId: 1, Offsets: []*sluicev1.PartitionOffset{po("a", 0, 3), po("b", 0, 2)}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := proto.Clone(tc.prev)
			got := advanceOffsets(tc.prev, tc.losses, tc.ranges, tc.batchID)
			if !proto.Equal(got, tc.want) {
				t.Errorf("advanceOffsets(%v, %v, %v, %d) = %v, want %v", tc.prev, tc.losses, tc.ranges, tc.batchID, got, tc.want)
			}
			if tc.prev != nil && !proto.Equal(tc.prev, before) {
				t.Errorf("advanceOffsets modified prev: %v, want %v", tc.prev, before)
			}
		})
	}
}

// TestPlanRangesOverflow: limits near math.MaxInt64 cap ranges as if they
// were unlimited; they never wrap into negative or empty ranges.
func TestPlanRangesOverflow(t *testing.T) {
	const maxI = math.MaxInt64
	tests := []struct {
		name  string
		parts []partitionState
		lim   limits
		want  []string
	}{
		{
			name:  "huge rate times a long interval",
			parts: []partitionState{partState("a", 0, 0, 1000)},
			lim:   limits{Interval: 24 * time.Hour, MaxRatePerPartition: maxI},
			want:  []string{"a/0 [0, 1000)"},
		},
		{
			name:  "rate times interval just above MaxInt64",
			parts: []partitionState{partState("a", 0, 5, 2000)},
			lim:   limits{Interval: 1001 * time.Millisecond, MaxRatePerPartition: maxI / 1000},
			want:  []string{"a/0 [5, 2000)"},
		},
		{
			name:  "rate times interval near the top stays exact",
			parts: []partitionState{partState("a", 0, 0, maxI)},
			lim:   limits{Interval: 500 * time.Millisecond, MaxRatePerPartition: maxI / 2},
			want:  []string{fmt.Sprintf("a/0 [0, %d)", int64(maxI/2)/2)},
		},
		{
			name:  "huge batch limit with huge lags",
			parts: []partitionState{partState("a", 0, 0, maxI), partState("a", 1, 0, maxI-1), partState("b", 0, 10, 20)},
			lim:   limits{Interval: time.Second, MaxRecordsPerBatch: maxI - 5},
			// Lags add up past MaxInt64 (saturated): the split stays in proportion.
			want: []string{fmt.Sprintf("a/0 [0, %d)", int64(maxI-5)), fmt.Sprintf("a/1 [0, %d)", int64(maxI-6)), "b/0 [10, 19)"},
		},
		{
			// float64 makes a/1's share 3.0; exactly it is 2.99...: 2.
			name:  "batch limit split exactly where float64 would round",
			parts: []partitionState{partState("a", 0, 0, 1<<60), partState("a", 1, 0, 3)},
			lim:   limits{Interval: time.Second, MaxRecordsPerBatch: 1<<60 + 1},
			want:  []string{fmt.Sprintf("a/0 [0, %d)", int64(1<<60)-2), "a/1 [0, 2)"},
		},
		{
			name:  "offsets near MaxInt64",
			parts: []partitionState{partState("a", 0, maxI-10, maxI)},
			lim:   limits{Interval: time.Hour, MaxRatePerPartition: maxI, MaxRecordsPerBatch: maxI},
			want:  []string{fmt.Sprintf("a/0 [%d, %d)", int64(maxI-10), int64(maxI))},
		},
		{
			name:  "huge rate with a batch limit",
			parts: []partitionState{partState("a", 0, 0, 100), partState("a", 1, 0, 300)},
			lim:   limits{Interval: time.Hour, MaxRatePerPartition: maxI, MaxRecordsPerBatch: 200},
			want:  []string{"a/0 [0, 50)", "a/1 [0, 150)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := planRanges(tc.parts, tc.lim)
			if err != nil {
				t.Fatalf("planRanges(%v, %+v) = %v", tc.parts, tc.lim, err)
			}
			if gs := rangeStrings(t, got); !reflect.DeepEqual(gs, tc.want) {
				t.Errorf("planRanges(%v, %+v) = %q, want %q", tc.parts, tc.lim, gs, tc.want)
			}
			for _, r := range got {
				if r.GetUntilOffset() <= r.GetFromOffset() {
					t.Errorf("range %v is empty or negative", r)
				}
			}
		})
	}
}

func TestMulDivSat(t *testing.T) {
	const maxI = math.MaxInt64
	tests := []struct{ a, b, c, want int64 }{
		{100, 290, 1000, 29},
		{maxI, 1000, 1000, maxI},
		{maxI, maxI, 1, maxI},
		{maxI, maxI, maxI, maxI},
		{maxI, 2, 4, maxI / 2},
		{maxI - 1, maxI - 2, maxI, maxI - 3}, // (m-1)(m-2)/m = m-3 + 2/m
		{0, 5, 1, 0},
		{5, 0, 1, 0},
		{-1, 5, 1, 0},
	}
	for _, tc := range tests {
		if got := mulDivSat(tc.a, tc.b, tc.c); got != tc.want {
			t.Errorf("mulDivSat(%d, %d, %d) = %d, want %d", tc.a, tc.b, tc.c, got, tc.want)
		}
	}
}

func lossStrings(ls []*sluicev1.DataLoss) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, fmt.Sprintf("%s/%d [%d, %d) %s", l.GetTopic(), l.GetPartition(), l.GetFromOffset(), l.GetUntilOffset(), l.GetReason()))
	}
	return out
}

func TestMergeLosses(t *testing.T) {
	loss := func(topic string, p int32, from, until int64, reason string) *sluicev1.DataLoss {
		return &sluicev1.DataLoss{Topic: topic, Partition: p, FromOffset: from, UntilOffset: until, Reason: reason}
	}
	tests := []struct {
		name string
		in   []*sluicev1.DataLoss
		want []string
	}{
		{name: "none", in: nil, want: []string{}},
		{
			name: "adjacent spans become one, reasons joined",
			in:   []*sluicev1.DataLoss{loss("replay", 2, 500, 687, "r1"), loss("replay", 2, 687, 700, "r2")},
			want: []string{"replay/2 [500, 700) r1; r2"},
		},
		{
			name: "adjacent in reverse order",
			in:   []*sluicev1.DataLoss{loss("t", 0, 687, 700, "r2"), loss("t", 0, 500, 687, "r1")},
			want: []string{"t/0 [500, 700) r1; r2"},
		},
		{
			name: "overlapping with the same reason",
			in:   []*sluicev1.DataLoss{loss("t", 0, 10, 50, "gone"), loss("t", 0, 40, 60, "gone")},
			want: []string{"t/0 [10, 60) gone"},
		},
		{
			name: "contained",
			in:   []*sluicev1.DataLoss{loss("t", 0, 10, 100, "a"), loss("t", 0, 20, 30, "b")},
			want: []string{"t/0 [10, 100) a; b"},
		},
		{
			name: "a gap keeps two spans",
			in:   []*sluicev1.DataLoss{loss("t", 0, 10, 20, "a"), loss("t", 0, 21, 30, "b")},
			want: []string{"t/0 [10, 20) a", "t/0 [21, 30) b"},
		},
		{
			name: "three spans out of order chain into one",
			in:   []*sluicev1.DataLoss{loss("t", 0, 500, 600, "a"), loss("t", 0, 700, 800, "c"), loss("t", 0, 600, 700, "b")},
			want: []string{"t/0 [500, 800) a; b; c"},
		},
		{
			name: "other partitions and topics are not merged, result sorted",
			in: []*sluicev1.DataLoss{
				loss("t", 1, 687, 700, "x"), loss("s", 0, 0, 5, "y"), loss("t", 0, 500, 687, "z"), loss("t", 1, 600, 687, "w"),
			},
			want: []string{"s/0 [0, 5) y", "t/0 [500, 687) z", "t/1 [600, 700) w; x"},
		},
		{
			name: "a joined reason is not repeated",
			in:   []*sluicev1.DataLoss{loss("t", 0, 0, 10, "a; b"), loss("t", 0, 10, 20, "b")},
			want: []string{"t/0 [0, 20) a; b"},
		},
		{
			name: "a backwards span (topic recreated) is kept with its order",
			in:   []*sluicev1.DataLoss{loss("t", 0, 500, 0, "recreated"), loss("t", 0, 0, 30, "deleted"), loss("t", 0, 30, 40, "more")},
			want: []string{"t/0 [500, 0) recreated", "t/0 [0, 40) deleted; more"},
		},
		{
			name: "an empty span touching another is absorbed",
			in:   []*sluicev1.DataLoss{loss("t", 0, 10, 20, "a"), loss("t", 0, 20, 20, "a")},
			want: []string{"t/0 [10, 20) a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var before []*sluicev1.DataLoss
			for _, l := range tc.in {
				before = append(before, proto.Clone(l).(*sluicev1.DataLoss))
			}
			got := lossStrings(mergeLosses(tc.in))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("mergeLosses(%q) = %q, want %q", lossStrings(tc.in), got, tc.want)
			}
			for i := range tc.in {
				if !proto.Equal(tc.in[i], before[i]) {
					t.Errorf("mergeLosses modified its input: %v, want %v", tc.in[i], before[i])
				}
			}
		})
	}
}

// TestCutDeleted: a planned batch re-run after Kafka deleted part of its
// ranges. The loss reaches the log start even past the range's end, so that
// the offsets move there with this batch and the next plan finds no second
// span: TestDataLossInReplayedBatch once read [500,687) + [687,700) where
// one span [500,700) was lost.
func TestCutDeleted(t *testing.T) {
	or := func(p int32, from, until int64) *sluicev1.OffsetRange {
		return &sluicev1.OffsetRange{Topic: "replay", Partition: p, FromOffset: from, UntilOffset: until}
	}
	tests := []struct {
		name       string
		ranges     []*sluicev1.OffsetRange
		earliest   map[partitionKey]int64
		wantKept   []string
		wantLosses []string
		wantOffs   map[partitionKey]int64 // after the batch commits
	}{
		{
			name:       "nothing deleted",
			ranges:     []*sluicev1.OffsetRange{or(0, 500, 687), or(2, 500, 687)},
			earliest:   map[partitionKey]int64{{"replay", 0}: 0, {"replay", 2}: 500},
			wantKept:   []string{"replay/0 [500, 687)", "replay/2 [500, 687)"},
			wantLosses: []string{},
			wantOffs:   map[partitionKey]int64{{"replay", 0}: 687, {"replay", 2}: 687},
		},
		{
			name:       "deleted past the range's end",
			ranges:     []*sluicev1.OffsetRange{or(0, 500, 687), or(2, 500, 687)},
			earliest:   map[partitionKey]int64{{"replay", 0}: 0, {"replay", 2}: 700},
			wantKept:   []string{"replay/0 [500, 687)"},
			wantLosses: []string{"replay/2 [500, 700) offsets 500 to 699 were deleted (log start is now 700) before planned batch 7 read them"},
			wantOffs:   map[partitionKey]int64{{"replay", 0}: 687, {"replay", 2}: 700},
		},
		{
			name:       "deleted inside the range",
			ranges:     []*sluicev1.OffsetRange{or(2, 500, 687)},
			earliest:   map[partitionKey]int64{{"replay", 2}: 600},
			wantKept:   []string{"replay/2 [600, 687)"},
			wantLosses: []string{"replay/2 [500, 600) offsets 500 to 599 were deleted (log start is now 600) before planned batch 7 read them"},
			wantOffs:   map[partitionKey]int64{{"replay", 2}: 687},
		},
		{
			name:       "deleted exactly to the range's end",
			ranges:     []*sluicev1.OffsetRange{or(2, 500, 687)},
			earliest:   map[partitionKey]int64{{"replay", 2}: 687},
			wantKept:   []string{},
			wantLosses: []string{"replay/2 [500, 687) offsets 500 to 686 were deleted (log start is now 687) before planned batch 7 read them"},
			wantOffs:   map[partitionKey]int64{{"replay", 2}: 687},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &sluicev1.Batch{Job: "j", Id: 7, Ranges: tc.ranges}
			before := proto.Clone(b)
			kept, losses := cutDeleted(b, tc.earliest)
			if got := rangeStrings(t, kept); !reflect.DeepEqual(got, tc.wantKept) {
				t.Errorf("kept = %q, want %q", got, tc.wantKept)
			}
			if got := lossStrings(losses); !reflect.DeepEqual(got, tc.wantLosses) {
				t.Errorf("losses = %q, want %q", got, tc.wantLosses)
			}
			if !proto.Equal(b, before) {
				t.Errorf("cutDeleted modified the batch: %v, want %v", b, before)
			}
			prev := &sluicev1.CommittedOffsets{BatchId: 6}
			for _, rg := range tc.ranges {
				prev.Offsets = append(prev.Offsets, &sluicev1.PartitionOffset{Topic: rg.GetTopic(), Partition: rg.GetPartition(), Offset: rg.GetFromOffset()})
			}
			after := offsetMap(advanceOffsets(prev, losses, kept, 7))
			if !reflect.DeepEqual(after, tc.wantOffs) {
				t.Errorf("offsets after the batch = %v, want %v", after, tc.wantOffs)
			}
			// The next plan finds no further loss.
			var states []partitionState
			for pk, off := range after {
				states = append(states, partitionState{partitionKey: pk, From: off, Earliest: tc.earliest[pk], Latest: 1000})
			}
			if _, more := findDataLoss(states); len(more) != 0 {
				t.Errorf("next plan finds more data loss: %q", lossStrings(more))
			}
		})
	}
}

func capString(bc *sluicev1.BatchCap) string {
	s := fmt.Sprintf("%s rate=%d max=%d", strings.TrimPrefix(bc.GetSource().String(), "CAP_SOURCE_"), bc.GetRate(), bc.GetMaxRecords())
	if bc.GetLimited() {
		s += " limited"
	}
	return s
}

func TestStartsEarly(t *testing.T) {
	window := func(eventTime bool) *sluicev1.JobSpec {
		w := &sluicev1.AggregateWindow{Length: durationpb.New(time.Minute)}
		if eventTime {
			w.EventTime = &sluicev1.EventTime{}
		}
		return &sluicev1.JobSpec{Aggregate: &sluicev1.Aggregate{Window: w}}
	}
	tests := []struct {
		name    string
		limited bool
		spec    *sluicev1.JobSpec
		want    bool
	}{
		{"not behind: the tick", false, &sluicev1.JobSpec{}, false},
		{"behind, defaults: at once", true, &sluicev1.JobSpec{}, true},
		{"behind, batch size cap: at once", true, &sluicev1.JobSpec{Limits: &sluicev1.Limits{MaxRecordsPerBatch: 10}}, true},
		{"behind, running totals: at once", true, &sluicev1.JobSpec{Aggregate: &sluicev1.Aggregate{Running: true}}, true},
		{"behind, event-time windows: at once", true, window(true), true},
		{"behind, rate cap: the tick", true, &sluicev1.JobSpec{Limits: &sluicev1.Limits{MaxRatePerPartition: 10}}, false},
		{"behind, processing-time windows: the tick", true, window(false), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := startsEarly(tt.limited, tt.spec); got != tt.want {
				t.Fatalf("startsEarly(%v) = %v, want %v", tt.limited, got, tt.want)
			}
		})
	}
}

// BenchmarkAdvanceOffsets is one batch's advance of a job's committed
// offsets, as (d) of make bench runs it: 10,000 partitions, in one topic
// and in 100 topics of 100, each with a range.
func BenchmarkAdvanceOffsets(b *testing.B) {
	for _, layout := range []struct{ topics, parts int }{{1, 10_000}, {100, 100}} {
		b.Run(fmt.Sprintf("%dx%d", layout.topics, layout.parts), func(b *testing.B) {
			prev := &sluicev1.CommittedOffsets{BatchId: 1}
			var ranges []*sluicev1.OffsetRange
			for t := range layout.topics {
				topic := fmt.Sprintf("topic-%03d", t)
				for p := range int32(layout.parts) {
					prev.Offsets = append(prev.Offsets, &sluicev1.PartitionOffset{Topic: topic, Partition: p, Offset: 10})
					ranges = append(ranges, &sluicev1.OffsetRange{Topic: topic, Partition: p, FromOffset: 10, UntilOffset: 11})
				}
			}
			sortOffsets(prev.Offsets)
			b.ReportAllocs()
			for b.Loop() {
				advanceOffsets(prev, nil, ranges, 2)
			}
		})
	}
}

func TestCommittedLookup(t *testing.T) {
	offs := &sluicev1.CommittedOffsets{Offsets: []*sluicev1.PartitionOffset{
		{Topic: "a", Partition: 0, Offset: 10}, {Topic: "a", Partition: 1, Offset: 11}, {Topic: "b", Partition: 0, Offset: 20},
	}}
	type ask struct {
		topic string
		part  int32
		want  int64
		ok    bool
	}
	for _, tc := range []struct {
		name string
		asks []ask
	}{
		{"in order", []ask{{"a", 0, 10, true}, {"a", 1, 11, true}, {"b", 0, 20, true}}},
		{"a new partition between", []ask{{"a", 0, 10, true}, {"a", 5, 0, false}, {"a", 1, 11, true}, {"b", 0, 20, true}, {"c", 0, 0, false}}},
		{"out of order", []ask{{"b", 0, 20, true}, {"a", 1, 11, true}, {"a", 0, 10, true}}},
		{"a partition the offsets have and planning skips", []ask{{"a", 0, 10, true}, {"b", 0, 20, true}}},
		{"the same partition twice", []ask{{"a", 0, 10, true}, {"a", 0, 10, true}, {"a", 1, 11, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lookup := committedLookup(offs)
			for _, a := range tc.asks {
				if got, ok := lookup(partitionKey{a.topic, a.part}); got != a.want || ok != a.ok {
					t.Errorf("%s/%d: %d, %v; want %d, %v", a.topic, a.part, got, ok, a.want, a.ok)
				}
			}
		})
	}
	if _, ok := committedLookup(nil)(partitionKey{"a", 0}); ok {
		t.Error("no offsets: found one")
	}
}
