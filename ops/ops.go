// Package ops serves a process's operations endpoints over HTTP: Prometheus
// metrics at /metrics, liveness at /healthz and readiness at /readyz. Other
// handlers (the web UI) are mounted on the same listener with Handle.
package ops

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures a Server.
type Config struct {
	// Addr is the listen address, e.g. 127.0.0.1:7071.
	Addr string
	// Gatherer is what /metrics serves: the process's own registry, never
	// the global one.
	Gatherer prometheus.Gatherer
	// Ready says whether the process can do its work; /readyz answers 503
	// with the error's text while it returns one. Nil: always ready.
	Ready func(ctx context.Context) error
	// TLS, if set, serves HTTPS with the process's server certificate (the
	// coordinator's gRPC one). A client certificate is checked when one is
	// given but never required: probes and scrapers have none, and the web
	// UI's API asks for a token (or that certificate) itself.
	TLS    *tls.Config
	Logger hclog.Logger
}

// readyTimeout bounds one readiness check: a probe must not hang on an
// etcd that does not answer.
const readyTimeout = 2 * time.Second

// Server is the operations HTTP server.
type Server struct {
	cfg Config
	mux *http.ServeMux

	mu  sync.Mutex
	lis net.Listener
}

// New returns a server; Listen and Serve (or Run) start it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:          promLogger{cfg.Logger},
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s
}

// Handle mounts h at pattern (http.ServeMux syntax), beside the built-in
// endpoints; call it before Serve.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler is the server's mux (tests).
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
	}
	_, _ = fmt.Fprintln(w, "ready")
}

// Listen opens the listener, so that a wrong address fails at startup.
func (s *Server) Listen() error {
	lis, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("ops: listen %s: %w", s.cfg.Addr, err)
	}
	if s.cfg.TLS != nil {
		tc := s.cfg.TLS.Clone()
		if tc.ClientAuth == tls.RequireAndVerifyClientCert {
			tc.ClientAuth = tls.VerifyClientCertIfGiven
		}
		lis = tls.NewListener(lis, tc)
	}
	s.mu.Lock()
	s.lis = lis
	s.mu.Unlock()
	return nil
}

// Addr is the address listened on, once Listen returned.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return ""
	}
	return s.lis.Addr().String()
}

// Serve serves on the listener Listen opened until ctx ends, then shuts
// down, giving requests in flight a few seconds.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	lis := s.lis
	s.mu.Unlock()
	if lis == nil {
		return errors.New("ops: Serve before Listen")
	}
	// Requests (a web UI's event streams) end when serving does, rather
	// than hold Shutdown for its whole grace period.
	baseCtx, endRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer endRequests()
	hs := &http.Server{
		Handler:     s.mux,
		BaseContext: func(net.Listener) context.Context { return baseCtx },
		// A slow or idle client must not hold a connection forever; the
		// write timeout leaves room for a large scrape and for a web UI's
		// server-sent events, which set their own deadlines.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          s.cfg.Logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	s.cfg.Logger.Info("ops HTTP listener serving", "http_addr", lis.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("ops: serve: %w", err)
	case <-ctx.Done():
	}
	endRequests()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	<-errc
	return nil
}

// Run listens and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// promLogger sends promhttp's errors (a collector that failed) to hclog.
type promLogger struct{ l hclog.Logger }

func (p promLogger) Println(v ...any) { p.l.Warn("metrics: " + fmt.Sprint(v...)) }
