// Package coordinator plans micro-batches as Kafka offset ranges, dispatches
// them to workers, and commits results and offsets together in etcd. One
// coordinator leads (etcd election); the others serve reads and stand by.
package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/offsetstore"
	"github.com/sluice-stream/sluice/ops"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// ErrNotLeader is returned for cluster calls made to a standby coordinator.
var ErrNotLeader = errors.New("coordinator: not leader")

// Config configures a Coordinator.
type Config struct {
	// Etcd is the client of the cluster holding Sluice's state.
	Etcd *clientv3.Client
	// Prefix of Sluice's etcd keys; default "/sluice/".
	Prefix string
	// AdvertiseAddr is this coordinator's gRPC address as workers and clients
	// reach it; followers name the leader by it.
	AdvertiseAddr string
	// SessionTTL is the leader lease; a leader that cannot renew it within the
	// TTL loses leadership. Default 10s.
	SessionTTL time.Duration
	// KeepBatches is how many batches (and their results) each job retains. Default 1000.
	KeepBatches int64
	// KeepBytes bounds the encoded size of each job's retained results;
	// older batches are pruned past it. Default 64 MiB.
	KeepBytes int64
	// CompactInterval is how often the leader compacts etcd's history;
	// default 5m, negative disables it (an operator compacts instead).
	CompactInterval time.Duration
	// HeartbeatInterval is how often workers heartbeat; default 1s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout drops a silent worker and re-runs its tasks; default 10s.
	HeartbeatTimeout time.Duration
	// MaxRequestBytes bounds one etcd transaction; default 1.4 MiB.
	MaxRequestBytes int
	// KafkaAdminClients bounds the Kafka admin clients kept, one per
	// cluster and client properties; the least recently used is closed.
	// Default (0) kafkasrc.DefaultAdminCapacity.
	KafkaAdminClients int
	// KafkaPolicy is what jobs may put in the Kafka clients made for them
	// (allowed properties, the directory of file properties, the bootstrap
	// servers); checked at submit and before a stored job runs, and by the
	// coordinator's admin clients.
	KafkaPolicy kafkasrc.Policy
	// TLS, if set, serves gRPC over TLS; with ClientCAs and
	// tls.RequireAndVerifyClientCert it is mutual TLS (auth.ServerTLS).
	TLS *tls.Config
	// Auth, if set, authenticates every call but health and reflection and
	// authorizes it by role; a worker must register under its own name.
	// Nil allows everything.
	Auth *auth.Authenticator
	// HTTPAddr, if set, is the address of the operations HTTP listener:
	// /metrics, /healthz and /readyz (ready: leading, or standing by with a
	// leader seen through etcd). "" serves none.
	HTTPAddr string
	// Registry receives the coordinator's metrics; nil makes one, with the
	// Go runtime and process collectors.
	Registry *prometheus.Registry
	Logger   hclog.Logger
	// Hooks are failure points for tests.
	Hooks Hooks
}

// DefaultConfig returns a Config with defaults for everything but Etcd.
func DefaultConfig() Config {
	return Config{
		Prefix:            "/sluice/",
		SessionTTL:        10 * time.Second,
		KeepBatches:       1000,
		KeepBytes:         64 << 20,
		CompactInterval:   5 * time.Minute,
		HeartbeatInterval: time.Second,
		HeartbeatTimeout:  10 * time.Second,
		Logger:            hclog.NewNullLogger(),
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	switch {
	case c.Etcd == nil:
		return errors.New("coordinator: config: etcd client is required")
	case c.AdvertiseAddr == "":
		return errors.New("coordinator: config: advertise address is required")
	case c.SessionTTL < time.Second:
		return fmt.Errorf("coordinator: config: session TTL %s is below 1s", c.SessionTTL)
	case c.KeepBatches < 1:
		return fmt.Errorf("coordinator: config: keep batches %d is below 1", c.KeepBatches)
	case c.KeepBytes < 0:
		return fmt.Errorf("coordinator: config: keep bytes %d is negative", c.KeepBytes)
	case c.HeartbeatInterval <= 0 || c.HeartbeatTimeout <= c.HeartbeatInterval:
		return fmt.Errorf("coordinator: config: heartbeat timeout %s must exceed interval %s", c.HeartbeatTimeout, c.HeartbeatInterval)
	}
	return nil
}

// Coordinator is the Sluice control plane.
type Coordinator struct {
	cfg        Config
	logger     hclog.Logger
	store      *offsetstore.Store
	dispatcher *dispatcher
	admins     *kafkasrc.AdminPool
	registry   *prometheus.Registry
	metrics    *metrics
	ops        *ops.Server

	leading  atomic.Bool
	mu       sync.Mutex
	election *concurrency.Election // current campaign, for naming the leader
}

// New builds a coordinator; Run starts it.
func New(cfg Config) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	logger := cfg.Logger.Named("coordinator")
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	c := &Coordinator{
		cfg:        cfg,
		logger:     logger,
		store:      offsetstore.New(cfg.Etcd, offsetstore.Options{Prefix: cfg.Prefix, MaxRequestBytes: cfg.MaxRequestBytes}),
		dispatcher: newDispatcher(logger.Named("dispatch")),
		admins:     newAdminPool(cfg, logger),
		registry:   reg,
	}
	c.metrics = newMetrics(reg, func() float64 { return float64(len(c.dispatcher.liveWorkers())) })
	c.ops = ops.New(ops.Config{Addr: cfg.HTTPAddr, Gatherer: reg, Ready: c.ready, TLS: cfg.TLS, Logger: logger.Named("http")})
	return c, nil
}

// Registry is the registry of the coordinator's metrics.
func (c *Coordinator) Registry() *prometheus.Registry { return c.registry }

// Handle mounts h on the operations HTTP listener (Config.HTTPAddr) at
// pattern, beside /metrics, /healthz and /readyz; call it before Run.
func (c *Coordinator) Handle(pattern string, h http.Handler) { c.ops.Handle(pattern, h) }

// HTTPAddr is the address the operations listener listens on, once Run
// started it ("" without one).
func (c *Coordinator) HTTPAddr() string { return c.ops.Addr() }

// ready is the readiness of /readyz: the leader is ready; a standby is when
// it reaches etcd and sees a leader there, so that it can take over.
func (c *Coordinator) ready(ctx context.Context) error {
	if c.IsLeader() {
		return nil
	}
	leader, err := c.Leader(ctx)
	switch {
	case errors.Is(err, ErrNotLeader): // no etcd session to campaign with yet
		return errors.New("standby without a leader: not in the election yet (is etcd reachable?)")
	case err != nil:
		return fmt.Errorf("standby without a leader: %w", err)
	case leader == "":
		return errors.New("standby without a leader")
	}
	return nil
}

func newAdminPool(cfg Config, logger hclog.Logger) *kafkasrc.AdminPool {
	opts := []kafkasrc.Option{kafkasrc.WithCheck(cfg.KafkaPolicy.CheckCluster)}
	if cfg.KafkaAdminClients > 0 {
		opts = append(opts, kafkasrc.WithCapacity(cfg.KafkaAdminClients))
	}
	return kafkasrc.NewAdminPool(logger.Named("kafka"), opts...)
}

// Store is the coordinator's (unfenced) view of the state in etcd.
func (c *Coordinator) Store() *offsetstore.Store { return c.store }

// IsLeader reports whether this coordinator currently leads.
func (c *Coordinator) IsLeader() bool { return c.leading.Load() }

// Leader returns the address of the current leader, if known.
func (c *Coordinator) Leader(ctx context.Context) (string, error) {
	if c.IsLeader() {
		return c.cfg.AdvertiseAddr, nil
	}
	c.mu.Lock()
	el := c.election
	c.mu.Unlock()
	if el == nil {
		return "", ErrNotLeader
	}
	resp, err := el.Leader(ctx)
	if err != nil {
		return "", fmt.Errorf("find leader: %w", err)
	}
	return string(resp.Kvs[0].Value), nil
}

// Run campaigns for leadership and, while leading, runs every job. It returns
// nil when ctx ends.
func (c *Coordinator) Run(ctx context.Context) error {
	defer c.admins.Close()
	if c.cfg.HTTPAddr != "" {
		if err := c.ops.Listen(); err != nil {
			return fmt.Errorf("coordinator: --http-addr: %w", err)
		}
		opsCtx, stopOps := context.WithCancel(ctx)
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := c.ops.Serve(opsCtx); err != nil {
				c.logger.Error("ops HTTP listener stopped", "error", err)
			}
		}()
		defer func() {
			stopOps()
			<-served
		}()
	}
	// Admin clients of clusters no job uses any more are closed as they
	// go idle (stopped, failed or deleted jobs).
	sweepCtx, stopSweep := context.WithCancel(ctx)
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		_ = c.admins.Run(sweepCtx)
	}()
	defer func() {
		stopSweep()
		<-swept
	}()
	for {
		err := c.campaignAndLead(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.logger.Warn("leadership ended, campaigning again", "error", err)
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (c *Coordinator) campaignAndLead(ctx context.Context) error {
	ttl := int(c.cfg.SessionTTL.Round(time.Second) / time.Second)
	sess, err := concurrency.NewSession(c.cfg.Etcd, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, c.store.ElectionPrefix())
	c.mu.Lock()
	c.election = el
	c.mu.Unlock()

	c.logger.Info("campaigning for leadership", "addr", c.cfg.AdvertiseAddr)
	if err := el.Campaign(ctx, c.cfg.AdvertiseAddr); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	leaderCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-leaderCtx.Done():
		}
	}()

	c.logger.Info("leading", "addr", c.cfg.AdvertiseAddr, "lease", sess.Lease())
	fence := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	c.leading.Store(true)
	c.metrics.leader.Set(1)
	compacted := make(chan struct{})
	go func() {
		defer close(compacted)
		c.compact(leaderCtx)
	}()
	err = c.lead(leaderCtx, c.store.WithFence(fence))
	cancel()
	<-compacted
	c.leading.Store(false)
	c.metrics.leader.Set(0)
	c.metrics.resetJobs()
	c.dispatcher.dropAll()

	rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
	defer rcancel()
	if rerr := el.Resign(rctx); rerr != nil && sess.Ctx().Err() == nil {
		c.logger.Warn("resign", "error", rerr)
	}
	return err
}

// runnerHandle is a running job runner owned by lead.
type runnerHandle struct {
	spec        *sluicev1.JobSpec
	incarnation string
	cancel      context.CancelFunc
	done        chan struct{}
}

// lead runs the jobs in etcd and follows their changes until ctx ends.
func (c *Coordinator) lead(ctx context.Context, store *offsetstore.Store) error {
	resp, err := c.cfg.Etcd.Get(ctx, store.JobsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	runners := map[string]*runnerHandle{}
	// Aborts of stopped jobs' Kafka transactions run beside the loop.
	var aborts sync.WaitGroup
	defer aborts.Wait()
	defer func() {
		for _, h := range runners {
			h.cancel()
		}
		for _, h := range runners {
			<-h.done
		}
	}()
	stop := func(name string) {
		if h, ok := runners[name]; ok {
			h.cancel()
			<-h.done
			delete(runners, name)
		}
	}
	// A job that stops leaves no open transaction behind: a task in flight
	// is fenced and its transaction aborted.
	stopAndAbort := func(job *sluicev1.Job) {
		spec := job.GetSpec()
		stop(spec.GetName())
		if !jobspec.PerPartitionTasks(spec) {
			return
		}
		aborts.Add(1)
		go func() {
			defer aborts.Done()
			actx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			aborted, err := c.abortTransactions(actx, job)
			if err != nil {
				c.logger.Warn("could not abort the transactions of a stopped job", "job", spec.GetName(), "error", err)
				return
			}
			if len(aborted) > 0 {
				c.logger.Info("aborted open transactions of a stopped job", "job", spec.GetName(), "transactional_ids", aborted)
			}
		}()
	}
	reconcile := func(job *sluicev1.Job, modRev int64) {
		name := job.GetSpec().GetName()
		h, ok := runners[name]
		if job.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
			stopAndAbort(job)
			return
		}
		if ok && proto.Equal(h.spec, job.GetSpec()) && h.incarnation == job.GetIncarnation() {
			return
		}
		stop(name)
		runners[name] = c.startRunner(ctx, store, job, modRev)
	}
	for _, kv := range resp.Kvs {
		job := &sluicev1.Job{}
		if err := proto.Unmarshal(kv.Value, job); err != nil {
			c.logger.Error("undecodable job record", "key", string(kv.Key), "error", err)
			continue
		}
		reconcile(job, kv.ModRevision)
	}

	wch := c.cfg.Etcd.Watch(ctx, store.JobsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1), clientv3.WithPrevKV())
	for {
		select {
		case <-ctx.Done():
			return nil
		case wr, ok := <-wch:
			if !ok {
				return errors.New("job watch closed")
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("job watch: %w", err)
			}
			for _, ev := range wr.Events {
				name := store.JobName(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					prev := &sluicev1.Job{}
					if ev.PrevKv != nil && proto.Unmarshal(ev.PrevKv.Value, prev) == nil && prev.GetSpec() != nil {
						stopAndAbort(prev)
					} else {
						stop(name)
					}
					c.metrics.deleteJob(name)
					continue
				}
				job := &sluicev1.Job{}
				if err := proto.Unmarshal(ev.Kv.Value, job); err != nil {
					c.logger.Error("undecodable job record", "key", string(ev.Kv.Key), "error", err)
					continue
				}
				reconcile(job, ev.Kv.ModRevision)
			}
		}
	}
}

// startRunner runs a job until its ctx ends, restarting it after errors that
// are not the job's own failure (etcd hiccups); each restart recovers from
// what etcd holds, like a new leader would.
func (c *Coordinator) startRunner(ctx context.Context, store *offsetstore.Store, job *sluicev1.Job, specVersion int64) *runnerHandle {
	rctx, cancel := context.WithCancel(ctx)
	h := &runnerHandle{spec: job.GetSpec(), incarnation: job.GetIncarnation(), cancel: cancel, done: make(chan struct{})}
	name := job.GetSpec().GetName()
	logger := c.logger.Named("job").With("job", name)
	go func() {
		defer close(h.done)
		for {
			r := &jobRunner{
				name: name, spec: job.GetSpec(), specVersion: specVersion, incarnation: job.GetIncarnation(), store: store,
				dispatcher: c.dispatcher, admins: c.admins, policy: c.cfg.KafkaPolicy, keep: c.cfg.KeepBatches, keepBytes: c.cfg.KeepBytes,
				logger: logger, hooks: c.cfg.Hooks, message: job.GetMessage(), now: time.Now,
				metrics: c.metrics.job(name),
			}
			err := r.run(rctx)
			if err == nil || rctx.Err() != nil {
				logger.Info("job runner stopped", "error", err)
				return
			}
			logger.Warn("job runner stopped, restarting", "error", err)
			t := time.NewTimer(time.Second)
			select {
			case <-rctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
	return h
}
