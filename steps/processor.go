package steps

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/jobspec"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// Processor is a Go function that a processor step calls for each record. It
// gets the record as the steps before it made it (its key and value, and the
// source record's topic, partition, offset, timestamp and headers) and
// returns the records that go on to the next step, in order: none drops the
// record, several fan it out. Only the key and value of the records it
// returns are used. rec is the processor's own: it may return it, or keep
// its slices. An error fails the record (the job's on_record_error applies),
// and so does a panic. ctx is the task's: it is done when the task is
// cancelled or out of time. Several tasks call a Processor at once.
type Processor func(ctx context.Context, rec record.Record) ([]record.Record, error)

// ProcessorFactory makes the Processor of one processor step from the step's
// config (the JSON object of steps[].processor.config; numbers are float64,
// and a step without config gives an empty map). It is called once per
// compiled job, when a worker compiles the job's steps: an error fails the
// job, naming the step's config.
type ProcessorFactory func(config map[string]any) (Processor, error)

// CompileOption configures Compile.
type CompileOption func(*compileOptions)

type compileOptions struct {
	// processors resolve the processor steps; nil: they are only checked
	// (the coordinator, which runs no steps).
	processors map[string]ProcessorFactory
}

// WithProcessors resolves the processor steps against factories, by name:
// Compile calls the factory of each step with its config. A step naming a
// processor missing from factories fails Compile with a
// *MissingProcessorError. Without this option processor steps are checked
// (name and config size) but cannot run.
func WithProcessors(factories map[string]ProcessorFactory) CompileOption {
	return func(o *compileOptions) {
		o.processors = factories
		if o.processors == nil {
			o.processors = map[string]ProcessorFactory{}
		}
	}
}

// MissingProcessorError is a processor step whose processor this program's
// caller does not have. It is not the job's fault: a worker that registered
// the processor can run the task.
type MissingProcessorError struct {
	Field string // "steps[1].processor.name"
	Name  string
}

func (e *MissingProcessorError) Error() string {
	return fmt.Sprintf("%s: processor %q is not registered on this worker", e.Field, e.Name)
}

// procStep is a compiled processor step.
type procStep struct {
	name string
	fn   Processor // nil when compiled without WithProcessors
	// x names the step in record errors and dead letters (its src is the
	// processor's name); it has no program.
	x *expr
}

// compileProcessor checks a processor step and, with factories, makes its
// Processor.
func compileProcessor(i int, ps *sluicev1.ProcessorStep, o *compileOptions) (*procStep, error) {
	field := fmt.Sprintf("steps[%d].processor", i)
	name := ps.GetName()
	if err := jobspec.ValidateProcessorName(name); err != nil {
		return nil, &FieldError{Field: field + ".name", Err: err}
	}
	if n := proto.Size(ps.GetConfig()); n > jobspec.MaxProcessorConfigBytes {
		return nil, &FieldError{Field: field + ".config", Err: fmt.Errorf(
			"%d bytes encoded: at most %d", n, jobspec.MaxProcessorConfigBytes)}
	}
	st := &procStep{name: name, x: &expr{field: field, src: name}}
	if o.processors == nil {
		return st, nil
	}
	factory, ok := o.processors[name]
	if !ok {
		return nil, &MissingProcessorError{Field: field + ".name", Name: name}
	}
	fn, err := callFactory(factory, ps.GetConfig().AsMap())
	if err != nil {
		return nil, &FieldError{Field: field + ".config", Err: fmt.Errorf("processor %q: %w", name, err)}
	}
	st.fn = fn
	return st, nil
}

// callFactory calls factory, turning a panic or a nil Processor into an
// error.
func callFactory(factory ProcessorFactory, config map[string]any) (fn Processor, err error) {
	defer func() {
		if v := recover(); v != nil {
			fn, err = nil, fmt.Errorf("factory panicked: %v%s", v, panicSite())
		}
	}()
	fn, err = factory(config)
	if err == nil && fn == nil {
		err = errors.New("factory returned no processor and no error")
	}
	return fn, err
}

// errProcessorInterrupted marks a processor's failure while its task's
// context was done: not the record's fault.
var errProcessorInterrupted = errors.New("processor interrupted")

// processor calls the processor step at index i on the current key and
// value, then runs the steps after it on each record it returns, in order.
func (r *Runner) processor(rec *record.Record, ps *procStep, i int) (*fieldErr, bool) {
	if ps.fn == nil {
		return &fieldErr{ps.x, fmt.Errorf("processor %q was not resolved: compile with steps.WithProcessors", ps.name)}, false
	}
	ctx := r.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	// Copies: the processor may keep or return them, and the reader and
	// the map steps reuse their buffers.
	in := record.Record{
		Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Timestamp: rec.Timestamp,
		Key: clone(r.act.key), Value: clone(r.act.value), Headers: cloneHeaders(rec.Headers),
	}
	outs, err := callProcessor(ctx, ps, in)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", errProcessorInterrupted, err)
		}
		return &fieldErr{ps.x, err}, false
	}
	if r.fan+len(outs) > MaxFlatMapElements {
		return &fieldErr{ps.x, fmt.Errorf("the record fans out to more than %d records (processor %q returned %d)",
			MaxFlatMapElements, ps.name, len(outs))}, false
	}
	r.fan += len(outs)
	for j := range outs {
		r.act.setKey(outs[j].Key)
		r.act.setValue(outs[j].Value)
		if ferr, over := r.runFrom(rec, i+1); ferr != nil || over {
			return ferr, over
		}
	}
	return nil, false
}

// callProcessor calls the step's processor, turning a panic into an error
// that names the processor and where it panicked.
func callProcessor(ctx context.Context, ps *procStep, in record.Record) (outs []record.Record, err error) {
	defer func() {
		if v := recover(); v != nil {
			outs, err = nil, fmt.Errorf("processor %q panicked: %v%s", ps.name, v, panicSite())
		}
	}()
	outs, err = ps.fn(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("processor %q: %w", ps.name, err)
	}
	return outs, nil
}

// panicSite is " at function (file:line)" of the frame that panicked, for a
// deferred recover to call; "" when it cannot tell.
func panicSite() string {
	pcs := make([]uintptr, 32)
	n := runtime.Callers(3, pcs) // past Callers, panicSite and the deferred func
	frames := runtime.CallersFrames(pcs[:n])
	// The frames go: runtime.gopanic (and runtime helpers such as
	// runtime.panicmem), then the function that panicked.
	sawPanic := false
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "runtime.") {
			sawPanic = true
		} else if sawPanic {
			file := f.File
			if k := strings.LastIndexByte(file, '/'); k >= 0 {
				file = file[k+1:]
			}
			return fmt.Sprintf(" at %s (%s:%d)", f.Function, file, f.Line)
		}
		if !more {
			return ""
		}
	}
}

// cloneHeaders copies hs and their values, keeping nil values nil.
func cloneHeaders(hs []record.Header) []record.Header {
	if hs == nil {
		return nil
	}
	out := make([]record.Header, len(hs))
	for i, h := range hs {
		out[i] = record.Header{Key: h.Key, Value: clone(h.Value)}
	}
	return out
}
