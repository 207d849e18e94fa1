package steps

import (
	"context"
	"regexp"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/parser"
)

// JSON numbers are doubles, and CEL neither mixes int and double in
// arithmetic nor has % on doubles. The error cel-go gives ("no such
// overload", sometimes naming the operator) does not say so; these hints do.

// compileHint returns a hint for CEL's type-check issues, "" when none
// applies: an int and a double in one arithmetic operation, or % on a double.
func compileHint(issues string) string {
	m := mixedOverloadRE.FindStringSubmatch(issues)
	if m == nil {
		return ""
	}
	op, a, b := m[1], m[2], m[3]
	switch {
	case op == "_%_" && (a == "double" || b == "double"):
		return "% is defined on ints, not doubles: convert with int(...), e.g. int(x) % 3"
	case numeric(a) && numeric(b) && a != b:
		return "CEL does not mix int and double in arithmetic: convert one side with double(...) or int(...), e.g. x + 1.0"
	}
	return ""
}

var mixedOverloadRE = regexp.MustCompile(`found no matching overload for '(_[-+*/%]_)' applied to '\((\w+), (\w+)\)'`)

func numeric(t string) bool { return t == "int" || t == "uint" || t == "double" }

// diagnosis finds which call of an expression gave "no such overload" on a
// record, by evaluating it again with its intermediate values recorded. It is
// built on the first such error: the error path only.
type diagnosis struct {
	prg   cel.Program
	calls []diagCall
}

// diagCall is a call with an argument of type dyn (a JSON value, say).
type diagCall struct {
	id   int64
	fn   string
	args []diagArg // the target first, for a member call
}

type diagArg struct {
	id    int64
	src   string // the argument as CEL source
	paren string // src, in parentheses if it is an operation
}

func newDiagnosis(e *cel.Env, checked *cel.Ast) *diagnosis {
	d := &diagnosis{}
	prg, err := e.Program(checked, append([]cel.ProgramOption{cel.EvalOptions(cel.OptTrackState)}, costProgramOptions...)...)
	if err != nil {
		return d
	}
	d.prg = prg
	native := checked.NativeRep()
	info := native.SourceInfo()
	ast.PostOrderVisit(native.Expr(), ast.NewExprVisitor(func(x ast.Expr) {
		if x.Kind() != ast.CallKind {
			return
		}
		call := x.AsCall()
		var args []ast.Expr
		if call.IsMemberFunction() {
			args = append(args, call.Target())
		}
		args = append(args, call.Args()...)
		dyn := false
		for _, a := range args {
			if k := native.GetType(a.ID()).Kind(); k == types.DynKind || k == types.AnyKind {
				dyn = true
			}
		}
		if !dyn {
			return
		}
		c := diagCall{id: x.ID(), fn: call.FunctionName()}
		for _, a := range args {
			src, err := parser.Unparse(a, info)
			if err != nil {
				return
			}
			paren := src
			if a.Kind() == ast.CallKind && isOperator(a.AsCall().FunctionName()) {
				paren = "(" + src + ")"
			}
			c.args = append(c.args, diagArg{id: a.ID(), src: src, paren: paren})
		}
		d.calls = append(d.calls, c)
	}))
	return d
}

func isOperator(fn string) bool {
	_, ok := operators.FindReverse(fn)
	return ok && fn != operators.Index && fn != operators.OptIndex
}

// hint evaluates the expression again on the activation and returns what to
// write instead of the call that failed, "" when it finds nothing to say.
func (d *diagnosis) hint(ctx context.Context, act any) string {
	if d.prg == nil || len(d.calls) == 0 {
		return ""
	}
	var det *cel.EvalDetails
	if ctx != nil {
		_, det, _ = d.prg.ContextEval(ctx, act)
	} else {
		_, det, _ = d.prg.Eval(act)
	}
	if det == nil || det.State() == nil {
		return ""
	}
	st := det.State()
	for _, c := range d.calls {
		v, ok := st.Value(c.id)
		if !ok || !types.IsError(v) {
			continue
		}
		// The call that failed is the one whose arguments did not.
		vals := make([]ref.Val, len(c.args))
		double := -1
		failedArg := false
		for i, a := range c.args {
			av, ok := st.Value(a.id)
			if !ok || types.IsUnknownOrError(av) {
				failedArg = true
				break
			}
			vals[i] = av
			if av.Type() == types.DoubleType && double < 0 {
				double = i
			}
		}
		if failedArg || double < 0 {
			continue
		}
		return doubleHint(c, vals, double)
	}
	return ""
}

// doubleHint says how to write call c, whose argument double is a double.
func doubleHint(c diagCall, vals []ref.Val, double int) string {
	const prefix = "JSON numbers are doubles: write "
	if len(c.args) == 2 && isOperator(c.fn) {
		op, _ := operators.FindReverse(c.fn)
		asInt := func(i int) string {
			if vals[i].Type() == types.DoubleType {
				return "int(" + c.args[i].src + ")"
			}
			return c.args[i].paren
		}
		if c.fn == operators.Modulo {
			return prefix + asInt(0) + " % " + asInt(1)
		}
		other := 1 - double
		if t := vals[other].Type(); t != types.IntType && t != types.UintType {
			return ""
		}
		// x + 1.0, or int(x) + 1.
		asDouble := []string{c.args[0].paren, c.args[1].paren}
		asDouble[other] = doubleLiteral(c.args[other])
		return prefix + asDouble[0] + " " + op + " " + asDouble[1] + " or " + asInt(0) + " " + op + " " + asInt(1)
	}
	src := c.args[double].src
	return "JSON numbers are doubles: if " + c.fn + " wants an int here, write int(" + src + ")"
}

var intLiteralRE = regexp.MustCompile(`^-?[0-9]+$`)

// doubleLiteral writes an int operand as a double: 1 as 1.0, anything else
// as double(...).
func doubleLiteral(a diagArg) string {
	if intLiteralRE.MatchString(a.src) {
		return a.src + ".0"
	}
	return "double(" + a.src + ")"
}
