package steps

import (
	"strings"
	"unicode/utf8"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// MaxErrorBytes bounds the text of a RecordError, Result.FirstError and
// ErrorText: CEL errors may quote record content, and an error travels in
// protobuf messages and etcd.
const MaxErrorBytes = 1024

// ErrorText returns err's message as it may travel in a protobuf string
// field: valid UTF-8 (see SafeText) and at most MaxErrorBytes long. The worker
// uses it for TaskResult.error, whatever the error's origin.
func ErrorText(err error) string {
	if err == nil {
		return ""
	}
	return SafeText(err.Error(), MaxErrorBytes)
}

// SafeText returns s as valid UTF-8 of at most maxBytes bytes (when maxBytes
// > 0): each byte that is not part of valid UTF-8 becomes the four characters
// \xNN, and a longer text is cut between two characters (or escapes) and ends
// with "…". It returns s itself when s is already valid and short enough.
func SafeText(s string, maxBytes int) string {
	valid := utf8.ValidString(s)
	if valid && (maxBytes <= 0 || len(s) <= maxBytes) {
		return s
	}
	if !valid {
		s = escapeInvalid(s)
	}
	if maxBytes <= 0 || len(s) <= maxBytes {
		return s
	}
	const ellipsis = "…"
	cut := max(maxBytes-len(ellipsis), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	// Not inside an escape: \xNN is 4 bytes from its backslash.
	if !valid {
		for i := max(cut-3, 0); i < cut; i++ {
			if s[i] == '\\' && i+4 > cut && strings.HasPrefix(s[i:], `\x`) {
				cut = i
				break
			}
		}
	}
	return s[:cut] + ellipsis
}

// escapeInvalid returns s with every byte that is not part of valid UTF-8
// written as \xNN; valid characters, backslashes included, stay as they are.
// The result is readable, not reversible: the exact bytes travel apart (as
// KeyAggregate.key_bytes).
func escapeInvalid(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString(`\x`)
			b.WriteByte(hexDigits[s[i]>>4])
			b.WriteByte(hexDigits[s[i]&0xf])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// newKeyAggregate returns an empty KeyAggregate for the exact key k: key is k
// when it is valid UTF-8 (a proto3 string must be), and otherwise a readable
// rendering with key_bytes holding k.
func newKeyAggregate(k string) *sluicev1.KeyAggregate {
	if utf8.ValidString(k) {
		return &sluicev1.KeyAggregate{Key: k}
	}
	return &sluicev1.KeyAggregate{Key: escapeInvalid(k), KeyBytes: []byte(k)}
}

// ExactKey returns the exact bytes of ka's key: key_bytes when set, else key.
// Two aggregates are of the same key exactly when their ExactKeys are equal;
// their key fields alone may be equal for different keys ("\xff" and the
// four characters \xff).
func ExactKey(ka *sluicev1.KeyAggregate) string {
	if b := ka.GetKeyBytes(); len(b) > 0 {
		return string(b)
	}
	return ka.GetKey()
}
