package steps_test

import (
	"fmt"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
	"github.com/sluice-stream/sluice/steps"
)

func Example() {
	spec := &sluicev1.JobSpec{
		Steps: []*sluicev1.Step{
			{Kind: &sluicev1.Step_Filter{Filter: "json.ms > 100"}},
		},
		Aggregate: &sluicev1.Aggregate{
			Key:   "json.page",
			Value: "json.ms",
			Functions: []sluicev1.AggregateFunction{
				sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT,
				sluicev1.AggregateFunction_AGGREGATE_FUNCTION_AVG,
			},
		},
	}
	p, err := steps.Compile(spec)
	if err != nil {
		fmt.Println(err)
		return
	}
	r := p.NewRunner() // one per task
	for i, v := range []string{
		`{"page": "/cart", "ms": 120}`,
		`{"page": "/", "ms": 80}`,
		`{"page": "/cart", "ms": 300}`,
		`{"page": "/", "ms": 101}`,
	} {
		if err := r.Process(&record.Record{Topic: "clicks", Offset: int64(i), Value: []byte(v)}); err != nil {
			fmt.Println(err)
			return
		}
	}
	res := r.Result()
	fmt.Printf("in %d, out %d\n", res.In, res.Out)
	for _, a := range res.Aggregates {
		fmt.Printf("%s: count %d, avg %g\n", a.GetKey(), a.GetCount(), a.GetAvg())
	}
	// Output:
	// in 4, out 3
	// /: count 1, avg 101
	// /cart: count 2, avg 210
}

func ExampleFieldError() {
	_, err := steps.Compile(&sluicev1.JobSpec{
		Steps: []*sluicev1.Step{{Kind: &sluicev1.Step_Filter{Filter: "1 < vale"}}},
	})
	fmt.Println(err)
	// Output:
	// steps[0].filter: ERROR: <input>:1:5: undeclared reference to 'vale'
	//  | 1 < vale
	//  | ....^
}
