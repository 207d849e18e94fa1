package steps

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"cel.dev/cel-go/common/types"
)

var jsonCorpus = []string{
	`{}`, `[]`, `null`, `true`, `false`, `0`, `-0`, `-0.0`, `1`, `-12`, `3.25`, `1e3`, `1E-2`, `-1.5e+300`,
	`123456789012345`, `1234567890123456789`, `9007199254740993`, `1e400`, `0.1`,
	`""`, `"abc"`, `"a\"b\\c\/d\b\f\n\r\t"`, `"\u00e9\u4e2d"`, `"é中😀"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ud83dx"`,
	`"\ude00\ud83d"`, `"\ud800\u0041"`, "\"\xff\xfe\"", "\"a\xc3\"",
	` { "a" : [ 1 , { "b" : null } ] , "c" : "d" } `, `{"a":1,"a":2}`, `[[[[]]]]`, `[1,"2",[3],{"4":5}]`,
	`{"user_id":"u-00001","page":"/p","ms":137,"tags":["x","y"],"geo":{"lat":52.5,"lon":13.4}}`,
	// invalid
	``, ` `, `{`, `}`, `[`, `[1,]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{a:1}`, `{"a":1 "b":2}`, `[1 2]`,
	`01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`, `0x10`, `NaN`, `Infinity`, `tru`, `nul`, `falsey`,
	`"abc`, `"\x"`, `"\u12"`, `"\u12zz"`, "\"a\nb\"", `"\`, `1 2`, `{} {}`, `[1]x`,
}

// The parser must agree with encoding/json on what is JSON and what it means.
func TestJSONParserMatchesEncodingJSON(t *testing.T) {
	for _, in := range append(jsonCorpus, strings.Repeat("[", maxJSONDepth)+strings.Repeat("]", maxJSONDepth)) {
		checkJSON(t, in)
	}
	var p jsonParser
	if _, err := p.parse([]byte(strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1))); err == nil {
		t.Errorf("parse(%d nested arrays) error = nil, want exceeded max depth", maxJSONDepth+1)
	}
}

func checkJSON(t *testing.T, in string) {
	t.Helper()
	var want any
	wantErr := json.Unmarshal([]byte(in), &want)
	var p jsonParser
	for range 2 { // the parser is reused across records
		got, err := p.parse([]byte(in))
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("parse(%q) error = %v, encoding/json error = %v", in, err, wantErr)
		}
		if err != nil {
			return
		}
		// Fields read one by one, before anything decodes the whole object.
		if o, ok := got.(*jsonObject); ok {
			for k, w := range want.(map[string]any) {
				v, found := o.Find(types.String(k))
				if !found || v.Equal(types.DefaultTypeAdapter.NativeToValue(w)) != types.True {
					t.Fatalf("parse(%q).Find(%q) = %v, %v; want %v", in, k, v, found, w)
				}
			}
			if _, found := o.Find(types.String("\x00missing")); found {
				t.Fatalf("parse(%q) found a missing key", in)
			}
		}
		if got = decoded(got); !reflect.DeepEqual(got, want) {
			t.Fatalf("parse(%q) = %#v, encoding/json gives %#v", in, got, want)
		}
	}
}

// decoded returns what a lazily parsed object holds.
func decoded(v any) any {
	if o, ok := v.(*jsonObject); ok {
		return o.whole().Value()
	}
	return v
}

func FuzzJSONParser(f *testing.F) {
	for _, in := range jsonCorpus {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		checkJSON(t, in)
	})
}

// scan is what a value costs before any field is read; whole decodes every
// field, as encoding/json does.
func BenchmarkJSONParse(b *testing.B) {
	v := clickRecords(1)[0].Value
	b.Run("scan", func(b *testing.B) {
		var p jsonParser
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.parse(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		var p jsonParser
		b.ReportAllocs()
		for b.Loop() {
			o, err := p.parse(v)
			if err != nil {
				b.Fatal(err)
			}
			o.(*jsonObject).whole()
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var x any
			if err := json.Unmarshal(v, &x); err != nil {
				b.Fatal(err)
			}
		}
	})
}
