package steps

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"

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
	// Hint says what to write instead, "" when there is nothing to say: e.g.
	// "JSON numbers are doubles: write int(json.x) % 3".
	Hint string
}

// Error names the record and the field. It is valid UTF-8 and at most
// MaxErrorBytes long, since CEL errors may quote record content: it can go
// into a protobuf string as it is.
func (e *RecordError) Error() string {
	msg := fmt.Sprintf("record %s/%d offset %d: %s: %v", e.Topic, e.Partition, e.Offset, e.Field, e.Err)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return SafeText(msg, MaxErrorBytes)
}

func (e *RecordError) Unwrap() error { return e.Err }

// Result is what a Runner made of its records.
type Result struct {
	// In counts the records given to Process, Out those that left the steps
	// (aggregated or collected), Failed those an expression could not evaluate.
	In, Out, Failed int64
	// Aggregates per key, sorted by exact key (ExactKey), avg filled; only
	// when the program aggregates.
	Aggregates []*sluicev1.KeyAggregate
	// Records that left the steps, in the order processed, but those taken
	// by Drain; only when the program does not aggregate.
	Records []*sluicev1.OutputRecord
	// FirstError describes the first record that failed, "" if none did; like
	// RecordError.Error, it is valid UTF-8 and at most MaxErrorBytes long.
	FirstError string
	// DeadLettered counts the failed records kept as dead letters (also in
	// Failed).
	DeadLettered int64
}

// Runner applies a Program to the records of one task. It is not safe for
// concurrent use.
type Runner struct {
	p   *Program
	act activation
	ctx context.Context // nil: evaluations are not interrupted
	dec *decoders       // nil: nothing is decoded (JSON)

	in, out, failed int64
	firstErr        string

	aggs    map[string]*sluicev1.KeyAggregate // by exact key
	ev      eventState                        // event-time windows
	records []*sluicev1.OutputRecord          // since the last Drain
	bytes   int64                             // of aggs, or of records
	limit   OutputLimit

	// Map results are written into the buffer of each pair that the current
	// key or value does not use, since a result may alias the current one.
	keyBufs, valueBufs [2][]byte
	keyCur, valueCur   int
	aggKeyBuf          []byte

	// Kafka sink routing.
	topics     map[string]string // topic_expr results, so that records share them
	hdrVals    []string          // the current record's header values; may alias it
	hdrSlab    []sluicev1.Header // Header structs handed out in chunks
	hdrPtrSlab []*sluicev1.Header

	// Dead letters since the last DrainDeadLetters (deadletter.go).
	dead         []*sluicev1.OutputRecord
	deadBytes    int64
	deadLettered int64

	// flatMap (flatmap.go): elements emitted for the current record, and
	// its aggregate inputs, added once the whole record succeeded.
	fan          int
	pending      []aggInput
	pendingBytes int64 // of pending, in bytes
}

// maxTopics bounds Runner.topics: past it, a new topic is copied per record.
const maxTopics = 1024

// headerSlab is the number of Header structs (and pointers) allocated at once.
const headerSlab = 64

// NewRunner returns a Runner for one task, whose evaluations are bounded by
// MaxEvalCost but not interrupted; see NewRunnerContext.
func (p *Program) NewRunner() *Runner { return p.NewRunnerContext(nil) }

// NewRunnerContext returns a Runner for one task whose evaluations stop soon
// after ctx is done: Process then returns an error that wraps ctx's cause
// (context.Canceled, context.DeadlineExceeded), not a *RecordError, and does
// not count the record as failed, whatever the record error policy. ctx may
// be nil.
func (p *Program) NewRunnerContext(ctx context.Context) *Runner {
	r := &Runner{p: p}
	if ctx != nil && ctx.Done() != nil {
		r.ctx = ctx
	}
	r.act.usesJSON = p.usesJSON
	if p.agg != nil {
		r.aggs = make(map[string]*sluicev1.KeyAggregate)
	}
	if p.sink != nil && p.sink.topicExpr != nil {
		r.topics = make(map[string]string)
	}
	return r
}

// Process applies the steps to rec, then aggregates it or collects its output
// record, routed when the program has a Kafka sink. rec's buffers may be reused
// once Process returns: nothing of them is kept. A record that an expression
// (a step, the aggregation or a routing expression) cannot evaluate is counted
// as failed; under RECORD_ERROR_POLICY_SKIP Process then returns nil, otherwise
// a *RecordError.
func (r *Runner) Process(rec *record.Record) error {
	r.in++
	a := &r.act
	a.reset(rec)
	defer a.release()
	if r.dec != nil {
		if done, err := r.decode(rec); done {
			return err
		}
	}
	if r.p.fans {
		return r.processFan(rec)
	}
	for i := range r.p.steps {
		s := &r.p.steps[i]
		if s.filter != nil {
			v, err := r.eval(s.filter)
			if err != nil {
				return r.fail(rec, &fieldErr{s.filter, err})
			}
			keep, ok := v.(types.Bool)
			if !ok {
				return r.fail(rec, &fieldErr{s.filter, fmt.Errorf("filter gave %s, want bool", typeName(v))})
			}
			if !keep {
				return nil
			}
			continue
		}
		if err := r.mapStep(s); err != nil {
			return r.fail(rec, err)
		}
	}
	if r.p.agg != nil {
		if ev := r.p.agg.event; ev != nil {
			if err := r.eventWindows(ev); err != nil {
				return r.fail(rec, err)
			}
			if len(r.ev.starts) == 0 {
				r.ev.late++ // every window of it was emitted: dropped
				return nil
			}
		}
		if err := r.aggregate(); err != nil {
			return r.fail(rec, err)
		}
	} else if err := r.collect(rec); err != nil {
		return r.fail(rec, err)
	}
	r.out++
	if l := r.limit.Bytes; l > 0 && r.bytes > l {
		// Not the record's fault: no record error policy applies.
		return &OutputLimitError{
			Limit: r.limit, Bytes: r.bytes, Keys: len(r.aggs), Aggregate: r.aggs != nil,
			Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		}
	}
	return nil
}

// OutputLimit bounds the output a Runner keeps: its aggregates, or its
// output records not yet drained.
type OutputLimit struct {
	// Bytes is the bound on OutputBytes; 0 means none.
	Bytes int64
	// Field names the limit in the job spec, e.g.
	// "limits.max_task_output_bytes"; "" when the limit is fixed.
	Field string
	// Max is the highest value Field may take (0: not said).
	Max int64
}

// OutputLimitError is output kept beyond the Runner's OutputLimit. The task
// cannot succeed with the same records and settings: it says what to
// change.
type OutputLimitError struct {
	Limit OutputLimit
	// Bytes is the output kept when the record at Offset pushed it past
	// the limit.
	Bytes int64
	// Keys is the number of aggregate keys, when Aggregate.
	Keys      int
	Aggregate bool
	Topic     string
	Partition int32
	Offset    int64
}

func (e *OutputLimitError) Error() string {
	at := fmt.Sprintf("topic %s partition %d at offset %d", e.Topic, e.Partition, e.Offset)
	limit := fmt.Sprintf("the %d bytes a task may return", e.Limit.Bytes)
	if e.Limit.Field != "" {
		limit = fmt.Sprintf("%s %d", e.Limit.Field, e.Limit.Bytes)
	}
	raise := ""
	if e.Limit.Field != "" && e.Limit.Max > e.Limit.Bytes {
		raise = fmt.Sprintf(", raise %s (at most %d MiB)", e.Limit.Field, e.Limit.Max>>20)
	}
	var msg string
	if e.Aggregate {
		msg = fmt.Sprintf("aggregate state of %d keys (%d bytes) exceeds %s (%s): reduce the key cardinality of aggregate.key, or lower limits.max_records_per_batch or limits.max_records_per_task%s",
			e.Keys, e.Bytes, limit, at, raise)
	} else {
		msg = fmt.Sprintf("task output of %d bytes exceeds %s (%s): lower limits.max_records_per_batch or limits.max_records_per_task%s, aggregate, or write to a Kafka sink",
			e.Bytes, limit, at, raise)
	}
	return SafeText(msg, MaxErrorBytes)
}

// fieldErr is an evaluation error and the expression it happened in.
type fieldErr struct {
	x   *expr
	err error
}

func (r *Runner) eval(x *expr) (ref.Val, error) {
	if x.fast != nil {
		if v, ok := x.fast.eval(&r.act); ok && r.act.jsonErr == nil {
			return v, nil
		}
	}
	var (
		v   ref.Val
		err error
	)
	if x.metered && r.ctx != nil {
		v, _, err = x.prg.ContextEval(r.ctx, &r.act)
	} else {
		v, _, err = x.prg.Eval(&r.act)
	}
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
			return &fieldErr{s.key, err}
		}
		i := r.keyCur ^ 1
		if key, err = appendValue(r.keyBufs[i][:0], v); err != nil {
			return &fieldErr{s.key, err}
		}
		r.keyBufs[i] = key
	}
	if s.value != nil {
		v, err := r.eval(s.value)
		if err != nil {
			return &fieldErr{s.value, err}
		}
		i := r.valueCur ^ 1
		if value, err = appendValue(r.valueBufs[i][:0], v); err != nil {
			return &fieldErr{s.value, err}
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
	key, num, ferr := r.aggregateInput()
	if ferr != nil {
		return ferr
	}
	r.addAggregate(key, num)
	return nil
}

// aggregateInput evaluates the current record's aggregate key and value;
// the key may alias the record or a buffer.
func (r *Runner) aggregateInput() (key string, num float64, ferr *fieldErr) {
	agg := r.p.agg
	if agg.key == nil {
		key = bytesString(r.act.key)
	} else {
		v, err := r.eval(agg.key)
		if err != nil {
			return "", 0, &fieldErr{agg.key, err}
		}
		if s, ok := v.(types.String); ok {
			key = string(s)
		} else {
			if r.aggKeyBuf, err = appendScalar(r.aggKeyBuf[:0], v); err != nil {
				return "", 0, &fieldErr{agg.key, err}
			}
			key = bytesString(r.aggKeyBuf)
		}
	}
	if agg.value != nil {
		v, err := r.eval(agg.value)
		if err != nil {
			return "", 0, &fieldErr{agg.value, err}
		}
		if num, err = toFloat(v); err != nil {
			return "", 0, &fieldErr{agg.value, err}
		}
	}
	return key, num, nil
}

// addAggregate adds one record's value to its key's aggregate.
func (r *Runner) addAggregate(key string, num float64) {
	ka := r.aggs[key]
	if ka == nil {
		// key may alias the record or a buffer.
		exact := strings.Clone(key)
		ka = newKeyAggregate(exact)
		ka.Min, ka.Max = num, num
		r.aggs[exact] = ka
		r.bytes += int64(len(ka.Key)+len(ka.KeyBytes)) + aggregateOverhead
	}
	ka.Count++
	ka.Sum += num
	ka.Min = min(ka.Min, num)
	ka.Max = max(ka.Max, num)
	if r.p.agg.event != nil {
		r.addWindows(key, num) // to the windows in r.ev.starts
	}
}

// Approximate encoded sizes beyond the strings: tags, lengths and numbers.
const (
	aggregateOverhead = 48
	recordOverhead    = 24
)

// collect keeps the output record of the current record, routed for the Kafka
// sink if there is one. Nothing is kept when routing fails.
func (r *Runner) collect(rec *record.Record) *fieldErr {
	ks := r.p.sink
	var (
		topic     string
		partition int32
		hdrLen    int
	)
	if ks != nil {
		var ferr *fieldErr
		if topic, partition, hdrLen, ferr = r.route(ks); ferr != nil {
			return ferr
		}
	}
	k, v := r.act.key, r.act.value
	// One allocation for all: the reader reuses the record's buffers.
	kv := len(k) + len(v)
	buf := make([]byte, kv+hdrLen)
	copy(buf, k)
	copy(buf[len(k):], v)
	out := &sluicev1.OutputRecord{
		Value:     buf[len(k):kv:kv],
		Topic:     rec.Topic,
		Partition: rec.Partition,
		Offset:    rec.Offset,
	}
	if k != nil {
		out.Key = buf[:len(k):len(k)]
	}
	r.bytes += int64(len(buf)+len(rec.Topic)) + recordOverhead
	if ks != nil {
		out.SinkTopic, out.SinkPartition = topic, partition
		r.bytes += int64(len(topic)) + routeOverhead
		if n := len(ks.headers); n > 0 {
			if len(r.hdrSlab) < n {
				r.hdrSlab = make([]sluicev1.Header, max(n, headerSlab))
				r.hdrPtrSlab = make([]*sluicev1.Header, max(n, headerSlab))
			}
			hs, ptrs := r.hdrSlab[:n:n], r.hdrPtrSlab[:n:n]
			r.hdrSlab, r.hdrPtrSlab = r.hdrSlab[n:], r.hdrPtrSlab[n:]
			off := kv
			for i := range ks.headers {
				end := off + copy(buf[off:], r.hdrVals[i])
				hs[i].Key = ks.headers[i].name
				hs[i].Value = buf[off:end:end]
				ptrs[i] = &hs[i]
				r.bytes += int64(len(hs[i].Key)) + headerOverhead
				off = end
			}
			out.Headers = ptrs
			// The values may alias the record.
			clear(r.hdrVals)
		}
	}
	r.records = append(r.records, out)
	return nil
}

// Approximate encoded sizes of the routing beyond its strings.
const (
	routeOverhead  = 8
	headerOverhead = 6
)

// route evaluates the Kafka sink's expressions on the current record. The
// topic is shared between records (a fixed topic, or an interned topic_expr
// result); the header values are left in r.hdrVals, which may alias the
// record, and hdrLen is their total length.
func (r *Runner) route(ks *kafkaSink) (topic string, partition int32, hdrLen int, ferr *fieldErr) {
	topic, partition = ks.topic, -1
	if x := ks.topicExpr; x != nil {
		v, err := r.eval(x)
		if err != nil {
			return "", 0, 0, &fieldErr{x, err}
		}
		s, ok := v.(types.String)
		if !ok {
			return "", 0, 0, &fieldErr{x, fmt.Errorf("expression gave %s, want a string", typeName(v))}
		}
		if err := checkTopic(string(s)); err != nil {
			return "", 0, 0, &fieldErr{x, err}
		}
		topic = string(s) // may alias the record: interned below
	}
	if x := ks.partition; x != nil {
		v, err := r.eval(x)
		if err != nil {
			return "", 0, 0, &fieldErr{x, err}
		}
		var n int64
		switch v := v.(type) {
		case types.Int:
			n = int64(v)
		case types.Uint:
			n = int64(min(v, math.MaxInt32+1)) // above the range either way
		case types.Double:
			return "", 0, 0, &fieldErr{x, errors.New(
				"expression gave double, want an int (JSON numbers are doubles: write int(...))")}
		default:
			return "", 0, 0, &fieldErr{x, fmt.Errorf("expression gave %s, want an int", typeName(v))}
		}
		if n < 0 || n > math.MaxInt32 {
			return "", 0, 0, &fieldErr{x, fmt.Errorf("partition %v is out of range 0 to %d", v, math.MaxInt32)}
		}
		partition = int32(n)
	}
	if len(ks.headers) > 0 {
		r.hdrVals = r.hdrVals[:0]
		for i := range ks.headers {
			x := ks.headers[i].x
			v, err := r.eval(x)
			var s string
			if err == nil {
				switch v := v.(type) {
				case types.String:
					s = string(v)
				case types.Bytes:
					s = bytesString(v)
				default:
					err = fmt.Errorf("expression gave %s, want a string or bytes", typeName(v))
				}
			}
			if err != nil {
				clear(r.hdrVals)
				return "", 0, 0, &fieldErr{x, err}
			}
			r.hdrVals = append(r.hdrVals, s)
			hdrLen += len(s)
		}
	}
	if ks.topicExpr != nil {
		t, ok := r.topics[topic]
		if !ok {
			t = strings.Clone(topic)
			if len(r.topics) < maxTopics {
				r.topics[t] = t
			}
		}
		topic = t
	}
	return topic, partition, hdrLen, nil
}

func (r *Runner) fail(rec *record.Record, fe *fieldErr) error {
	err := fe.err
	if r.ctx != nil && r.ctx.Err() != nil && (errors.Is(err, interpreter.InterruptError{}) || errors.Is(err, errProcessorInterrupted)) {
		// Not the record's fault: the task is cancelled or out of time.
		return fmt.Errorf("record %s/%d offset %d: %s: evaluation interrupted: %w",
			rec.Topic, rec.Partition, rec.Offset, fe.x.field, context.Cause(r.ctx))
	}
	r.failed++
	if r.p.skip && r.firstErr != "" {
		// Skipped and not reported: no need for the message.
		return nil
	}
	if isCostLimit(err) {
		err = errCostLimit
	}
	rerr := &RecordError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Field: fe.x.field, Err: err}
	if strings.HasPrefix(err.Error(), "no such overload") {
		rerr.Hint = fe.x.diagnosis().hint(r.ctx, &r.act)
	}
	if r.firstErr == "" {
		r.firstErr = rerr.Error()
	}
	if r.p.dead != nil {
		r.keepDeadLetter(rec, fe.x, rerr)
		return nil
	}
	if r.p.skip {
		return nil
	}
	return rerr
}

// OutputBytes is the approximate encoded size of the output kept (the output
// records not yet drained, or the aggregates), so that callers can bound it.
func (r *Runner) OutputBytes() int64 { return r.bytes }

// SetOutputLimit makes Process fail with an *OutputLimitError, once it has
// taken its record, when the output kept exceeds l.Bytes; the record error
// policy does not apply. A Runner whose records are drained as they come
// (a Kafka sink) keeps only what was not drained yet.
func (r *Runner) SetOutputLimit(l OutputLimit) { r.limit = l }

// Pending returns the number of output records kept since the last Drain.
func (r *Runner) Pending() int { return len(r.records) }

// Drain returns the output records kept since the last Drain, in the order
// processed, and forgets them: OutputBytes drops by their size, and Result
// has only the records after them. A caller that writes its output as it
// goes (the Kafka sink) drains a chunk at a time, so that a task's memory
// does not grow with its output. The records are the caller's.
func (r *Runner) Drain() []*sluicev1.OutputRecord {
	recs := r.records
	r.records = make([]*sluicev1.OutputRecord, 0, cap(recs))
	if r.aggs == nil {
		r.bytes = 0
	}
	return recs
}

// Result returns the counts and output so far (the records not drained).
// The aggregates are copies
// (their key_bytes shared); the records are shared and must not be modified.
// Every string in it is valid UTF-8, so that it can be marshalled: an
// aggregate key that is not valid UTF-8 has a readable key, with \xNN for the
// invalid bytes, and its exact bytes in key_bytes (see ExactKey).
func (r *Runner) Result() Result {
	res := Result{In: r.in, Out: r.out, Failed: r.failed, FirstError: r.firstErr, Records: r.records, DeadLettered: r.deadLettered}
	if r.aggs != nil {
		res.Aggregates = make([]*sluicev1.KeyAggregate, 0, len(r.aggs))
		for _, ka := range r.aggs {
			res.Aggregates = append(res.Aggregates, &sluicev1.KeyAggregate{
				Key: ka.Key, KeyBytes: ka.KeyBytes, Count: ka.Count, Sum: ka.Sum, Min: ka.Min, Max: ka.Max,
				Avg: ka.Sum / float64(ka.Count),
			})
		}
		sortAggregates(res.Aggregates)
	}
	return res
}

// sortAggregates sorts by exact key, byte by byte.
func sortAggregates(s []*sluicev1.KeyAggregate) {
	slices.SortFunc(s, func(a, b *sluicev1.KeyAggregate) int { return strings.Compare(ExactKey(a), ExactKey(b)) })
}

// Merge adds partial aggregates (of several tasks or batches) into totals,
// sorted by exact key: counts and sums add, min and max combine, avg is
// recomputed as sum/count. Keys are told apart by their exact bytes
// (ExactKey), and the totals are written like Result's: key_bytes only when
// the key is not valid UTF-8. The parts are not modified.
func Merge(parts ...[]*sluicev1.KeyAggregate) []*sluicev1.KeyAggregate {
	byKey := make(map[string]*sluicev1.KeyAggregate)
	for _, part := range parts {
		for _, ka := range part {
			exact := ExactKey(ka)
			t := byKey[exact]
			if t == nil {
				t = newKeyAggregate(exact)
				t.Count, t.Sum, t.Min, t.Max = ka.GetCount(), ka.GetSum(), ka.GetMin(), ka.GetMax()
				byKey[exact] = t
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
