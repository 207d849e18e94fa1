package steps

import (
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// appendScalar appends the text of a string, bytes, number or bool: the forms
// an aggregate key may take.
func appendScalar(dst []byte, v ref.Val) ([]byte, error) {
	switch v := v.(type) {
	case types.String:
		return append(dst, v...), nil
	case types.Bytes:
		return append(dst, v...), nil
	case types.Int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case types.Uint:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case types.Double:
		return appendFloat(dst, float64(v)), nil
	case types.Bool:
		return strconv.AppendBool(dst, bool(v)), nil
	}
	return dst, fmt.Errorf("expression gave %s, want a string, bytes, number or bool", typeName(v))
}

// appendValue appends the bytes a map step makes of a result: scalars as
// appendScalar, null as nothing, lists and maps as JSON, timestamps and
// durations as CEL formats them.
func appendValue(dst []byte, v ref.Val) ([]byte, error) {
	switch v := v.(type) {
	case types.String, types.Bytes, types.Int, types.Uint, types.Double, types.Bool:
		return appendScalar(dst, v)
	case types.Null:
		return dst, nil
	case types.Timestamp, types.Duration:
		return appendString(dst, v)
	case traits.Lister, traits.Mapper:
		return appendJSON(dst, v)
	}
	return dst, fmt.Errorf("expression gave %s, want %s", typeName(v), mapWant)
}

func appendString(dst []byte, v ref.Val) ([]byte, error) {
	s, ok := v.ConvertToType(types.StringType).(types.String)
	if !ok {
		return dst, fmt.Errorf("cannot format %s", typeName(v))
	}
	return append(dst, s...), nil
}

// appendFloat formats f as encoding/json and JavaScript do: no exponent
// between 1e-6 and 1e21, so that 1234567 stays 1234567 (strconv's 'g' would
// write 1.234567e+06).
func appendFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// e-07 -> e-7, as encoding/json writes it.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// appendJSON writes v as JSON: map keys sorted, bytes as base64, timestamps and
// durations as strings.
func appendJSON(dst []byte, v ref.Val) ([]byte, error) {
	switch v := v.(type) {
	case types.Null:
		return append(dst, "null"...), nil
	case types.Bool:
		return strconv.AppendBool(dst, bool(v)), nil
	case types.Int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case types.Uint:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case types.Double:
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return dst, fmt.Errorf("cannot write %v as JSON", f)
		}
		return appendFloat(dst, f), nil
	case types.String:
		return appendJSONString(dst, string(v)), nil
	case types.Bytes:
		return appendJSONString(dst, base64.StdEncoding.EncodeToString(v)), nil
	case types.Timestamp, types.Duration:
		s, ok := v.ConvertToType(types.StringType).(types.String)
		if !ok {
			return dst, fmt.Errorf("cannot format %s", typeName(v))
		}
		return appendJSONString(dst, string(s)), nil
	case traits.Lister:
		dst = append(dst, '[')
		first := true
		for it := v.Iterator(); it.HasNext() == types.True; {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			var err error
			if dst, err = appendJSON(dst, it.Next()); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case traits.Mapper:
		type entry struct {
			key string
			val ref.Val
		}
		var entries []entry
		for it := v.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			ks, err := appendScalar(nil, k)
			if err != nil {
				return dst, fmt.Errorf("map key: %w", err)
			}
			entries = append(entries, entry{string(ks), v.Get(k)})
		}
		slices.SortFunc(entries, func(a, b entry) int {
			switch {
			case a.key < b.key:
				return -1
			case a.key > b.key:
				return 1
			}
			return 0
		})
		dst = append(dst, '{')
		for i, e := range entries {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, e.key)
			dst = append(dst, ':')
			var err error
			if dst, err = appendJSON(dst, e.val); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	}
	return dst, fmt.Errorf("cannot write %s as JSON", typeName(v))
}

const hexDigits = "0123456789abcdef"

func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// toFloat returns the number an aggregate value gave.
func toFloat(v ref.Val) (float64, error) {
	switch v := v.(type) {
	case types.Double:
		return float64(v), nil
	case types.Int:
		return float64(v), nil
	case types.Uint:
		return float64(v), nil
	}
	return 0, fmt.Errorf("expression gave %s, want a number", typeName(v))
}

func typeName(v ref.Val) string {
	if v == nil {
		return "nothing"
	}
	return v.Type().TypeName()
}
