package steps

import (
	"fmt"
	"strings"
	"testing"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"

	"github.com/sluice-stream/sluice/record"
)

// The fast path must give what CEL gives: the same value, or leave the
// record to CEL (which then gives its own error).
func TestFastMatchesCEL(t *testing.T) {
	exprs := []struct {
		src  string
		fast bool // expected to have a fast form
	}{
		{"json.type == 'click'", true},
		{"'click' == json.type", true},
		{"json.type != 'click'", true},
		{"json.ms > 100", true},
		{"json.ms >= 100.5", true},
		{"json.ms < 100u", true},
		{"json.ms < 150", true},
		{"json.ms > 150", true},
		{"json.ms <= 150.0", true},
		{"json.ms >= 150u", true},
		{"json.ms <= json.limit", true},
		{"json.type < 'm'", true},
		{"json.n == null", true},
		{"json.flag", true},
		{"!json.flag", true},
		{"json.type == 'click' && json.ms > 100", true},
		{"json.type == 'click' || json.ms > 100", true},
		{"json.ms > 100 && json.type == 'click'", true},
		{"json.page", true},
		{"json.ms", true},
		{"json.obj", true},
		{"json.obj == json.obj", true},
		{"json.list == json.list", true},
		{"json.type == 1", true},
		{"json.ms == 150", true},
		{"json.big > 9223372036854775807", true},
		{"true", true},
		{"json.type.size() > 2", false},
		{"has(json.type)", false},
		{"json.obj.a == 1", false},
		{"json['type'] == 'click'", false},
		{"key == 'k1'", false},
		{"[1, 2].exists(json, json > 1)", false},
	}
	values := []string{
		`{"type":"click","ms":150,"page":"/a","flag":true,"limit":150,"n":null,"obj":{"a":1},"list":[1,"x"],"big":1e300}`,
		`{"type":"view","ms":99.5,"page":"/b\u00e9","flag":false,"limit":1,"n":1,"obj":{},"list":[],"big":-1e300}`,
		`{"type":"click","ms":"slow","flag":"yes","limit":"x","n":"null","obj":[],"list":{},"big":"x"}`,
		`{"type":1,"ms":-0,"page":2,"flag":null}`,
		`{"type":"click","type":"view","ms":1e400}`,
		`{}`,
		`[1,2,3]`,
		`"click"`,
		`not json`,
		`{"type":"cl` + "\xff" + `ick","ms":150}`,
		``,
	}
	e, err := environment()
	if err != nil {
		t.Fatal(err)
	}
	all := kinds(types.BoolKind, types.IntKind, types.UintKind, types.DoubleKind, types.StringKind,
		types.BytesKind, types.NullTypeKind, types.MapKind, types.ListKind, types.DynKind)
	for _, ex := range exprs {
		p := &Program{}
		x, err := p.compile(e, "f", ex.src, all, "anything")
		if err != nil {
			t.Fatalf("compile %q: %v", ex.src, err)
		}
		if (x.fast != nil) != ex.fast {
			t.Errorf("%q: fast form %v, want %v", ex.src, x.fast != nil, ex.fast)
		}
		slow := &expr{field: x.field, prg: x.prg, metered: x.metered, env: x.env, checked: x.checked}
		r := p.NewRunner()
		r.act.usesJSON = true
		for _, v := range values {
			rec := &record.Record{Topic: "t", Key: []byte("k1"), Value: []byte(v)}
			r.act.reset(rec)
			got, gotErr := r.eval(x)
			r.act.release()
			r.act.reset(rec)
			want, wantErr := r.eval(slow)
			r.act.release()
			if g, w := describe(got, gotErr), describe(want, wantErr); g != w {
				t.Errorf("%q on %s: fast path gave %s, CEL %s", ex.src, v, g, w)
			}
		}
	}
}

func describe(v ref.Val, err error) string {
	if err != nil {
		return "error " + err.Error()
	}
	return fmt.Sprintf("%T %v", v, v.Value())
}

// Deep nesting and long chains are left to CEL.
func TestFastBoundsNodes(t *testing.T) {
	e, err := environment()
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Repeat("json.a == 'x' && ", 20) + "true"
	p := &Program{}
	x, err := p.compile(e, "f", src, filterKinds, "bool")
	if err != nil {
		t.Fatal(err)
	}
	if x.fast != nil {
		t.Errorf("%d-node expression has a fast form", 41)
	}
}
