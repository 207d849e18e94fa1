package steps

import (
	"fmt"
	"slices"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"

	"github.com/sluice-stream/sluice/record"
)

// MaxFlatMapElements bounds the records one source record may fan out to,
// over all its flatMap steps: past it the record fails, naming the step.
const MaxFlatMapElements = 100_000

// aggInput is one emitted record's aggregate key and value.
type aggInput struct {
	key string
	num float64
	// starts are the event-time windows of the element (aggregate.window
	// with event_time).
	starts []int64
}

// element is one flatMap element, converted: the key and value it sets.
type element struct {
	key, value       []byte
	setKey, setValue bool
}

// processFan is Process for a program with a flatMap step. A record is all
// or nothing: when any of its elements fails, nothing it emitted is kept
// (its output records are dropped and its aggregate inputs not added), so
// that a record is either processed or a failed (dead-lettered) record.
func (r *Runner) processFan(rec *record.Record) error {
	nrec, bytes, out := len(r.records), r.bytes, r.out
	r.fan = 0
	r.pending, r.pendingBytes = r.pending[:0], 0
	ferr, over := r.runFrom(rec, 0)
	if ferr != nil || over {
		clear(r.records[nrec:])
		r.records, r.bytes, r.out = r.records[:nrec], bytes, out
		clear(r.pending)
		r.pending = r.pending[:0]
	}
	if over {
		return &OutputLimitError{
			Limit: r.limit, Bytes: r.bytes, Keys: len(r.aggs), Aggregate: r.aggs != nil,
			Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		}
	}
	if ferr != nil {
		return r.fail(rec, ferr)
	}
	// Counted while pending; the aggregates count what they keep.
	r.bytes -= r.pendingBytes
	for _, in := range r.pending {
		r.ev.starts = append(r.ev.starts[:0], in.starts...)
		r.addAggregate(in.key, in.num)
	}
	clear(r.pending)
	r.pending = r.pending[:0]
	if l := r.limit.Bytes; l > 0 && r.bytes > l {
		return &OutputLimitError{
			Limit: r.limit, Bytes: r.bytes, Keys: len(r.aggs), Aggregate: r.aggs != nil,
			Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		}
	}
	return nil
}

// runFrom applies the steps from index i on to the current key and value,
// then emits the result. over reports output past the Runner's limit.
func (r *Runner) runFrom(rec *record.Record, i int) (ferr *fieldErr, over bool) {
	for ; i < len(r.p.steps); i++ {
		s := &r.p.steps[i]
		switch {
		case s.filter != nil:
			v, err := r.eval(s.filter)
			if err != nil {
				return &fieldErr{s.filter, err}, false
			}
			keep, ok := v.(types.Bool)
			if !ok {
				return &fieldErr{s.filter, fmt.Errorf("filter gave %s, want bool", typeName(v))}, false
			}
			if !keep {
				return nil, false
			}
		case s.flat != nil:
			return r.flatMap(rec, s.flat, i)
		case s.proc != nil:
			return r.processor(rec, s.proc, i)
		default:
			if ferr := r.mapStep(s); ferr != nil {
				return ferr, false
			}
		}
	}
	if r.p.agg != nil {
		var starts []int64
		if ev := r.p.agg.event; ev != nil {
			if ferr := r.eventWindows(ev); ferr != nil {
				return ferr, false
			}
			if len(r.ev.starts) == 0 {
				r.ev.late++ // every window of it was emitted: dropped
				return nil, false
			}
			starts = slices.Clone(r.ev.starts)
		}
		key, num, ferr := r.aggregateInput()
		if ferr != nil {
			return ferr, false
		}
		// The key may alias the record or a buffer.
		r.pending = append(r.pending, aggInput{key: string([]byte(key)), num: num, starts: starts})
		// Bounds a record's pending inputs too.
		n := int64(len(key)) + aggregateOverhead
		r.bytes += n
		r.pendingBytes += n
	} else if ferr := r.collect(rec); ferr != nil {
		return ferr, false
	}
	r.out++
	return nil, r.limit.Bytes > 0 && r.bytes > r.limit.Bytes
}

// flatMap evaluates the flatMap step at index i and runs the steps after it
// on each element in turn. Every element is converted before any runs: the
// list may alias the current value, which later map steps may overwrite.
func (r *Runner) flatMap(rec *record.Record, x *expr, i int) (*fieldErr, bool) {
	v, err := r.eval(x)
	if err != nil {
		return &fieldErr{x, err}, false
	}
	list, ok := v.(traits.Lister)
	if !ok {
		return &fieldErr{x, fmt.Errorf("flatMap gave %s, want a list", typeName(v))}, false
	}
	n, ok := list.Size().(types.Int)
	if !ok {
		return &fieldErr{x, fmt.Errorf("flatMap gave a list of unknown size")}, false
	}
	if r.fan+int(n) > MaxFlatMapElements {
		return &fieldErr{x, fmt.Errorf("the record fans out to more than %d records (this flatMap gave %d elements)",
			MaxFlatMapElements, n)}, false
	}
	r.fan += int(n)
	elems := make([]element, n)
	for j := range elems {
		if elems[j], err = toElement(list.Get(types.Int(j))); err != nil {
			return &fieldErr{x, fmt.Errorf("element %d: %w", j, err)}, false
		}
	}
	// Elements that do not set the key or value keep the step's input.
	inKey, inValue := clone(r.act.key), clone(r.act.value)
	for _, e := range elems {
		key, value := inKey, inValue
		if e.setKey {
			key = e.key
		}
		if e.setValue {
			value = e.value
		}
		r.act.setKey(key)
		r.act.setValue(value)
		if ferr, over := r.runFrom(rec, i+1); ferr != nil || over {
			return ferr, over
		}
	}
	return nil, false
}

// toElement converts a flatMap element. A map whose keys are only "key"
// and/or "value" sets them; anything else is the new value, converted as a
// map step's result (so a JSON object element is written as JSON).
func toElement(v ref.Val) (element, error) {
	if m, ok := v.(traits.Mapper); ok {
		if e, ok, err := keyValueElement(m); ok || err != nil {
			return e, err
		}
	}
	b, err := appendValue(nil, v)
	if err != nil {
		return element{}, err
	}
	return element{value: nonNil(b), setValue: true}, nil
}

// keyValueElement reads a {"key": ..., "value": ...} element; ok is false
// when m has other entries, or neither.
func keyValueElement(m traits.Mapper) (e element, ok bool, err error) {
	size, _ := m.Size().(types.Int)
	if size == 0 || size > 2 {
		return element{}, false, nil
	}
	found := 0
	if k, has := m.Find(types.String("key")); has {
		found++
		if e.key, err = appendValue(nil, k); err != nil {
			return element{}, false, fmt.Errorf("key: %w", err)
		}
		e.key, e.setKey = nonNil(e.key), true
	}
	if v, has := m.Find(types.String("value")); has {
		found++
		if e.value, err = appendValue(nil, v); err != nil {
			return element{}, false, fmt.Errorf("value: %w", err)
		}
		e.value, e.setValue = nonNil(e.value), true
	}
	if found != int(size) {
		return element{}, false, nil
	}
	return e, true, nil
}

// nonNil makes an empty result an empty, not absent, key or value, as a
// map step's is.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
