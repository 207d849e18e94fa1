package steps

import (
	"fmt"
	"testing"

	"cel.dev/cel-go/common/types"

	"github.com/sluice-stream/sluice/record"
)

// FuzzFastMatchesCEL evaluates any expression on any record value twice,
// with its fast form (see fastExpr) and with CEL alone: the value, or the
// error, must be the same.
func FuzzFastMatchesCEL(f *testing.F) {
	seeds := []string{
		"json.type == 'click'", "json.ms >= 100.5", "json.ms < 100u", "json.ms <= json.limit", "json.n == null",
		"!json.flag", "json.type == 'click' && json.ms > 100", "json.type == 'click' || json.ms > 100",
		"json.obj == json.obj", "json.list == json.list", "json.a == json.b", "json.big > 9223372036854775807",
		"json.a < json.b || !(json.c != 'x') && json.d >= -0.0", "json.ms < 1000", "json.page", "true",
	}
	values := []string{
		`{"type":"click","ms":150,"page":"/a","flag":true,"limit":150,"n":null,"obj":{"a":1},"list":[1,"x"],"big":1e300}`,
		`{"type":"click","ms":"slow","flag":"yes","limit":"x","n":"null","obj":[],"list":{},"big":"x"}`,
		`{"a":1,"b":1.0,"c":"x","d":-0}`, `{"a":"b","b":"a\u0000"}`, `{"a":[1,{"b":null}],"b":[1.0,{"b":null}]}`,
		`{"a":18446744073709551615,"b":9223372036854775807}`, `{"a":{"x":1},"b":{"x":1,"x":2}}`,
		`{"type":"click","type":"view","ms":1e400}`, `[1,2,3]`, `not json`, "{\"type\":\"cl\xffick\",\"ms\":150}", ``,
	}
	for _, s := range seeds {
		for _, v := range values {
			f.Add(s, []byte(v))
		}
	}
	e, err := environment()
	if err != nil {
		f.Fatal(err)
	}
	all := kinds(types.BoolKind, types.IntKind, types.UintKind, types.DoubleKind, types.StringKind,
		types.BytesKind, types.NullTypeKind, types.MapKind, types.ListKind, types.DynKind)
	f.Fuzz(func(t *testing.T, src string, value []byte) {
		stop := watchdog(fmt.Sprintf("%q on %q", src, value))
		defer stop()
		p := &Program{}
		x, err := p.compile(e, "f", src, all, "anything")
		if err != nil || x.fast == nil {
			return
		}
		slow := &expr{field: x.field, prg: x.prg, metered: x.metered, env: x.env, checked: x.checked}
		r := p.NewRunner()
		r.act.usesJSON = true
		rec := &record.Record{Topic: "t", Key: []byte("k1"), Value: value}
		r.act.reset(rec)
		got, gotErr := r.eval(x)
		r.act.release()
		r.act.reset(rec)
		want, wantErr := r.eval(slow)
		r.act.release()
		if g, w := describe(got, gotErr), describe(want, wantErr); g != w {
			t.Fatalf("%q on %q: fast path gave %s, CEL %s", src, value, g, w)
		}
	})
}
