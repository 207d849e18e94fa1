package steps

import (
	"errors"
	"fmt"
	"math"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
)

// CEL cost limits. A cost unit is one of cel-go's: about one operation, such
// as a comparison or a field access; one iteration of a loop costs a few. On
// a 2-core CI machine a unit of loop work takes 30 to 60ns.
const (
	// MaxEvalCost bounds one evaluation of one expression on one record
	// (some 40ms of loops). Compile refuses an expression whose estimated
	// cost exceeds it whatever the record, such as
	// lists.range(100000).all(i, lists.range(100000).all(j, j >= 0)); an
	// evaluation that exceeds it at run time (a loop over a large JSON list)
	// fails that record like any other evaluation error.
	MaxEvalCost = 1_000_000
	// EstimateRecordBytes is the record size (key, value or header) up to
	// which an expression is estimated to decide whether its evaluations need
	// metering: Kafka's default message.max.bytes.
	EstimateRecordBytes = 1 << 20
	// MaxPairs bounds the pairs of elements that l.distinct(),
	// sets.contains, sets.equivalent and sets.intersects may compare in one
	// call (some 0.1s): cel-go compares every pair, in one call that neither
	// the cost limit nor a cancelled context can stop.
	MaxPairs = 10_000_000
)

// interruptCheckFrequency is the number of loop iterations between two checks
// of the runner's context: a check is cheap, and 100 iterations take a few
// microseconds.
const interruptCheckFrequency = 100

// errCostLimit replaces cel-go's "operation cancelled: actual cost limit
// exceeded" so that the user knows which limit and what to look for.
var errCostLimit = fmt.Errorf("evaluation stopped: it exceeded the cost limit of %d for one record (a loop too large for this record?)", MaxEvalCost)

// recordSizes tells the cost estimator how large the values made from a
// record may be: its key, value and headers, the JSON value (a JSON list or
// map has fewer elements than its text has bytes), and any value cel-go
// cannot size, such as json.parse(value).orValue(0).
type recordSizes struct{ max uint64 }

func (recordSizes) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

func (rs recordSizes) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	recordSized := &cost.SizeEstimate{Min: 0, Max: rs.max}
	if p := n.Path(); len(p) > 0 {
		switch p[0] {
		case "key", "value", "key_bytes", "value_bytes", "json", "record", "record_key":
			return recordSized
		case "headers":
			// Its names and values too, or headers['x'] + 'y' has no bound.
			m := cost.MapSizeEstimate(*recordSized, *recordSized, *recordSized)
			return &m
		case "topic":
			return &cost.SizeEstimate{Min: 1, Max: 249}
		}
		return nil
	}
	switch n.Type().Kind() {
	case types.DynKind, types.StringKind, types.BytesKind, types.ListKind, types.MapKind:
		return recordSized
	}
	return nil
}

// json.encode, json.parse, yaml.encode and yaml.parse are unbounded in
// cel-go's cost model, both estimated and at run time: any expression using
// them would be refused, or stopped. They take time linear in their text, so
// they are charged like a string scan of it (0.1 per byte), and their result
// is assumed no larger than a record (a parsed value has fewer elements than
// its text has bytes).
var (
	parseOverloads  = []string{"json_parse_string", "json_parse_string_type", "yaml_parse_string", "yaml_parse_string_type"}
	encodeOverloads = []string{"json_encode_dyn", "yaml_encode_dyn"}
)

// estimateOptions replace cel-go's estimates where they are unbounded for
// values made from a record of up to max bytes: the encoders (see above), and
// lists.range(n) of a number that is not a constant, which is taken as large
// as the record (its elements are the record's to bound, like a JSON list's).
func estimateOptions(max uint64) []cost.Option {
	parse := func(est cost.Estimator, _ *cost.AstNode, args []cost.AstNode) *cost.CallEstimate {
		sz := cost.EstimateSize(est, args[0])
		sz.Max = min(sz.Max, max)
		// An optional: 1 plus the value it holds, as cel-go sizes them.
		value := cost.SizeEstimate{Min: 0, Max: sz.Max}
		res := cost.SizeEstimate{Min: 1, Max: 1 + sz.Max, Elem: &value}
		return &cost.CallEstimate{CostEstimate: textCost(sz), ResultSize: &res}
	}
	encode := func(cost.Estimator, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
		sz := cost.SizeEstimate{Min: 0, Max: max}
		return &cost.CallEstimate{CostEstimate: textCost(sz), ResultSize: &sz}
	}
	listsRange := func(_ cost.Estimator, _ *cost.AstNode, args []cost.AstNode) *cost.CallEstimate {
		n := cost.SizeEstimate{Min: 0, Max: max}
		if x := args[0].Expr(); x.Kind() == ast.LiteralKind {
			if i, ok := x.AsLiteral().(types.Int); ok {
				n = cost.FixedSizeEstimate(uint64(math.Max(float64(i), 0)))
			}
		}
		one := cost.FixedSizeEstimate(1)
		n.Elem = &one
		return &cost.CallEstimate{
			CostEstimate: cost.Estimate{Min: 1 + n.Min, Max: 1 + n.Max}.Add(cost.FixedCostEstimate(cost.ListCreateBaseCost)),
			ResultSize:   &n,
		}
	}
	opts := []cost.Option{cost.OverloadCostEstimate("lists_range", listsRange)}
	for _, id := range parseOverloads {
		opts = append(opts, cost.OverloadCostEstimate(id, parse))
	}
	for _, id := range encodeOverloads {
		opts = append(opts, cost.OverloadCostEstimate(id, encode))
	}
	return opts
}

var (
	emptyRecordEstimates = estimateOptions(0)
	largeRecordEstimates = estimateOptions(EstimateRecordBytes)
)

func textCost(sz cost.SizeEstimate) cost.Estimate {
	return sz.MultiplyByCostFactor(cost.StringTraversalCostFactor).Add(cost.CallCostEstimate)
}

// encoderTrackers are the run-time charges: the parsed text or the encoded
// result.
var encoderTrackers = func() []cost.TrackerOption {
	charge := func(v ref.Val) *uint64 {
		c := uint64(1)
		if s, ok := v.(traits.Sizer); ok {
			c += uint64(float64(s.Size().(types.Int)) * cost.StringTraversalCostFactor)
		}
		return &c
	}
	var opts []cost.TrackerOption
	for _, id := range parseOverloads {
		opts = append(opts, cost.OverloadTracker(id, func(args []ref.Val, _ ref.Val) *uint64 { return charge(args[0]) }))
	}
	for _, id := range encodeOverloads {
		opts = append(opts, cost.OverloadTracker(id, func(_ []ref.Val, result ref.Val) *uint64 { return charge(result) }))
	}
	return opts
}()

// checkCost estimates the cost of a checked expression twice. On an empty
// record, it is what the expression costs whatever the record (loops over
// constants): above MaxEvalCost, every evaluation would fail, so the
// expression is refused. On a record of EstimateRecordBytes, it says whether
// the expression may exceed MaxEvalCost at all: only those (metered) pay for
// cost tracking and interruption at run time. An expression that is not
// metered costs at most linearly more on larger records, since any
// superlinear term would already exceed the limit at that size.
func checkCost(e *cel.Env, checked *cel.Ast) (metered bool, err error) {
	empty, err := e.EstimateCost(checked, recordSizes{max: 0}, emptyRecordEstimates...)
	if err != nil {
		// No estimate: leave it to the run-time limit.
		return true, nil
	}
	switch {
	case empty.Max == math.MaxUint64:
		return false, fmt.Errorf("the cost of this expression has no bound, and one record may cost at most %d", MaxEvalCost)
	case empty.Max > MaxEvalCost:
		return false, fmt.Errorf("this expression may cost up to %d even on an empty record, above the limit of %d for one record: loop over fewer elements, and avoid loops in loops", empty.Max, MaxEvalCost)
	}
	large, err := e.EstimateCost(checked, recordSizes{max: EstimateRecordBytes}, largeRecordEstimates...)
	return err != nil || large.Max > MaxEvalCost, nil
}

// costProgramOptions are the options of a metered expression's program.
var costProgramOptions = []cel.ProgramOption{
	cel.CostLimit(MaxEvalCost),
	cel.CostTrackerOptions(encoderTrackers...),
	cel.InterruptCheckFrequency(interruptCheckFrequency),
}

// isCostLimit reports whether err is cel-go's cost limit error.
func isCostLimit(err error) bool {
	var ce interpreter.EvalCancelledError
	return errors.As(err, &ce) && ce.Cause == interpreter.CostLimitExceeded
}

// pairGuards redefine the functions of cel-go's ext package that compare
// every pair of elements in one call, so that a list from a record (a JSON
// list of 100,000 elements, value.split(”)) fails that record instead of
// holding the worker for hours: the same semantics, refused above MaxPairs.
func pairGuards() []cel.EnvOption {
	listT := cel.ListType(cel.TypeParamType("T"))
	sets := func(name, id string, f func(a, b traits.Lister) ref.Val) cel.EnvOption {
		return cel.Function(name, cel.Overload(id, []*cel.Type{listT, listT}, cel.BoolType,
			cel.BinaryBinding(func(a, b ref.Val) ref.Val {
				la, lb := a.(traits.Lister), b.(traits.Lister)
				if err := checkPairs(name, listSize(la), listSize(lb)); err != nil {
					return err
				}
				return f(la, lb)
			})))
	}
	return []cel.EnvOption{
		cel.Function("distinct", cel.MemberOverload("list_distinct", []*cel.Type{listT}, listT,
			cel.UnaryBinding(func(v ref.Val) ref.Val {
				l := v.(traits.Lister)
				n := listSize(l)
				if err := checkPairs("distinct", n, n); err != nil {
					return err
				}
				return distinct(l, n)
			}))),
		sets("sets.contains", "list_sets_contains_list", setsContains),
		sets("sets.equivalent", "list_sets_equivalent_list", func(a, b traits.Lister) ref.Val {
			if r := setsContains(a, b); r != types.True {
				return r
			}
			return setsContains(b, a)
		}),
		sets("sets.intersects", "list_sets_intersects_list", func(a, b traits.Lister) ref.Val {
			for it := a.Iterator(); it.HasNext() == types.True; {
				if b.Contains(it.Next()) == types.True {
					return types.True
				}
			}
			return types.False
		}),
	}
}

func listSize(l traits.Lister) int64 { return int64(l.Size().(types.Int)) }

func checkPairs(fn string, a, b int64) *types.Err {
	if a > 0 && b > MaxPairs/a {
		return types.NewErr("%s of %d and %d elements would compare more than %d pairs: use smaller lists", fn, a, b, MaxPairs).(*types.Err)
	}
	return nil
}

// distinct keeps the first of equal elements, in order, as cel-go's does.
func distinct(l traits.Lister, n int64) ref.Val {
	if n == 0 {
		return l
	}
	unique := make([]ref.Val, 0, n)
	for i := range n {
		v := l.Get(types.Int(i))
		seen := false
		for _, u := range unique {
			if v.Equal(u) == types.True {
				seen = true
				break
			}
		}
		if !seen {
			unique = append(unique, v)
		}
	}
	return types.NewRefValList(types.DefaultTypeAdapter, unique)
}

// setsContains reports whether every element of sub is in l, as cel-go's
// sets.contains does.
func setsContains(l, sub traits.Lister) ref.Val {
	for it := sub.Iterator(); it.HasNext() == types.True; {
		if r := l.Contains(it.Next()); r != types.True {
			return r
		}
	}
	return types.True
}
