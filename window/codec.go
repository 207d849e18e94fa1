package window

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// The state is stored with every batch commit, so it is stored as columns
// (PackedAggregates): about the key's bytes plus 10 to 34 bytes a key,
// against 40 to 60 as KeyAggregate messages, and a column a job's
// functions never set (all zeros) costs nothing.

// Encode is the state as stored.
func (s State) Encode() *sluicev1.AggregateState {
	out := &sluicev1.AggregateState{BatchId: s.BatchID}
	if s.HasWatermark {
		out.WatermarkUnixMs = &s.Watermark
	}
	if len(s.Totals) > 0 {
		out.Totals = Pack(s.Totals)
	}
	for _, p := range s.Open {
		out.Windows = append(out.Windows, &sluicev1.WindowPane{StartUnixMs: p.Start, EndUnixMs: p.End, Aggregates: Pack(p.Aggregates)})
	}
	return out
}

// Decode is the stored state; nil is the empty state.
func Decode(st *sluicev1.AggregateState) State {
	s := State{BatchID: st.GetBatchId(), Totals: Unpack(st.GetTotals()), Watermark: st.GetWatermarkUnixMs(), HasWatermark: st.WatermarkUnixMs != nil}
	for _, p := range st.GetWindows() {
		s.Open = append(s.Open, Pane{Start: p.GetStartUnixMs(), End: p.GetEndUnixMs(), Aggregates: Unpack(p.GetAggregates())})
	}
	return s
}

// Pack stores aggregates as columns.
func Pack(aggs []*sluicev1.KeyAggregate) *sluicev1.PackedAggregates {
	p := &sluicev1.PackedAggregates{
		Keys:   make([][]byte, len(aggs)),
		Counts: make([]int64, len(aggs)),
	}
	var sums, mins, maxs bool
	for i, ka := range aggs {
		p.Keys[i] = []byte(steps.ExactKey(ka))
		p.Counts[i] = ka.GetCount()
		sums = sums || ka.GetSum() != 0
		mins = mins || ka.GetMin() != 0
		maxs = maxs || ka.GetMax() != 0
	}
	column := func(on bool, get func(*sluicev1.KeyAggregate) float64) []float64 {
		if !on {
			return nil
		}
		c := make([]float64, len(aggs))
		for i, ka := range aggs {
			c[i] = get(ka)
		}
		return c
	}
	p.Sums = column(sums, (*sluicev1.KeyAggregate).GetSum)
	p.Mins = column(mins, (*sluicev1.KeyAggregate).GetMin)
	p.Maxs = column(maxs, (*sluicev1.KeyAggregate).GetMax)
	return p
}

// Unpack is Pack's inverse, sorted by key with avg computed. Columns of
// another length than keys' are read as zeros.
func Unpack(p *sluicev1.PackedAggregates) []*sluicev1.KeyAggregate {
	if len(p.GetKeys()) == 0 {
		return nil
	}
	at := func(c []float64, i int) float64 {
		if len(c) != len(p.GetKeys()) {
			return 0
		}
		return c[i]
	}
	raw := make([]*sluicev1.KeyAggregate, len(p.GetKeys()))
	for i, k := range p.GetKeys() {
		var count int64
		if len(p.GetCounts()) == len(p.GetKeys()) {
			count = p.GetCounts()[i]
		}
		// key_bytes keeps the exact key; Merge writes it back as a result would.
		raw[i] = &sluicev1.KeyAggregate{KeyBytes: k, Count: count, Sum: at(p.GetSums(), i), Min: at(p.GetMins(), i), Max: at(p.GetMaxs(), i)}
		if len(k) == 0 {
			raw[i].KeyBytes = nil
		}
	}
	return steps.Merge(raw)
}

func timestampMs(ms int64) *timestamppb.Timestamp { return timestamppb.New(time.UnixMilli(ms).UTC()) }
