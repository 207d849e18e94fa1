package worker

import (
	"crypto/tls"
	"strings"
	"testing"
)

func TestConfigTokenNeedsTLSOffLoopback(t *testing.T) {
	for _, tc := range []struct {
		coords  []string
		tls     bool
		wantErr string
	}{
		{coords: []string{"127.0.0.1:7070", "localhost:7071", "[::1]:7072"}},
		{coords: []string{"127.0.0.1:7070", "10.0.0.2:7070"}, wantErr: "a token is sent only over TLS to coordinator 10.0.0.2:7070"},
		{coords: []string{"10.0.0.2:7070"}, tls: true},
	} {
		cfg := DefaultConfig()
		cfg.Coordinators = tc.coords
		cfg.Token = "secret-secret-secret"
		if tc.tls {
			cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		err := cfg.Validate()
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("coordinators %v, TLS %v: err = %v, want %q", tc.coords, tc.tls, err, tc.wantErr)
		}
	}
}
