package steps

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/ext"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// FieldError is an invalid expression or setting of a JobSpec, named by its
// field so that the submitter can find it.
type FieldError struct {
	// Field is the path of the field in the spec: "steps[1].filter",
	// "steps[0].map.value", "aggregate.key", "aggregate.functions[2]", ...
	Field string
	// Expr is the expression, empty when the error is not about one.
	Expr string
	// Err is the CEL error (with its line:column and the offending source line)
	// or what is wrong with the field.
	Err error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason() }

// Reason is Error without the field, for reports that name the field apart
// (a BadRequest field violation's description).
func (e *FieldError) Reason() string {
	// CEL's messages already quote the source line under the position; other
	// errors about an expression name it.
	var cerr *celError
	if e.Expr == "" || errors.As(e.Err, &cerr) {
		return e.Err.Error()
	}
	return fmt.Sprintf("%q: %v", e.Expr, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// celError carries CEL's issues as an error.
type celError struct{ msg string }

func (e *celError) Error() string { return e.msg }

// Program is a compiled JobSpec's steps and aggregation. It is immutable and
// safe for concurrent use: each task runs it with its own Runner.
type Program struct {
	steps    []step
	agg      *aggregate
	sink     *kafkaSink // nil: no Kafka sink, output records are not routed
	skip     bool       // RECORD_ERROR_POLICY_SKIP
	usesJSON bool
	dead     *deadLetter // RECORD_ERROR_POLICY_DEAD_LETTER: where failing records go
	fans     bool        // a step is a flatMap
	// The source's key and value formats ("" is JSON): expressions may read
	// record_key and record only when they are decoded.
	keyFormat, valueFormat string
}

// step is one filter, map or flatMap step; exactly one of filter, flat, or
// key and/or value, is set.
type step struct {
	filter     *expr
	key, value *expr
	flat       *expr
	proc       *procStep // processor.go
}

type aggregate struct {
	key       *expr // nil: the record key
	value     *expr // nil: no value, sum/min/max/avg stay 0
	functions []sluicev1.AggregateFunction
	event     *eventTime // nil: no event-time windows
}

// kafkaSink is the routing of a Kafka sink: the target topic, partition and
// headers of every output record.
type kafkaSink struct {
	topic     string       // fixed topic; "" when topicExpr is set
	topicExpr *expr        // nil: topic
	partition *expr        // nil: -1, the producer's partitioner
	headers   []sinkHeader // sorted by name
}

type sinkHeader struct {
	name string
	x    *expr
}

// expr is a compiled expression with the field it came from, which runtime
// errors name.
type expr struct {
	field string
	src   string // for the dead letters' sluice-dlq-expression header
	prg   cel.Program
	// metered: the expression may exceed MaxEvalCost, so prg tracks its cost
	// and can be interrupted.
	metered bool
	// fast evaluates the expression's common shapes without the
	// interpreter (see fastExpr); nil when it has none.
	fast fastExpr

	// For the hints of run-time errors, built on the first one.
	env      *cel.Env
	checked  *cel.Ast
	diagOnce sync.Once
	diag     *diagnosis
}

// diagnosis returns the expression's diagnosis, building it on first use.
func (x *expr) diagnosis() *diagnosis {
	x.diagOnce.Do(func() { x.diag = newDiagnosis(x.env, x.checked) })
	return x.diag
}

// UsesJSON reports whether an expression reads the json variable, i.e. whether
// values are parsed.
func (p *Program) UsesJSON() bool { return p.usesJSON }

// Aggregates reports whether the program aggregates; when it does not, the
// records that leave the steps are collected.
func (p *Program) Aggregates() bool { return p.agg != nil }

// KafkaSink reports whether the program routes its output records to a Kafka
// sink: each OutputRecord then has SinkTopic, SinkPartition and Headers set.
func (p *Program) KafkaSink() bool { return p.sink != nil }

// Functions returns the aggregate functions requested, in spec order without
// duplicates ([COUNT] when the spec lists none); nil without aggregation.
func (p *Program) Functions() []sluicev1.AggregateFunction {
	if p.agg == nil {
		return nil
	}
	return append([]sluicev1.AggregateFunction(nil), p.agg.functions...)
}

var (
	envOnce sync.Once
	env     *cel.Env
	envErr  error
)

// environment returns the CEL environment shared by all programs: building
// one costs milliseconds, and an Env is safe for concurrent use.
func environment() (*cel.Env, error) {
	envOnce.Do(func() {
		opts := []cel.EnvOption{
			cel.Variable("key", cel.StringType),
			cel.Variable("value", cel.StringType),
			cel.Variable("key_bytes", cel.BytesType),
			cel.Variable("value_bytes", cel.BytesType),
			cel.Variable("json", cel.DynType),
			cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
			cel.Variable("topic", cel.StringType),
			cel.Variable("partition", cel.IntType),
			cel.Variable("offset", cel.IntType),
			cel.Variable("timestamp", cel.TimestampType),
			// The decoded value and key of the Schema Registry formats.
			cel.Variable("record", cel.DynType),
			cel.Variable("record_key", cel.DynType),
			// JSON numbers are doubles: json.ms > 100 must work.
			cel.CrossTypeNumericComparisons(true),
			cel.DefaultUTCTimeZone(true),
			cel.OptionalTypes(),
			ext.Strings(),
			ext.Encoders(),
			ext.Math(),
			ext.Lists(),
			ext.Sets(),
			ext.Regex(),
			ext.Bindings(),
		}
		env, envErr = cel.NewEnv(append(opts, pairGuards()...)...)
	})
	return env, envErr
}

// Compile type-checks every expression of spec.Steps, spec.Aggregate and, for
// a Kafka sink, its topic_expr, partition_expr and headers. Errors are
// *FieldError, or *MissingProcessorError (see WithProcessors).
func Compile(spec *sluicev1.JobSpec, opts ...CompileOption) (*Program, error) {
	var o compileOptions
	for _, opt := range opts {
		opt(&o)
	}
	e, err := environment()
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	p := &Program{
		skip:        spec.GetOnRecordError() == sluicev1.RecordErrorPolicy_RECORD_ERROR_POLICY_SKIP,
		keyFormat:   spec.GetSource().GetKeyFormat(),
		valueFormat: spec.GetSource().GetValueFormat(),
	}
	if p.dead, err = compileDeadLetter(spec); err != nil {
		return nil, err
	}
	for i, s := range spec.GetSteps() {
		switch k := s.GetKind().(type) {
		case *sluicev1.Step_Filter:
			x, err := p.compile(e, fmt.Sprintf("steps[%d].filter", i), k.Filter, filterKinds, "a bool")
			if err != nil {
				return nil, err
			}
			p.steps = append(p.steps, step{filter: x})
		case *sluicev1.Step_Map:
			field := fmt.Sprintf("steps[%d].map", i)
			if k.Map.GetKey() == "" && k.Map.GetValue() == "" {
				return nil, &FieldError{Field: field, Err: errors.New("needs a key or a value expression")}
			}
			var st step
			if src := k.Map.GetKey(); src != "" {
				if st.key, err = p.compile(e, field+".key", src, mapKinds, mapWant); err != nil {
					return nil, err
				}
			}
			if src := k.Map.GetValue(); src != "" {
				if st.value, err = p.compile(e, field+".value", src, mapKinds, mapWant); err != nil {
					return nil, err
				}
			}
			p.steps = append(p.steps, st)
		case *sluicev1.Step_FlatMap:
			x, err := p.compile(e, fmt.Sprintf("steps[%d].flatMap", i), k.FlatMap, flatMapKinds, "a list")
			if err != nil {
				return nil, err
			}
			p.steps = append(p.steps, step{flat: x})
			p.fans = true
		case *sluicev1.Step_Processor:
			ps, err := compileProcessor(i, k.Processor, &o)
			if err != nil {
				return nil, err
			}
			p.steps = append(p.steps, step{proc: ps})
			p.fans = true // it may return any number of records
		default:
			return nil, &FieldError{Field: fmt.Sprintf("steps[%d]", i), Err: errors.New("needs a filter or a map, or a flatMap or a processor")}
		}
	}
	kafka, isKafka := spec.GetSink().GetKind().(*sluicev1.Sink_Kafka)
	if a := spec.GetAggregate(); isKafka && (a.GetRunning() || a.GetWindow() != nil) {
		// The coordinator writes the state's updates, not the tasks: no
		// record is routed (validated by checkUpdateStream).
		if err := checkUpdateStream(kafka.Kafka); err != nil {
			return nil, err
		}
		isKafka = false
	}
	if isKafka && spec.GetAggregate() != nil {
		// Told before any error of the aggregate or the sink: fixing those
		// would not help.
		return nil, &FieldError{Field: "sink.kafka", Err: errors.New(
			"a Kafka sink cannot follow an aggregate: tasks write their own output; use the collect sink for per-key totals")}
	}
	if a := spec.GetAggregate(); a != nil {
		if p.agg, err = p.compileAggregate(e, a); err != nil {
			return nil, err
		}
	}
	if isKafka {
		if p.sink, err = p.compileKafkaSink(e, kafka.Kafka); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// compileKafkaSink compiles the routing expressions of a Kafka sink. They see
// the record as it leaves the steps. ks may be nil (an empty sink).
func (p *Program) compileKafkaSink(e *cel.Env, ks *sluicev1.KafkaSink) (*kafkaSink, error) {
	sink := &kafkaSink{topic: ks.GetTopic()}
	var err error
	switch topic, src := ks.GetTopic(), ks.GetTopicExpr(); {
	case topic == "" && src == "":
		return nil, &FieldError{Field: "sink.kafka.topic", Err: errors.New("set topic or topic_expr")}
	case topic != "" && src != "":
		return nil, &FieldError{Field: "sink.kafka.topic", Err: errors.New("set topic or topic_expr, not both")}
	case topic != "":
		if err := checkTopic(topic); err != nil {
			return nil, &FieldError{Field: "sink.kafka.topic", Err: err}
		}
	default:
		if sink.topicExpr, err = p.compile(e, "sink.kafka.topic_expr", src, topicKinds, "a string"); err != nil {
			return nil, err
		}
	}
	if src := ks.GetPartitionExpr(); src != "" {
		if sink.partition, err = p.compile(e, "sink.kafka.partition_expr", src, partitionKinds, "an int"); err != nil {
			return nil, err
		}
	}
	// In name order: the first error is the same at every submit, and the
	// output records list their headers in that order.
	for _, name := range slices.Sorted(maps.Keys(ks.GetHeaders())) {
		field := fmt.Sprintf("sink.kafka.headers[%q]", name)
		switch {
		case name == "":
			return nil, &FieldError{Field: field, Err: errors.New("a header name must not be empty")}
		case len(name) >= len(reservedHeaderPrefix) && strings.EqualFold(name[:len(reservedHeaderPrefix)], reservedHeaderPrefix):
			return nil, &FieldError{Field: field, Err: fmt.Errorf(
				"header names starting with %q are reserved: the sink adds sluice-job, sluice-batch and sluice-src itself", reservedHeaderPrefix)}
		}
		x, err := p.compile(e, field, ks.GetHeaders()[name], headerKinds, "a string or bytes")
		if err != nil {
			return nil, err
		}
		sink.headers = append(sink.headers, sinkHeader{name: name, x: x})
	}
	return sink, nil
}

// reservedHeaderPrefix starts the names of the headers the sink adds itself;
// it is compared without regard to case.
const reservedHeaderPrefix = "sluice-"

// checkTopic reports whether t is a legal Kafka topic name: 1 to 249 ASCII
// letters, digits, '.', '_' or '-', and neither "." nor "..". It does not
// allocate unless t is illegal.
func checkTopic(t string) error {
	ok := len(t) > 0 && len(t) <= 249 && t != "." && t != ".."
	for i := 0; ok && i < len(t); i++ {
		c := t[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%q is not a valid Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'", t)
	}
	return nil
}

func (p *Program) compileAggregate(e *cel.Env, a *sluicev1.Aggregate) (*aggregate, error) {
	agg := &aggregate{}
	var needValue []string
	seen := make(map[sluicev1.AggregateFunction]bool)
	for i, f := range a.GetFunctions() {
		switch f {
		case sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT:
		case sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM,
			sluicev1.AggregateFunction_AGGREGATE_FUNCTION_MIN,
			sluicev1.AggregateFunction_AGGREGATE_FUNCTION_MAX,
			sluicev1.AggregateFunction_AGGREGATE_FUNCTION_AVG:
			needValue = append(needValue, f.String())
		default:
			return nil, &FieldError{
				Field: fmt.Sprintf("aggregate.functions[%d]", i),
				Err:   fmt.Errorf("%v is not an aggregate function; want COUNT, SUM, MIN, MAX or AVG", f),
			}
		}
		if !seen[f] {
			seen[f] = true
			agg.functions = append(agg.functions, f)
		}
	}
	if len(agg.functions) == 0 {
		agg.functions = []sluicev1.AggregateFunction{sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT}
	}
	var err error
	if src := a.GetKey(); src != "" {
		if agg.key, err = p.compile(e, "aggregate.key", src, keyKinds, "a string, bytes, number or bool"); err != nil {
			return nil, err
		}
	}
	if src := a.GetValue(); src != "" {
		if agg.value, err = p.compile(e, "aggregate.value", src, valueKinds, "a number"); err != nil {
			return nil, err
		}
	} else if len(needValue) > 0 {
		return nil, &FieldError{
			Field: "aggregate.value",
			Err:   fmt.Errorf("a numeric value expression is required by %s", strings.Join(needValue, ", ")),
		}
	}
	if agg.event, err = p.compileEventTime(e, a.GetWindow()); err != nil {
		return nil, err
	}
	return agg, nil
}

// Output types accepted per kind of expression; dyn is checked at run time.
var (
	filterKinds = kinds(types.BoolKind)
	mapKinds    = kinds(types.StringKind, types.BytesKind, types.IntKind, types.UintKind,
		types.DoubleKind, types.BoolKind, types.NullTypeKind, types.ListKind, types.MapKind,
		types.TimestampKind, types.DurationKind)
	keyKinds = kinds(types.StringKind, types.BytesKind, types.IntKind, types.UintKind,
		types.DoubleKind, types.BoolKind)
	valueKinds     = kinds(types.IntKind, types.UintKind, types.DoubleKind)
	topicKinds     = kinds(types.StringKind)
	partitionKinds = kinds(types.IntKind, types.UintKind)
	headerKinds    = kinds(types.StringKind, types.BytesKind)
	flatMapKinds   = kinds(types.ListKind)
)

const mapWant = "a string, bytes, number, bool, null, list, map, timestamp or duration"

func kinds(ks ...types.Kind) map[types.Kind]bool {
	m := map[types.Kind]bool{types.DynKind: true, types.AnyKind: true}
	for _, k := range ks {
		m[k] = true
	}
	return m
}

// maxIssuesBytes bounds the text of CEL's issues in a compile error: CEL
// quotes the source line (up to 16 KiB) under each of up to 100 errors, which
// an expression on one long line turns into megabytes.
const maxIssuesBytes = 4 << 10

// compile parses and checks one expression and verifies its output type.
func (p *Program) compile(e *cel.Env, field, src string, want map[types.Kind]bool, wantText string) (*expr, error) {
	if strings.TrimSpace(src) == "" {
		return nil, &FieldError{Field: field, Expr: src, Err: errors.New("empty expression")}
	}
	ast, iss := e.Compile(src)
	if iss.Err() != nil {
		all := iss.String()
		msg := SafeText(all, maxIssuesBytes)
		if h := compileHint(all); h != "" {
			msg += "\n" + h
		}
		return nil, &FieldError{Field: field, Expr: src, Err: &celError{msg: msg}}
	}
	if out := ast.OutputType(); !want[out.Kind()] {
		// Report in CEL's format so the position and source line show.
		native := ast.NativeRep()
		iss := cel.NewIssuesWithSourceInfo(common.NewErrors(ast.Source()), native.SourceInfo())
		iss.ReportErrorAtID(native.Expr().ID(), "expression gives %s, want %s", out, wantText)
		return nil, &FieldError{Field: field, Expr: src, Err: &celError{msg: SafeText(iss.String(), maxIssuesBytes)}}
	}
	for _, ref := range ast.NativeRep().ReferenceMap() {
		if len(ref.OverloadIDs) != 0 {
			continue
		}
		switch ref.Name {
		case "json":
			p.usesJSON = true
		case "record":
			if !registryFormat(p.valueFormat) {
				return nil, &FieldError{Field: field, Expr: src, Err: errors.New(
					"record is the decoded value of the avro, protobuf and jsonschema formats: set source.value_format, or read json")}
			}
		case "record_key":
			if !registryFormat(p.keyFormat) {
				return nil, &FieldError{Field: field, Expr: src, Err: errors.New(
					"record_key is the decoded key of the avro, protobuf and jsonschema formats: set source.key_format, or read key")}
			}
		}
	}
	metered, err := checkCost(e, ast)
	if err != nil {
		return nil, &FieldError{Field: field, Expr: src, Err: err}
	}
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	if metered {
		// Cost tracking costs some 300ns and a few allocations per
		// evaluation: only for the expressions that may need it.
		opts = append(opts, costProgramOptions...)
	}
	prg, err := e.Program(ast, opts...)
	if err != nil {
		return nil, &FieldError{Field: field, Expr: src, Err: err}
	}
	x := &expr{field: field, src: src, prg: prg, metered: metered, env: e, checked: ast}
	if !metered {
		x.fast = compileFast(ast)
	}
	return x, nil
}
