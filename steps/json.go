package steps

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// maxJSONDepth bounds nesting so that a hostile value cannot exhaust the stack.
const maxJSONDepth = 1000

// jsonParser parses record values for the json variable. A value is always
// validated whole, so invalid JSON fails the record whatever fields are read.
//
// A top-level object becomes a *jsonObject: the validating scan only notes
// where each field's value lies, and a field is decoded when an expression
// reads it, so json.a > 1 costs one scan and one small decode however many
// fields the value has. Anything else, and nested objects, decode to the values
// encoding/json gives an any (map[string]any, []any, string, float64, bool,
// nil), which CEL reads as maps, lists, strings, doubles, bools and null.
//
// Strings without escapes alias the value's bytes (see bytesString): what a
// Runner keeps is always copied out first.
type jsonParser struct {
	parses int // values parsed; tests use it

	s     string
	i     int
	depth int
	keys  []string // scratch stacks of the objects and arrays being decoded
	vals  []any
	obj   jsonObject // reused for every record's top-level object
}

var errJSONEnd = errors.New("unexpected end of JSON input")

// parse returns a *jsonObject for an object, else the decoded value.
func (p *jsonParser) parse(b []byte) (any, error) {
	p.parses++
	p.s, p.i, p.depth = bytesString(b), 0, 0
	p.keys, p.vals = p.keys[:0], p.vals[:0]
	var v any
	var err error
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '{' {
		err = p.index()
		v = &p.obj
	} else {
		v, err = p.value()
	}
	if err == nil {
		p.skipSpace()
		if p.i < len(p.s) {
			err = p.syntaxError("after top-level value")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("value is not JSON: %w", err)
	}
	return v, nil
}

// release drops the references into the last value parsed.
func (p *jsonParser) release() {
	p.s = ""
	p.obj.reset(p)
	clear(p.obj.keys[:cap(p.obj.keys)])
	clear(p.keys[:cap(p.keys)])
}

func (p *jsonParser) syntaxError(context string) error {
	if p.i >= len(p.s) {
		return errJSONEnd
	}
	return fmt.Errorf("invalid character %q at offset %d %s", p.s[p.i], p.i, context)
}

func (p *jsonParser) skipSpace() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// index scans the object at p.i into p.obj, validating field values without
// decoding them.
func (p *jsonParser) index() error {
	o := &p.obj
	o.reset(p)
	p.i++ // {
	p.depth = 1
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return nil
	}
	for {
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return p.syntaxError("looking for beginning of object key string")
		}
		k, err := p.str()
		if err != nil {
			return err
		}
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return p.syntaxError("after object key")
		}
		p.i++
		p.skipSpace()
		start := p.i
		if err := p.skip(); err != nil {
			return err
		}
		o.keys = append(o.keys, k)
		o.spans = append(o.spans, span{start, p.i})
		p.skipSpace()
		if p.i >= len(p.s) {
			return errJSONEnd
		}
		if c := p.s[p.i]; c == ',' {
			p.i++
			continue
		} else if c != '}' {
			return p.syntaxError("after object key:value pair")
		}
		p.i++
		o.vals = append(o.vals[:0], make([]ref.Val, len(o.keys))...)
		return nil
	}
}

// skip validates the value at p.i and moves past it.
func (p *jsonParser) skip() error {
	if p.i >= len(p.s) {
		return errJSONEnd
	}
	switch c := p.s[p.i]; c {
	case '{', '[':
		if p.depth++; p.depth > maxJSONDepth {
			return errors.New("exceeded max depth")
		}
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		p.i++
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == end {
			p.i++
			p.depth--
			return nil
		}
		for {
			p.skipSpace()
			if end == '}' {
				if p.i >= len(p.s) || p.s[p.i] != '"' {
					return p.syntaxError("looking for beginning of object key string")
				}
				if err := p.skipString(); err != nil {
					return err
				}
				p.skipSpace()
				if p.i >= len(p.s) || p.s[p.i] != ':' {
					return p.syntaxError("after object key")
				}
				p.i++
				p.skipSpace()
			}
			if err := p.skip(); err != nil {
				return err
			}
			p.skipSpace()
			if p.i >= len(p.s) {
				return errJSONEnd
			}
			if c := p.s[p.i]; c == ',' {
				p.i++
				continue
			} else if c != end {
				if end == '}' {
					return p.syntaxError("after object key:value pair")
				}
				return p.syntaxError("after array element")
			}
			p.i++
			p.depth--
			return nil
		}
	case '"':
		return p.skipString()
	case 't':
		return p.literal("true")
	case 'f':
		return p.literal("false")
	case 'n':
		return p.literal("null")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			start, digits, integer, err := p.scanNumber()
			if err != nil {
				return err
			}
			// Only an exponent or a very long number can be out of range.
			if !integer || p.i-digits > 300 {
				_, err = p.numberValue(start, digits, integer)
			}
			return err
		}
		return p.syntaxError("looking for beginning of value")
	}
}

// skipString validates the string at p.i (on its opening quote).
func (p *jsonParser) skipString() error {
	p.i++
	for p.i < len(p.s) {
		for p.i < len(p.s) && plainByte[p.s[p.i]] {
			p.i++
		}
		if p.i >= len(p.s) {
			break
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return nil
		case c < 0x20:
			return p.syntaxError("in string literal")
		case c == '\\':
			p.i++
			if p.i >= len(p.s) {
				return errJSONEnd
			}
			switch p.s[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if _, ok := p.hex4(p.i + 1); !ok {
					return p.syntaxError("in \\u hexadecimal character escape")
				}
				p.i += 4
			default:
				return p.syntaxError("in string escape code")
			}
		}
		p.i++
	}
	return errJSONEnd
}

// value decodes the value at p.i.
func (p *jsonParser) value() (any, error) {
	p.skipSpace()
	if p.i >= len(p.s) {
		return nil, errJSONEnd
	}
	switch c := p.s[p.i]; c {
	case '{':
		return p.object()
	case '[':
		return p.array()
	case '"':
		return p.str()
	case 't':
		return true, p.literal("true")
	case 'f':
		return false, p.literal("false")
	case 'n':
		return nil, p.literal("null")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			start, digits, integer, err := p.scanNumber()
			if err != nil {
				return nil, err
			}
			return p.numberValue(start, digits, integer)
		}
		return nil, p.syntaxError("looking for beginning of value")
	}
}

func (p *jsonParser) literal(lit string) error {
	for j := 0; j < len(lit); j++ {
		if p.i >= len(p.s) || p.s[p.i] != lit[j] {
			return p.syntaxError("in literal " + lit)
		}
		p.i++
	}
	return nil
}

func (p *jsonParser) object() (any, error) {
	if p.depth++; p.depth > maxJSONDepth {
		return nil, errors.New("exceeded max depth")
	}
	p.i++ // {
	// Fields go on the scratch stacks first so that the map is made at its
	// final size.
	base := len(p.keys)
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		p.depth--
		return map[string]any{}, nil
	}
	for {
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return nil, p.syntaxError("looking for beginning of object key string")
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, p.syntaxError("after object key")
		}
		p.i++
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.keys = append(p.keys, k)
		p.vals = append(p.vals, v)
		p.skipSpace()
		if p.i >= len(p.s) {
			return nil, errJSONEnd
		}
		if c := p.s[p.i]; c == ',' {
			p.i++
			continue
		} else if c != '}' {
			return nil, p.syntaxError("after object key:value pair")
		}
		p.i++
		break
	}
	keys, vals := p.keys[base:], p.vals[base:]
	m := make(map[string]any, len(keys))
	for j, k := range keys {
		m[k] = vals[j] // the last of duplicate keys wins, as in encoding/json
	}
	clear(vals)
	p.keys, p.vals = p.keys[:base], p.vals[:base]
	p.depth--
	return m, nil
}

func (p *jsonParser) array() (any, error) {
	if p.depth++; p.depth > maxJSONDepth {
		return nil, errors.New("exceeded max depth")
	}
	p.i++ // [
	// Elements share the value stack with object fields; a placeholder key
	// keeps the two stacks aligned.
	base := len(p.vals)
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		p.depth--
		return []any{}, nil
	}
	for {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.keys = append(p.keys, "")
		p.vals = append(p.vals, v)
		p.skipSpace()
		if p.i >= len(p.s) {
			return nil, errJSONEnd
		}
		if c := p.s[p.i]; c == ',' {
			p.i++
			continue
		} else if c != ']' {
			return nil, p.syntaxError("after array element")
		}
		p.i++
		break
	}
	l := make([]any, len(p.vals)-base)
	copy(l, p.vals[base:])
	clear(p.vals[base:])
	p.keys, p.vals = p.keys[:base], p.vals[:base]
	p.depth--
	return l, nil
}

// plainByte tells the bytes a string scan can pass over: not a quote, a
// backslash or a control character.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainASCII is plainByte without the bytes of multi-byte UTF-8 sequences,
// which str must check.
var plainASCII = func() (t [256]bool) {
	copy(t[:utf8.RuneSelf], plainByte[:utf8.RuneSelf])
	return t
}()

// str decodes the string at p.i (on its opening quote). A string without
// escapes or non-ASCII bytes is a substring of p.s: no allocation.
func (p *jsonParser) str() (string, error) {
	p.i++ // "
	start := p.i
	for p.i < len(p.s) {
		for p.i < len(p.s) && plainASCII[p.s[p.i]] {
			p.i++
		}
		if p.i >= len(p.s) {
			break
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return p.s[start : p.i-1], nil
		case c == '\\' || c >= utf8.RuneSelf:
			return p.strSlow(start)
		case c < 0x20:
			return "", p.syntaxError("in string literal")
		}
		p.i++
	}
	return "", errJSONEnd
}

// strSlow decodes escapes and replaces invalid UTF-8 with U+FFFD, as
// encoding/json does.
func (p *jsonParser) strSlow(start int) (string, error) {
	b := make([]byte, 0, p.i-start+16)
	b = append(b, p.s[start:p.i]...)
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return string(b), nil
		case c < 0x20:
			return "", p.syntaxError("in string literal")
		case c == '\\':
			p.i++
			if p.i >= len(p.s) {
				return "", errJSONEnd
			}
			switch e := p.s[p.i]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := p.hex4(p.i + 1)
				if !ok {
					return "", p.syntaxError("in \\u hexadecimal character escape")
				}
				p.i += 4
				if utf16.IsSurrogate(r) {
					r2, ok := rune(-1), false
					if p.i+2 < len(p.s) && p.s[p.i+1] == '\\' && p.s[p.i+2] == 'u' {
						r2, ok = p.hex4(p.i + 3)
					}
					if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
						p.i += 6
						r = dec
					} else {
						r = utf8.RuneError
					}
				}
				b = utf8.AppendRune(b, r)
			default:
				return "", p.syntaxError("in string escape code")
			}
			p.i++
		case c < utf8.RuneSelf:
			b = append(b, c)
			p.i++
		default:
			r, size := utf8.DecodeRuneInString(p.s[p.i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, "\uFFFD"...)
			} else {
				b = append(b, p.s[p.i:p.i+size]...)
			}
			p.i += size
		}
	}
	return "", errJSONEnd
}

func (p *jsonParser) hex4(at int) (rune, bool) {
	if at+4 > len(p.s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(p.s[at : at+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// scanNumber validates the number at p.i and moves past it; digits is where
// its integer digits start, integer whether it has no fraction or exponent.
func (p *jsonParser) scanNumber() (start, digits int, integer bool, err error) {
	start = p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	digits = p.i
	switch {
	case p.i < len(p.s) && p.s[p.i] == '0':
		p.i++
	case p.i < len(p.s) && p.s[p.i] >= '1' && p.s[p.i] <= '9':
		p.skipDigits()
	default:
		return 0, 0, false, p.syntaxError("in numeric literal")
	}
	integer = true
	if p.i < len(p.s) && p.s[p.i] == '.' {
		integer = false
		p.i++
		if p.i >= len(p.s) || p.s[p.i] < '0' || p.s[p.i] > '9' {
			return 0, 0, false, p.syntaxError("after decimal point in numeric literal")
		}
		p.skipDigits()
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		integer = false
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if p.i >= len(p.s) || p.s[p.i] < '0' || p.s[p.i] > '9' {
			return 0, 0, false, p.syntaxError("in exponent of numeric literal")
		}
		p.skipDigits()
	}
	return start, digits, integer, nil
}

func (p *jsonParser) skipDigits() {
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
}

// numberValue converts the number scanned from start to p.i. Integers of up to
// 15 digits are exact in a float64 and converted without strconv.
func (p *jsonParser) numberValue(start, digits int, integer bool) (float64, error) {
	if integer && p.i-digits <= 15 {
		var n int64
		for _, c := range []byte(p.s[digits:p.i]) {
			n = n*10 + int64(c-'0')
		}
		f := float64(n)
		if start != digits {
			f = -f // -0 stays negative zero, as in encoding/json
		}
		return f, nil
	}
	f, err := strconv.ParseFloat(p.s[start:p.i], 64)
	if err != nil {
		return 0, fmt.Errorf("number %s out of range", p.s[start:p.i])
	}
	return f, nil
}

// span is where a field's value lies in the parsed text.
type span struct{ start, end int }

// jsonObject is a top-level JSON object whose fields are decoded when read.
// Field lookups (json.a, has(json.a), 'a' in json) scan its few keys; anything
// that needs the whole object (iteration, size, equality, conversion) decodes
// it once into a CEL map and asks that.
type jsonObject struct {
	p     *jsonParser
	src   string
	keys  []string
	spans []span
	vals  []ref.Val // decoded field values, nil until read
	full  traits.Mapper
}

var _ traits.Mapper = (*jsonObject)(nil)

func (o *jsonObject) reset(p *jsonParser) {
	o.p, o.src, o.full = p, p.s, nil
	clear(o.vals)
	o.keys, o.spans, o.vals = o.keys[:0], o.spans[:0], o.vals[:0]
}

// decode decodes the text of sp; it was validated by the scan.
func (o *jsonObject) decode(sp span) any {
	p := o.p
	p.s, p.i, p.depth = o.src, sp.start, 1
	v, err := p.value()
	if err != nil {
		return types.NewErr("json: %v", err)
	}
	return v
}

// field decodes the value of field i into a CEL value; scalars go straight to
// CEL types rather than through an any and the adapter's reflection.
func (o *jsonObject) field(i int) ref.Val {
	sp := o.spans[i]
	p := o.p
	p.s, p.i, p.depth = o.src, sp.start, 1
	switch c := p.s[p.i]; {
	case c == '"':
		if s, err := p.str(); err == nil {
			return types.String(s)
		}
	case c == '-' || c >= '0' && c <= '9':
		start, digits, integer, err := p.scanNumber()
		if err == nil {
			if f, err := p.numberValue(start, digits, integer); err == nil {
				return types.Double(f)
			}
		}
	case c == 't':
		return types.True
	case c == 'f':
		return types.False
	case c == 'n':
		return types.NullValue
	}
	return types.DefaultTypeAdapter.NativeToValue(o.decode(sp))
}

// whole decodes the whole object into a CEL map, once.
func (o *jsonObject) whole() traits.Mapper {
	if o.full == nil {
		m := make(map[string]any, len(o.keys))
		for i, k := range o.keys {
			m[k] = o.decode(o.spans[i])
		}
		o.full = types.NewStringInterfaceMap(types.DefaultTypeAdapter, m)
	}
	return o.full
}

// Find implements traits.Mapper.
func (o *jsonObject) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return o.whole().Find(key)
	}
	// From the end: the last of duplicate keys wins, as in encoding/json.
	for i := len(o.keys) - 1; i >= 0; i-- {
		if o.keys[i] == string(k) {
			if o.vals[i] == nil {
				o.vals[i] = o.field(i)
			}
			return o.vals[i], true
		}
	}
	return nil, false
}

// Get implements traits.Indexer.
func (o *jsonObject) Get(key ref.Val) ref.Val {
	if v, found := o.Find(key); found {
		return v
	}
	return o.whole().Get(key)
}

// Contains implements traits.Container.
func (o *jsonObject) Contains(key ref.Val) ref.Val {
	if _, found := o.Find(key); found {
		return types.True
	}
	return o.whole().Contains(key)
}

func (o *jsonObject) ConvertToNative(t reflect.Type) (any, error) {
	return o.whole().ConvertToNative(t)
}
func (o *jsonObject) ConvertToType(t ref.Type) ref.Val { return o.whole().ConvertToType(t) }
func (o *jsonObject) Equal(other ref.Val) ref.Val      { return o.whole().Equal(other) }
func (o *jsonObject) Type() ref.Type                   { return types.MapType }
func (o *jsonObject) Value() any                       { return o.whole().Value() }
func (o *jsonObject) Iterator() traits.Iterator        { return o.whole().Iterator() }
func (o *jsonObject) Size() ref.Val                    { return o.whole().Size() }
func (o *jsonObject) IsZeroValue() bool                { return len(o.keys) == 0 }
func (o *jsonObject) String() string                   { return fmt.Sprint(o.whole()) }
