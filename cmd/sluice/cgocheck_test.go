package main

import (
	"slices"
	"testing"
)

func TestNoCgoCheckEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
		want    []string
		restart bool
	}{
		{"no GODEBUG", []string{"HOME=/root"}, []string{"HOME=/root", "GODEBUG=cgocheck=0"}, true},
		{"other settings kept", []string{"GODEBUG=gctrace=1", "A=b"}, []string{"A=b", "GODEBUG=gctrace=1,cgocheck=0"}, true},
		{"empty GODEBUG", []string{"GODEBUG="}, []string{"GODEBUG=cgocheck=0"}, true},
		{"cgocheck set by the user", []string{"GODEBUG=cgocheck=1"}, []string{"GODEBUG=cgocheck=1"}, false},
		{"already restarted", []string{"X=1", "GODEBUG=gctrace=1,cgocheck=0"}, []string{"X=1", "GODEBUG=gctrace=1,cgocheck=0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, restart := noCgoCheckEnv(tc.environ)
			if restart != tc.restart || !slices.Equal(got, tc.want) {
				t.Errorf("noCgoCheckEnv(%q) = %q, %v; want %q, %v", tc.environ, got, restart, tc.want, tc.restart)
			}
		})
	}
}

func TestReadsKafka(t *testing.T) {
	for args, want := range map[string]bool{"worker": true, "dev": true, "coordinator": false, "submit": false, "": false, "--help": false} {
		var argv []string
		if args != "" {
			argv = []string{args, "--flag"}
		}
		if got := readsKafka(argv); got != want {
			t.Errorf("readsKafka(%q) = %v, want %v", argv, got, want)
		}
	}
}
