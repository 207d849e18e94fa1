package jobspec

import (
	"fmt"
	"regexp"
	"slices"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Bounds of the Go processor steps.
const (
	// MaxProcessorConfigBytes bounds a processor step's config, encoded: it
	// travels with every task.
	MaxProcessorConfigBytes = 64 << 10
	// ProcessorNamePattern is what a processor's name may be, in a step
	// and when a worker registers it.
	ProcessorNamePattern = `^[A-Za-z][A-Za-z0-9._-]{0,62}$`
)

var processorNameRE = regexp.MustCompile(ProcessorNamePattern)

// ValidateProcessorName says what is wrong with a processor's name, or nil.
func ValidateProcessorName(name string) error {
	if !processorNameRE.MatchString(name) {
		return fmt.Errorf("processor name %q must be a letter, then up to 62 letters, digits, '.', '_' or '-'", name)
	}
	return nil
}

// Processors returns the names of the Go processors the job's steps call,
// sorted and without duplicates; nil when it calls none. Only workers that
// registered all of them may run its tasks.
func Processors(spec *sluicev1.JobSpec) []string {
	var names []string
	for _, s := range spec.GetSteps() {
		if p := s.GetProcessor(); p != nil {
			names = append(names, p.GetName())
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}
