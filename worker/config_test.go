package worker

import (
	"strings"
	"testing"
)

func TestConfigLabelsAndHost(t *testing.T) {
	for _, tc := range []struct {
		labels  []string
		wantErr string
	}{
		{labels: nil},
		{labels: []string{"gpu", "zone=eu-1", "a.b_c:d-e"}},
		{labels: []string{"gpu", "two words"}, wantErr: `label "two words" must be`},
		{labels: []string{""}, wantErr: `label "" must be`},
		{labels: []string{strings.Repeat("x", 64)}, wantErr: "must be 1 to 63"},
	} {
		cfg := DefaultConfig()
		cfg.Coordinators = []string{"127.0.0.1:7070"}
		cfg.Labels = tc.labels
		_, err := New(cfg)
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("labels %q: err = %v, want %q", tc.labels, err, tc.wantErr)
		}
	}
	cfg := DefaultConfig()
	cfg.Coordinators = []string{"127.0.0.1:7070"}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.Host == "" {
		t.Errorf("host is empty, want the hostname by default")
	}
	cfg.Host = "broker-1.example"
	if w, err = New(cfg); err != nil || w.cfg.Host != "broker-1.example" {
		t.Errorf("host = %q, %v, want broker-1.example", w.cfg.Host, err)
	}
}
