package steps

import (
	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// A fast expression evaluates the commonest shapes of expression — JSON
// fields, literals, comparisons and logic, as in json.type == 'click' or
// json.page — straight from the activation, without the CEL interpreter's
// frames, attribute resolution and qualifiers, which cost more than the
// comparison itself. It only ever answers when the answer is plain (a found
// field, a bool from bools); on anything else (a missing field, a value that
// is not a JSON object, an error, a type the operator does not take) it says
// so, and the CEL program evaluates the expression: errors and their messages
// stay CEL's own.
type fastExpr interface {
	// eval returns the expression's value, or ok false when CEL must
	// evaluate it.
	eval(a *activation) (v ref.Val, ok bool)
}

// maxFastNodes bounds the expressions taken: past it, the time saved does
// not matter next to the expression's own.
const maxFastNodes = 16

// compileFast returns the fast form of a checked expression, or nil when it
// has a part that only CEL evaluates.
func compileFast(checked *cel.Ast) fastExpr {
	native := checked.NativeRep()
	nodes := 0
	return fastNode(native.Expr(), native.ReferenceMap(), &nodes)
}

func fastNode(e ast.Expr, refs map[int64]*ast.ReferenceInfo, nodes *int) fastExpr {
	if *nodes++; *nodes > maxFastNodes {
		return nil
	}
	switch e.Kind() {
	case ast.LiteralKind:
		switch v := e.AsLiteral().(type) {
		case types.Bool, types.Int, types.Uint, types.Double, types.String, types.Null:
			return fastLiteral{v}
		}
	case ast.SelectKind:
		sel := e.AsSelect()
		op := sel.Operand()
		if sel.IsTestOnly() || op.Kind() != ast.IdentKind || op.AsIdent() != "json" {
			return nil
		}
		// The identifier must be the json variable itself.
		if r := refs[op.ID()]; r == nil || r.Name != "json" || len(r.OverloadIDs) != 0 {
			return nil
		}
		return &fastJSONField{key: types.String(sel.FieldName())}
	case ast.CallKind:
		call := e.AsCall()
		if call.IsMemberFunction() {
			return nil
		}
		args := make([]fastExpr, len(call.Args()))
		for i, arg := range call.Args() {
			if args[i] = fastNode(arg, refs, nodes); args[i] == nil {
				return nil
			}
		}
		switch fn := call.FunctionName(); {
		case fn == operators.LogicalNot && len(args) == 1:
			return fastNot{args[0]}
		case len(args) != 2:
			return nil
		case fn == operators.LogicalAnd:
			return fastLogic{args[0], args[1], types.False}
		case fn == operators.LogicalOr:
			return fastLogic{args[0], args[1], types.True}
		case fn == operators.Equals:
			return fastEquals{args[0], args[1], false}
		case fn == operators.NotEquals:
			return fastEquals{args[0], args[1], true}
		case fn == operators.Less, fn == operators.LessEquals, fn == operators.Greater, fn == operators.GreaterEquals:
			return fastOrder{args[0], args[1], fn}
		}
	}
	return nil
}

type fastLiteral struct{ v ref.Val }

func (l fastLiteral) eval(*activation) (ref.Val, bool) { return l.v, true }

// fastJSONField is json.<key> on a record whose value is a JSON object that
// has the key.
type fastJSONField struct {
	key ref.Val // a types.String, boxed once
}

func (f *fastJSONField) eval(a *activation) (ref.Val, bool) {
	j, _ := a.ResolveName("json")
	o, ok := j.(*jsonObject)
	if !ok {
		return nil, false
	}
	v, found := o.Find(f.key)
	if !found || types.IsUnknownOrError(v) {
		return nil, false
	}
	return v, true
}

type fastNot struct{ x fastExpr }

func (n fastNot) eval(a *activation) (ref.Val, bool) {
	v, ok := n.x.eval(a)
	b, isBool := v.(types.Bool)
	if !ok || !isBool {
		return nil, false
	}
	return !b, true
}

// fastLogic is && (short, false) or || (short, true): as in CEL, the left
// operand decides alone when it is short.
type fastLogic struct {
	l, r  fastExpr
	short types.Bool
}

func (x fastLogic) eval(a *activation) (ref.Val, bool) {
	l, ok := x.l.eval(a)
	lb, isBool := l.(types.Bool)
	if !ok || !isBool {
		return nil, false
	}
	if lb == x.short {
		return lb, true
	}
	r, ok := x.r.eval(a)
	rb, isBool := r.(types.Bool)
	if !ok || !isBool {
		return nil, false
	}
	return rb, true
}

// fastEquals is == or (not) != with CEL's heterogeneous equality, which is
// defined for every pair of values.
type fastEquals struct {
	l, r fastExpr
	not  bool
}

func (x fastEquals) eval(a *activation) (ref.Val, bool) {
	l, ok := x.l.eval(a)
	if !ok {
		return nil, false
	}
	r, ok := x.r.eval(a)
	if !ok {
		return nil, false
	}
	eq, isBool := types.Equal(l, r).(types.Bool)
	if !isBool {
		return nil, false
	}
	return types.Bool(eq != types.Bool(x.not)), true
}

// fastOrder is <, <=, > or >= between two numbers (ints, uints and doubles
// compare across types, as the environment allows) or two strings.
type fastOrder struct {
	l, r fastExpr
	op   string
}

func (x fastOrder) eval(a *activation) (ref.Val, bool) {
	l, ok := x.l.eval(a)
	if !ok {
		return nil, false
	}
	r, ok := x.r.eval(a)
	if !ok || !orderable(l, r) {
		return nil, false
	}
	c, isInt := l.(traits.Comparer).Compare(r).(types.Int)
	if !isInt {
		return nil, false // NaN
	}
	switch x.op {
	case operators.Less:
		return types.Bool(c < 0), true
	case operators.LessEquals:
		return types.Bool(c <= 0), true
	case operators.Greater:
		return types.Bool(c > 0), true
	default:
		return types.Bool(c >= 0), true
	}
}

func orderable(l, r ref.Val) bool {
	number := func(v ref.Val) bool {
		switch v.(type) {
		case types.Int, types.Uint, types.Double:
			return true
		}
		return false
	}
	if number(l) {
		return number(r)
	}
	_, ls := l.(types.String)
	_, rs := r.(types.String)
	return ls && rs
}
