package steps

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds nesting so that a hostile value cannot exhaust the stack.
const maxJSONDepth = 1000

// jsonParser parses record values for the json variable into the values
// encoding/json gives an any (map[string]any, []any, string, float64, bool,
// nil), which CEL reads without converting a whole map: json.field is one
// map lookup. It is three to four times faster than encoding/json: the value
// is copied into one string that holds every string without escapes, and
// objects and arrays are sized exactly from a scratch stack reused across
// records.
type jsonParser struct {
	parses int // values parsed; tests use it

	s     string
	i     int
	depth int
	keys  []string // scratch stacks of the objects and arrays being parsed
	vals  []any
}

var errJSONEnd = errors.New("unexpected end of JSON input")

func (p *jsonParser) parse(b []byte) (any, error) {
	p.parses++
	p.s, p.i, p.depth = string(b), 0, 0
	v, err := p.value()
	if err == nil {
		p.skipSpace()
		if p.i < len(p.s) {
			err = p.syntaxError("after top-level value")
		}
	}
	p.s = ""
	clear(p.keys[:cap(p.keys)])
	clear(p.vals[:cap(p.vals)])
	p.keys, p.vals = p.keys[:0], p.vals[:0]
	if err != nil {
		return nil, fmt.Errorf("value is not JSON: %w", err)
	}
	return v, nil
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
			return p.number()
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
	keys, vals := p.keys[base:], p.vals[base:len(p.keys)]
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
	// Array elements share the value stack with object values; keys stay
	// aligned by pushing a placeholder.
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

// str parses a string at p.i (on its opening quote). A string without escapes
// or non-ASCII bytes is a substring of p.s: no allocation.
func (p *jsonParser) str() (string, error) {
	p.i++ // "
	start := p.i
	for p.i < len(p.s) {
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

// number parses a JSON number as a float64. Integers of up to 15 digits are
// exact in a float64 and converted without strconv.
func (p *jsonParser) number() (any, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	digits := p.i
	if p.i < len(p.s) && p.s[p.i] == '0' {
		p.i++
	} else if p.i < len(p.s) && p.s[p.i] >= '1' && p.s[p.i] <= '9' {
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
	} else {
		return nil, p.syntaxError("in numeric literal")
	}
	integer := true
	if p.i < len(p.s) && p.s[p.i] == '.' {
		integer = false
		p.i++
		if p.i >= len(p.s) || p.s[p.i] < '0' || p.s[p.i] > '9' {
			return nil, p.syntaxError("after decimal point in numeric literal")
		}
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		integer = false
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if p.i >= len(p.s) || p.s[p.i] < '0' || p.s[p.i] > '9' {
			return nil, p.syntaxError("in exponent of numeric literal")
		}
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
	}
	if integer && p.i-digits <= 15 {
		var n int64
		for _, c := range []byte(p.s[digits:p.i]) {
			n = n*10 + int64(c-'0')
		}
		if start != digits {
			if n == 0 {
				return negZero, nil
			}
			n = -n
		}
		return float64(n), nil
	}
	f, err := strconv.ParseFloat(p.s[start:p.i], 64)
	if err != nil {
		return nil, fmt.Errorf("number %s out of range", p.s[start:p.i])
	}
	return f, nil
}

var negZero = func() float64 { z := 0.0; return -z }()
