package steps

import (
	"fmt"
	"slices"
	"strings"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// RecordError is a record that an expression could not evaluate.
type RecordError struct {
	Topic     string
	Partition int32
	Offset    int64
	// Field is the expression's field in the spec, e.g. "steps[0].filter".
	Field string
	Err   error
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("record %s/%d offset %d: %s: %v", e.Topic, e.Partition, e.Offset, e.Field, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// Result is what a Runner made of its records.
type Result struct {
	// In counts the records given to Process, Out those that left the steps
	// (aggregated or collected), Failed those an expression could not evaluate.
	In, Out, Failed int64
	// Aggregates per key, sorted by key, avg filled; only when the program
	// aggregates.
	Aggregates []*sluicev1.KeyAggregate
	// Records that left the steps, in the order processed; only when the
	// program does not aggregate.
	Records []*sluicev1.OutputRecord
	// FirstError describes the first record that failed, "" if none did.
	FirstError string
}

// Runner applies a Program to the records of one task. It is not safe for
// concurrent use.
type Runner struct {
	p   *Program
	act activation

	in, out, failed int64
	firstErr        string

	aggs    map[string]*sluicev1.KeyAggregate
	records []*sluicev1.OutputRecord
	bytes   int64

	// Map results are written into the buffer of each pair that the current
	// key or value does not use, since a result may alias the current one.
	keyBufs, valueBufs [2][]byte
	keyCur, valueCur   int
	aggKeyBuf          []byte
}

// NewRunner returns a Runner for one task.
func (p *Program) NewRunner() *Runner {
	r := &Runner{p: p}
	r.act.usesJSON = p.usesJSON
	if p.agg != nil {
		r.aggs = make(map[string]*sluicev1.KeyAggregate)
	}
	return r
}

// Process applies the steps to rec, then aggregates it or collects its output
// record. rec's buffers may be reused once Process returns: nothing of them is
// kept. A record that an expression cannot evaluate is counted as failed; under
// RECORD_ERROR_POLICY_SKIP Process then returns nil, otherwise a *RecordError.
func (r *Runner) Process(rec *record.Record) error {
	r.in++
	a := &r.act
	a.reset(rec)
	defer a.release()
	for i := range r.p.steps {
		s := &r.p.steps[i]
		if s.filter != nil {
			v, err := r.eval(s.filter)
			if err != nil {
				return r.fail(rec, s.filter.field, err)
			}
			keep, ok := v.(types.Bool)
			if !ok {
				return r.fail(rec, s.filter.field, fmt.Errorf("filter gave %s, want bool", typeName(v)))
			}
			if !keep {
				return nil
			}
			continue
		}
		if err := r.mapStep(s); err != nil {
			return r.fail(rec, err.field, err.err)
		}
	}
	if r.p.agg != nil {
		if err := r.aggregate(); err != nil {
			return r.fail(rec, err.field, err.err)
		}
	} else {
		r.collect(rec)
	}
	r.out++
	return nil
}

// fieldErr is an evaluation error and the field it happened in.
type fieldErr struct {
	field string
	err   error
}

func (r *Runner) eval(x *expr) (ref.Val, error) {
	v, _, err := x.prg.Eval(&r.act)
	// A value that is not JSON fails the record even when the expression got
	// past it (json.a == 1 || true): the record is not what the job expects.
	if r.act.jsonErr != nil {
		return nil, r.act.jsonErr
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (r *Runner) mapStep(s *step) *fieldErr {
	// Evaluate both before replacing either: both see the step's input.
	var key, value []byte
	if s.key != nil {
		v, err := r.eval(s.key)
		if err != nil {
			return &fieldErr{s.key.field, err}
		}
		i := r.keyCur ^ 1
		if key, err = appendValue(r.keyBufs[i][:0], v); err != nil {
			return &fieldErr{s.key.field, err}
		}
		r.keyBufs[i] = key
	}
	if s.value != nil {
		v, err := r.eval(s.value)
		if err != nil {
			return &fieldErr{s.value.field, err}
		}
		i := r.valueCur ^ 1
		if value, err = appendValue(r.valueBufs[i][:0], v); err != nil {
			return &fieldErr{s.value.field, err}
		}
		r.valueBufs[i] = value
	}
	if s.key != nil {
		r.keyCur ^= 1
		r.act.setKey(key)
	}
	if s.value != nil {
		r.valueCur ^= 1
		r.act.setValue(value)
	}
	return nil
}

func (r *Runner) aggregate() *fieldErr {
	agg := r.p.agg
	var key string
	if agg.key == nil {
		key = bytesString(r.act.key)
	} else {
		v, err := r.eval(agg.key)
		if err != nil {
			return &fieldErr{agg.key.field, err}
		}
		if s, ok := v.(types.String); ok {
			key = string(s)
		} else {
			if r.aggKeyBuf, err = appendScalar(r.aggKeyBuf[:0], v); err != nil {
				return &fieldErr{agg.key.field, err}
			}
			key = bytesString(r.aggKeyBuf)
		}
	}
	var num float64
	if agg.value != nil {
		v, err := r.eval(agg.value)
		if err != nil {
			return &fieldErr{agg.value.field, err}
		}
		if num, err = toFloat(v); err != nil {
			return &fieldErr{agg.value.field, err}
		}
	}
	ka := r.aggs[key]
	if ka == nil {
		// key may alias the record or a buffer.
		ka = &sluicev1.KeyAggregate{Key: strings.Clone(key), Min: num, Max: num}
		r.aggs[ka.Key] = ka
		r.bytes += int64(len(key)) + aggregateOverhead
	}
	ka.Count++
	ka.Sum += num
	ka.Min = min(ka.Min, num)
	ka.Max = max(ka.Max, num)
	return nil
}

// Approximate encoded sizes beyond the strings: tags, lengths and numbers.
const (
	aggregateOverhead = 48
	recordOverhead    = 24
)

func (r *Runner) collect(rec *record.Record) {
	k, v := r.act.key, r.act.value
	// One allocation for both: the reader reuses the record's buffers.
	buf := make([]byte, len(k)+len(v))
	copy(buf, k)
	copy(buf[len(k):], v)
	out := &sluicev1.OutputRecord{
		Value:     buf[len(k):],
		Topic:     rec.Topic,
		Partition: rec.Partition,
		Offset:    rec.Offset,
	}
	if k != nil {
		out.Key = buf[:len(k):len(k)]
	}
	r.records = append(r.records, out)
	r.bytes += int64(len(buf)+len(rec.Topic)) + recordOverhead
}

func (r *Runner) fail(rec *record.Record, field string, err error) error {
	r.failed++
	rerr := &RecordError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Field: field, Err: err}
	if r.firstErr == "" {
		r.firstErr = rerr.Error()
	}
	if r.p.skip {
		return nil
	}
	return rerr
}

// OutputBytes is the approximate encoded size of the output kept so far
// (output records, or aggregates), so that callers can bound it.
func (r *Runner) OutputBytes() int64 { return r.bytes }

// Result returns the counts and output so far. The aggregates are copies;
// the records are shared and must not be modified.
func (r *Runner) Result() Result {
	res := Result{In: r.in, Out: r.out, Failed: r.failed, FirstError: r.firstErr, Records: r.records}
	if r.aggs != nil {
		res.Aggregates = make([]*sluicev1.KeyAggregate, 0, len(r.aggs))
		for _, ka := range r.aggs {
			res.Aggregates = append(res.Aggregates, &sluicev1.KeyAggregate{
				Key: ka.Key, Count: ka.Count, Sum: ka.Sum, Min: ka.Min, Max: ka.Max,
				Avg: ka.Sum / float64(ka.Count),
			})
		}
		sortAggregates(res.Aggregates)
	}
	return res
}

func sortAggregates(s []*sluicev1.KeyAggregate) {
	slices.SortFunc(s, func(a, b *sluicev1.KeyAggregate) int { return strings.Compare(a.Key, b.Key) })
}

// Merge adds partial aggregates (of several tasks or batches) into totals,
// sorted by key: counts and sums add, min and max combine, avg is recomputed
// as sum/count. The parts are not modified.
func Merge(parts ...[]*sluicev1.KeyAggregate) []*sluicev1.KeyAggregate {
	byKey := make(map[string]*sluicev1.KeyAggregate)
	for _, part := range parts {
		for _, ka := range part {
			t := byKey[ka.GetKey()]
			if t == nil {
				byKey[ka.GetKey()] = &sluicev1.KeyAggregate{
					Key: ka.GetKey(), Count: ka.GetCount(), Sum: ka.GetSum(), Min: ka.GetMin(), Max: ka.GetMax(),
				}
				continue
			}
			if ka.GetCount() == 0 {
				continue
			}
			if t.Count == 0 {
				t.Min, t.Max = ka.GetMin(), ka.GetMax()
			} else {
				t.Min = min(t.Min, ka.GetMin())
				t.Max = max(t.Max, ka.GetMax())
			}
			t.Count += ka.GetCount()
			t.Sum += ka.GetSum()
		}
	}
	out := make([]*sluicev1.KeyAggregate, 0, len(byKey))
	for _, t := range byKey {
		if t.Count != 0 {
			t.Avg = t.Sum / float64(t.Count)
		}
		out = append(out, t)
	}
	sortAggregates(out)
	return out
}
