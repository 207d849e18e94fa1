package ops

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-stream/sluice/auth"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_things_total", Help: "Things."})
	c.Add(3)
	reg.MustRegister(c)
	ready := errors.New("standby without a leader")
	s := New(Config{Gatherer: reg, Ready: func(context.Context) error { return ready }})
	s.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ui") }))

	tests := []struct {
		name     string
		path     string
		ready    error
		wantCode int
		wantBody string
	}{
		{"healthz", "/healthz", nil, http.StatusOK, "ok"},
		{"healthz while not ready", "/healthz", ready, http.StatusOK, "ok"},
		{"readyz", "/readyz", nil, http.StatusOK, "ready"},
		{"readyz not ready", "/readyz", ready, http.StatusServiceUnavailable, "not ready: standby without a leader"},
		{"metrics from the registry", "/metrics", nil, http.StatusOK, "sluice_test_things_total 3"},
		{"a mounted handler", "/", nil, http.StatusOK, "ui"},
		{"unknown path", "/nope", nil, http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready = tt.ready
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
			}
		})
	}
}

// TestMetricsNotGlobal: the server serves the registry it is given, not
// the default one (whose Go collector a test binary always has).
func TestMetricsNotGlobal(t *testing.T) {
	s := New(Config{Gatherer: prometheus.NewRegistry()})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if strings.Contains(rec.Body.String(), "go_goroutines") {
		t.Errorf("/metrics serves the global registry:\n%s", rec.Body.String())
	}
}

func TestListenError(t *testing.T) {
	s := New(Config{Addr: "256.0.0.1:1"})
	err := s.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "ops: listen 256.0.0.1:1") {
		t.Errorf("Run on a bad address = %v, want an error naming it", err)
	}
}

// With the coordinator's mutual-TLS config the listener serves HTTPS, and
// a client without a certificate (a probe, a scraper) still gets through.
func TestTLSWithoutClientCertificate(t *testing.T) {
	certs, err := auth.EnsureDevCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, err := auth.ServerTLS(certs.ServerCert(), certs.ServerKey(), certs.CA())
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Addr: "127.0.0.1:0", TLS: serverTLS})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	clientTLS, err := auth.ClientTLS(certs.CA(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	resp, err := hc.Get("https://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz over TLS without a client certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz: %s", resp.Status)
	}
	if resp, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil && resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		t.Errorf("plain HTTP on the TLS listener answered 200")
	}
}
