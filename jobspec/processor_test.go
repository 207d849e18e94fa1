package jobspec

import (
	"slices"
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestValidateProcessorName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"enrich", true},
		{"geo.v2", true},
		{"A_b-c.d", true},
		{"a" + strings.Repeat("b", 62), true},
		{"a" + strings.Repeat("b", 63), false},
		{"", false},
		{"1st", false},
		{"-x", false},
		{"en rich", false},
		{"words/v2", false},
		{"mot-clé", false},
	} {
		err := ValidateProcessorName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateProcessorName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestProcessors(t *testing.T) {
	step := func(name string) *sluicev1.Step {
		return &sluicev1.Step{Kind: &sluicev1.Step_Processor{Processor: &sluicev1.ProcessorStep{Name: name}}}
	}
	spec := &sluicev1.JobSpec{Steps: []*sluicev1.Step{
		step("geo"), {Kind: &sluicev1.Step_Filter{Filter: "true"}}, step("enrich"), step("geo"),
	}}
	if got := Processors(spec); !slices.Equal(got, []string{"enrich", "geo"}) {
		t.Errorf("Processors() = %q, want [enrich geo]", got)
	}
	if got := Processors(&sluicev1.JobSpec{}); got != nil {
		t.Errorf("Processors() of a spec without = %q, want nil", got)
	}
}
