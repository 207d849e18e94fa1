package worker

import (
	"fmt"
	"maps"
	"slices"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/steps"
)

// Processor is a Go function that the job steps
// {"processor": {"name": ...}} call for each record: see steps.Processor.
type Processor = steps.Processor

// ProcessorFactory makes a Processor from its step's config, once per
// compiled job: see steps.ProcessorFactory.
type ProcessorFactory = steps.ProcessorFactory

// RegisterProcessor registers fn under name, for processor steps without
// config: a step that gives it config fails, naming the config. Register
// every processor before Run: the worker advertises them when it connects,
// and the coordinator sends a job's tasks only to workers that have every
// processor the job calls. fn is called by several tasks at once.
func (w *Worker) RegisterProcessor(name string, fn Processor) error {
	if fn == nil {
		return fmt.Errorf("worker: RegisterProcessor %q: nil processor", name)
	}
	return w.RegisterProcessorFactory(name, func(config map[string]any) (Processor, error) {
		if len(config) > 0 {
			return nil, fmt.Errorf("takes no config, got keys %q (register it with RegisterProcessorFactory to read config)",
				slices.Sorted(maps.Keys(config)))
		}
		return fn, nil
	})
}

// RegisterProcessorFactory registers a processor that reads its step's
// config: the worker calls factory once per job (and spec version) with the
// step's config and uses the Processor it returns; its error fails the job,
// naming the step's config. Like RegisterProcessor, call it before Run.
func (w *Worker) RegisterProcessorFactory(name string, factory ProcessorFactory) error {
	if err := jobspec.ValidateProcessorName(name); err != nil {
		return fmt.Errorf("worker: RegisterProcessor: %w", err)
	}
	if factory == nil {
		return fmt.Errorf("worker: RegisterProcessorFactory %q: nil factory", name)
	}
	w.procMu.Lock()
	defer w.procMu.Unlock()
	if w.started {
		return fmt.Errorf("worker: RegisterProcessor %q after Run: register processors before the worker runs, so that it advertises them", name)
	}
	if _, dup := w.processors[name]; dup {
		return fmt.Errorf("worker: RegisterProcessor: processor %q is already registered", name)
	}
	if w.processors == nil {
		w.processors = map[string]ProcessorFactory{}
	}
	w.processors[name] = factory
	return nil
}

// Processors returns the names of the registered processors, sorted.
func (w *Worker) Processors() []string {
	w.procMu.Lock()
	defer w.procMu.Unlock()
	return slices.Sorted(maps.Keys(w.processors))
}

// freezeProcessors ends registration: from Run on, the processors are read
// without a lock.
func (w *Worker) freezeProcessors() {
	w.procMu.Lock()
	defer w.procMu.Unlock()
	w.started = true
	if w.processors == nil {
		w.processors = map[string]ProcessorFactory{}
	}
}
