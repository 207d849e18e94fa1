// Package webui serves Sluice's web UI: an embedded single-page app (jobs,
// a job's batches with charts, workers) and the small JSON and
// server-sent-events API under /api/ it reads. It reads through the
// coordinator's JobService in-process, so it works on standbys too, and
// checks callers with the same authenticator and role table as gRPC.
package webui

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/coordinator"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

//go:embed static
var static embed.FS

// Cluster is what the UI shows of the coordinator it runs in;
// *coordinator.Coordinator is one.
type Cluster interface {
	IsLeader() bool
	// Leader is the leader's advertised address.
	Leader(ctx context.Context) (string, error)
	// Workers are the workers connected to this coordinator (none on a
	// standby).
	Workers() []coordinator.WorkerStatus
}

// Config configures the UI.
type Config struct {
	// Jobs is the coordinator's JobService (Coordinator.JobService());
	// required.
	Jobs sluicev1.JobServiceServer
	// Cluster, if set, feeds the workers page and the leader badge.
	Cluster Cluster
	// Auth, if set, requires a bearer token (or a client certificate on a
	// TLS listener) on every /api/ request: a viewer's for reads, an
	// admin's for stop and resume. Nil leaves the API open, like gRPC.
	Auth   *auth.Authenticator
	Logger hclog.Logger
	// KeepAlive is how often an idle event stream gets a comment line, so
	// proxies do not close it; default 15s.
	KeepAlive time.Duration
}

// New returns the UI's handler: the app at /, its files under /static/ and
// the API under /api/. Event streams last until the client leaves or the
// request's context ends: give the http.Server a BaseContext that ends at
// shutdown, or Shutdown waits for every open page.
func New(cfg Config) http.Handler {
	if cfg.Jobs == nil {
		panic("webui: Config.Jobs is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	s := &server{cfg: cfg, log: cfg.Logger.Named("webui")}
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	fileServer := http.StripPrefix("/static/", http.FileServerFS(files))
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		fileServer.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		http.ServeFileFS(w, r, files, "index.html")
	})
	mux.HandleFunc("GET /api/cluster", s.cluster)
	mux.HandleFunc("GET /api/workers", s.workers)
	mux.HandleFunc("GET /api/jobs", s.jobs)
	mux.HandleFunc("GET /api/jobs/{name}", s.job)
	mux.HandleFunc("GET /api/jobs/{name}/events", s.events)
	mux.HandleFunc("POST /api/jobs/{name}/stop", s.stop)
	mux.HandleFunc("POST /api/jobs/{name}/resume", s.resume)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API: "+r.Method+" "+r.URL.Path)
	})
	return secureHeaders(mux)
}

// csp keeps the page to its own files: no inline script, nothing fetched
// from elsewhere.
const csp = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"

func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

type server struct {
	cfg Config
	log hclog.Logger
}

// Mount serves the UI of coordinator c at / of its operations listener
// (coordinator.Config.HTTPAddr), authorized by a like its gRPC API (nil:
// open, as gRPC is then). Call it before c.Run.
func Mount(c *coordinator.Coordinator, a *auth.Authenticator, logger hclog.Logger) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	c.Handle("/", New(Config{Jobs: c.JobService(), Cluster: c, Auth: a, Logger: logger.Named("webui")}))
}
