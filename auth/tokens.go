package auth

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"os"
	"strings"
)

// MinTokenLength is the shortest bearer token a token file may hold: a
// short token can be guessed.
const MinTokenLength = 16

// Tokens are the bearer tokens of a token file.
//
// The file has one token a line, as three fields separated by spaces or
// tabs: the role (admin, viewer or worker), the principal's name (a
// worker's is its worker id) and the token (at least MinTokenLength
// characters, no spaces). Blank lines and lines starting with # are
// ignored:
//
//	# role   name   token
//	admin    alice  3f0c9a8e6b2d4f7a91c5e0d8b7a6f5e4
//	worker   w1     9d8c7b6a5f4e3d2c1b0a99887766554433
type Tokens struct {
	entries []tokenEntry
}

type tokenEntry struct {
	hash [sha256.Size]byte
	p    Principal
}

// LoadTokens reads a token file.
func LoadTokens(file string) (*Tokens, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	t, err := ParseTokens(f)
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", file, err)
	}
	return t, nil
}

// ParseTokens reads the token file format (see Tokens).
func ParseTokens(r io.Reader) (*Tokens, error) {
	t := &Tokens{}
	seen := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want 3 fields, role name token, got %d", n, len(f))
		}
		role, err := ParseRole(f[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if len(f[2]) < MinTokenLength {
			return nil, fmt.Errorf("line %d: the token of %s is %d characters, below the %d required", n, f[1], len(f[2]), MinTokenLength)
		}
		h := sha256.Sum256([]byte(f[2]))
		if prev, dup := seen[h]; dup {
			return nil, fmt.Errorf("line %d: the token of %s is the token of line %d too", n, f[1], prev)
		}
		seen[h] = n
		t.entries = append(t.entries, tokenEntry{hash: h, p: Principal{Name: f[1], Role: role, Method: "token"}})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.entries) == 0 {
		return nil, fmt.Errorf("no tokens")
	}
	return t, nil
}

// Lookup returns the principal holding token. It compares the token with
// every entry in constant time, so the time taken says nothing about how
// much of it matched or which entry did.
func (t *Tokens) Lookup(token string) (Principal, bool) {
	h := sha256.Sum256([]byte(token))
	var found Principal
	match := 0
	for _, e := range t.entries {
		if subtle.ConstantTimeCompare(h[:], e.hash[:]) == 1 {
			found, match = e.p, 1
		}
	}
	return found, match == 1
}
