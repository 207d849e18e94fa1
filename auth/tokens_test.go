package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseTokens(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		wantErr string // substring; "" for no error
	}{
		{"ok", "# role name token\n\nadmin alice aaaaaaaaaaaaaaaaaaaa\n  worker\tw1\tbbbbbbbbbbbbbbbbbbbb  \n", ""},
		{"two fields", "admin alice aaaaaaaaaaaaaaaaaaaa\nviewer bob\n", "line 2: want 3 fields"},
		{"four fields", "admin alice aaaa aaaaaaaaaaaaaaaa\n", "line 1: want 3 fields"},
		{"bad role", "\nroot alice aaaaaaaaaaaaaaaaaaaa\n", `line 2: unknown role "root"`},
		{"short token", "viewer bob short\n", "line 1: the token of bob is 5 characters, below the 16"},
		{"duplicate", "admin a aaaaaaaaaaaaaaaaaaaa\nviewer b aaaaaaaaaaaaaaaaaaaa\n", "line 2: the token of b is the token of line 1"},
		{"empty", "# nothing\n", "no tokens"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTokens(strings.NewReader(tc.file))
			if tc.wantErr == "" && err != nil {
				t.Fatalf("ParseTokens: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("ParseTokens = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestTokensLookup(t *testing.T) {
	tok, err := ParseTokens(strings.NewReader("admin alice aaaaaaaaaaaaaaaaaaaa\nworker w1 bbbbbbbbbbbbbbbbbbbb\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		token string
		want  Principal
		ok    bool
	}{
		{"aaaaaaaaaaaaaaaaaaaa", Principal{Name: "alice", Role: RoleAdmin, Method: "token"}, true},
		{"bbbbbbbbbbbbbbbbbbbb", Principal{Name: "w1", Role: RoleWorker, Method: "token"}, true},
		{"aaaaaaaaaaaaaaaaaaab", Principal{}, false},
		{"aaaaaaaaaaaaaaaaaaa", Principal{}, false},
		{"", Principal{}, false},
	}
	for _, tc := range tests {
		p, ok := tok.Lookup(tc.token)
		if ok != tc.ok || p != tc.want {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v, %v", tc.token, p, ok, tc.want, tc.ok)
		}
	}
}

func TestLoadTokensNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte("admin alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadTokens(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("LoadTokens = %v, want the file and line named", err)
	}
}
