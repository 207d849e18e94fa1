// Package worker runs Sluice tasks: it dials the coordinator (workers open no
// inbound port), registers its slots, reads each task's offset range from
// Kafka, applies the job's steps and streams the result back.
package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/failpoint"
	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/ops"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// Config configures a Worker.
type Config struct {
	// Coordinators are the coordinator addresses; the worker connects to
	// whichever leads.
	Coordinators []string
	// ID is stable across restarts; default hostname-pid.
	ID string
	// Slots is how many tasks run at once; default 4.
	Slots int
	// ConsumerCacheSize is the capacity of the Kafka consumer cache; default 64.
	ConsumerCacheSize int
	// ConsumerMemory bounds, in bytes, the records all cached consumers
	// prefetch: each gets ConsumerMemory/ConsumerCacheSize, at least
	// kafkasrc.MinConsumerShare. Default 128 MiB (2 MiB per consumer).
	ConsumerMemory int64
	// Labels name this worker for fixed placement (placement.fixed
	// worker_label); each is 1 to 63 letters, digits, '.', '_', '-', '='
	// or ':'.
	Labels []string
	// Host is the host this worker runs on, matched against the partition
	// leaders' hosts by brokers placement; default os.Hostname().
	Host string
	// TLS, if set, dials the coordinators over TLS (auth.ClientTLS); with a
	// client certificate, its CommonName must be ID and its
	// OrganizationalUnit "worker".
	TLS *tls.Config
	// Token, if set, is sent as a bearer token on the stream; the token's
	// name must be ID. Without TLS it is sent only to loopback addresses.
	Token string
	// HTTPAddr, if set, is the address of the operations HTTP listener:
	// /metrics, /healthz and /readyz (ready: registered with a
	// coordinator). "" serves none.
	HTTPAddr string
	// Registry receives the worker's metrics; nil makes one, with the Go
	// runtime and process collectors.
	Registry *prometheus.Registry
	Logger   hclog.Logger
	// DialOptions are added to the gRPC dial (tests).
	DialOptions []grpc.DialOption
	// Failpoints may crash or freeze the worker for the fault-tolerance
	// tests: "mid-task" (after the first record of a task), "mid-txn" (output
	// in a Kafka transaction not yet committed), "after-sink-write" (output
	// written, result not yet reported).
	Failpoints failpoint.Set
	// BeforeResult, if set, runs when a task has finished, before its result
	// is sent (tests: a worker slow to report).
	BeforeResult func(task *sluicev1.Task)
	// BeforeCommit, if set, runs where the "mid-txn" failpoint is: a
	// transactional Kafka sink's output and offsets are in the transaction,
	// not committed (tests: a transaction held open in process).
	BeforeCommit func(task *sluicev1.Task)
}

// LabelPattern is what a worker label may be: the same rule the coordinator
// applies to placement.fixed[].worker_label.
const LabelPattern = `^[A-Za-z0-9._=:-]{1,63}$`

var labelRE = regexp.MustCompile(LabelPattern)

// ValidateLabel says what is wrong with a worker label, or nil.
func ValidateLabel(l string) error {
	if !labelRE.MatchString(l) {
		return fmt.Errorf("label %q must be 1 to 63 letters, digits, '.', '_', '-', '=' or ':'", l)
	}
	return nil
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Slots: 4, ConsumerCacheSize: 64, ConsumerMemory: kafkasrc.DefaultConsumerMemory, Logger: hclog.NewNullLogger()}
}

// Validate checks the config.
func (c *Config) Validate() error {
	if len(c.Coordinators) == 0 {
		return errors.New("worker: config: at least one coordinator address is required")
	}
	if c.Slots < 1 {
		return fmt.Errorf("worker: config: slots %d is below 1", c.Slots)
	}
	if c.ConsumerCacheSize < 1 {
		return fmt.Errorf("worker: config: consumer cache size %d is below 1", c.ConsumerCacheSize)
	}
	if c.ConsumerMemory/int64(c.ConsumerCacheSize) < kafkasrc.MinConsumerShare {
		return fmt.Errorf("worker: config: consumer memory %d bytes for %d cached consumers is %d bytes each, below the %d MiB a consumer needs: raise the consumer memory to at least %d MiB or lower the consumer cache",
			c.ConsumerMemory, c.ConsumerCacheSize, c.ConsumerMemory/int64(c.ConsumerCacheSize), kafkasrc.MinConsumerShare>>20,
			int64(c.ConsumerCacheSize)*kafkasrc.MinConsumerShare>>20)
	}
	if c.Token != "" && c.TLS == nil {
		for _, a := range c.Coordinators {
			if !auth.IsLoopback(a) {
				return fmt.Errorf("worker: config: a token is sent only over TLS to coordinator %s, which is not loopback: configure TLS", a)
			}
		}
	}
	for _, l := range c.Labels {
		if err := ValidateLabel(l); err != nil {
			return fmt.Errorf("worker: config: %w", err)
		}
	}
	return nil
}

// Worker executes tasks for the coordinator.
type Worker struct {
	cfg    Config
	logger hclog.Logger
	cache  *kafkasrc.Cache
	pool   *kafkasrc.Pool // sticky consumers of packed tasks and small ranges
	sinks  *kafkasrc.Sinks

	// programs caches compiled steps by job; bounded, since jobs come and go.
	programs *lru.Cache[string, compiled]

	registry *prometheus.Registry
	metrics  *metrics
	ops      *ops.Server
	// connected is true while a session is registered with a coordinator.
	connected atomic.Bool

	// afterChunk, if set, runs after each chunk a task writes to a Kafka
	// sink while it reads (tests).
	afterChunk func(task *sluicev1.Task, chunk int)
}

// programCacheSize bounds the compiled programs a worker keeps.
const programCacheSize = 256

type compiled struct {
	version int64
	prog    *steps.Program
	// The Schema Registry decoders of the source's key and value; nil for
	// JSON (see decoders).
	keyDec, valueDec steps.Decoder
}

// New builds a worker; Run starts it.
func New(cfg Config) (*Worker, error) {
	if cfg.ID == "" || cfg.Host == "" {
		host, _ := os.Hostname()
		if cfg.ID == "" {
			cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
		}
		if cfg.Host == "" {
			cfg.Host = host
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	logger := cfg.Logger.Named("worker").With("worker_id", cfg.ID)
	programs, err := lru.New[string, compiled](programCacheSize)
	if err != nil {
		return nil, fmt.Errorf("worker: program cache: %w", err)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	// librdkafka's statistics cost a JSON document per consumer every
	// kafkasrc.StatsInterval: only when someone can scrape them.
	var statsOpts []kafkasrc.Option
	var stats *kafkaStats
	if cfg.HTTPAddr != "" {
		stats = newKafkaStats()
		reg.MustRegister(stats)
		statsOpts = append(statsOpts, kafkasrc.WithStats(stats))
	}
	w := &Worker{
		cfg:      cfg,
		logger:   logger,
		cache:    kafkasrc.NewCache(cfg.ConsumerCacheSize, logger.Named("kafka"), append(statsOpts, kafkasrc.WithMemory(cfg.ConsumerMemory))...),
		pool:     kafkasrc.NewPool(cfg.Slots, logger.Named("kafka"), statsOpts...),
		sinks:    kafkasrc.NewSinks(logger.Named("sink")),
		programs: programs,
		registry: reg,
	}
	w.metrics = newMetrics(reg, w)
	w.ops = ops.New(ops.Config{Addr: cfg.HTTPAddr, Gatherer: reg, Ready: w.ready, Logger: logger.Named("http")})
	return w, nil
}

// Registry is the registry of the worker's metrics.
func (w *Worker) Registry() *prometheus.Registry { return w.registry }

// HTTPAddr is the address the operations listener listens on, once Run
// started it ("" without one).
func (w *Worker) HTTPAddr() string { return w.ops.Addr() }

// ready is the readiness of /readyz: registered with a coordinator.
func (w *Worker) ready(context.Context) error {
	if !w.connected.Load() {
		return errors.New("not connected to a coordinator")
	}
	return nil
}

// ID is the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Run connects to the leading coordinator and runs tasks until ctx ends,
// reconnecting with backoff when the stream breaks.
func (w *Worker) Run(ctx context.Context) error {
	if w.cfg.HTTPAddr != "" {
		if err := w.ops.Listen(); err != nil {
			return fmt.Errorf("worker: --http-addr: %w", err)
		}
		opsCtx, stopOps := context.WithCancel(ctx)
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := w.ops.Serve(opsCtx); err != nil {
				w.logger.Error("ops HTTP listener stopped", "error", err)
			}
		}()
		defer func() {
			stopOps()
			<-served
		}()
	}
	defer w.cache.Close()
	defer w.pool.Close()
	defer w.sinks.Close()
	sweep, stopSweep := context.WithCancel(ctx)
	swept := make(chan struct{}, 2)
	go func() {
		defer func() { swept <- struct{}{} }()
		_ = w.pool.Run(sweep)
	}()
	go func() {
		defer func() { swept <- struct{}{} }()
		_ = w.cache.Run(sweep)
	}()
	defer func() {
		stopSweep()
		<-swept
		<-swept
	}()
	backoff := 100 * time.Millisecond
	for i := 0; ; i++ {
		addr := w.cfg.Coordinators[i%len(w.cfg.Coordinators)]
		start := time.Now()
		err := w.session(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		switch status.Code(err) {
		case codes.Unauthenticated, codes.PermissionDenied:
			w.logger.Error("the coordinator refused this worker's credentials, retrying", "coordinator", addr, "error", err, "backoff", backoff)
		case codes.FailedPrecondition:
			// A standby, or a coordinator still campaigning: expected
			// during startup and failover, so not worth a warning.
			w.logger.Debug("coordinator is not the leader, trying the next", "coordinator", addr, "error", err)
		default:
			w.logger.Warn("coordinator stream ended, reconnecting", "coordinator", addr, "error", err, "backoff", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, 3*time.Second)
	}
}
