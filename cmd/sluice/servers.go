package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/dev"
	"github.com/sluice-stream/sluice/failpoint"
	"github.com/sluice-stream/sluice/webui"
	"github.com/sluice-stream/sluice/worker"
)

func newLogger(level, format string) (hclog.Logger, error) {
	l := hclog.LevelFromString(level)
	if l == hclog.NoLevel {
		return nil, usagef("--log-level %q: use trace, debug, info, warn or error", level)
	}
	var json bool
	switch format {
	case "text":
	case "json":
		json = true
	default:
		return nil, usagef("--log-format %q: use text or json", format)
	}
	return hclog.New(&hclog.LoggerOptions{Name: "sluice", Level: l, Output: os.Stderr, JSONFormat: json}), nil
}

// logFormatFlag adds --log-format to a server command.
func logFormatFlag(fs *pflag.FlagSet) *string {
	return fs.String("log-format", "text", "log format: text, or json (one JSON object per line)")
}

// byteSize is a flag of bytes: 1048576, 512KiB, 64MiB or 1GiB.
type byteSize int64

func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Type() string { return "size" }

func (b *byteSize) Set(s string) error {
	mult := int64(1)
	num := s
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.size
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("%q: want a non-negative size such as 1048576, 512KiB, 64MiB or 1GiB", s)
	}
	*b = byteSize(n * mult)
	return nil
}

// labelFlags is the repeatable --label flag of a worker.
type labelFlags []string

func (l *labelFlags) String() string { return strings.Join(*l, ",") }

func (l *labelFlags) Type() string { return "label" }

func (l *labelFlags) Set(v string) error {
	if err := worker.ValidateLabel(v); err != nil {
		return err
	}
	*l = append(*l, v)
	return nil
}

func newDevCmd() *cobra.Command {
	cfg := dev.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "run etcd, a Kafka broker, a coordinator and workers in one process",
		Args:  exactArgs(),
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for etcd data and the embedded broker's topics (kept across runs)")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "coordinator gRPC listen address")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "coordinator HTTP listen address of /metrics, /healthz and /readyz (empty: none)")
	fs.StringVar(&cfg.KafkaAddr, "kafka-addr", cfg.KafkaAddr, "embedded Kafka broker listen address, an IP address of this host")
	fs.StringVar(&cfg.EtcdAddr, "etcd-addr", cfg.EtcdAddr, "embedded etcd client listen address")
	fs.StringVar(&cfg.EtcdPeerAddr, "etcd-peer-addr", cfg.EtcdPeerAddr, "embedded etcd peer listen address")
	fs.StringVar(&cfg.KafkaBootstrap, "kafka-bootstrap", "", "use this Kafka cluster instead of the embedded broker")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "number of in-process workers")
	fs.IntVar(&cfg.Slots, "slots", cfg.Slots, "tasks each worker runs at once")
	fs.BoolVar(&cfg.Demo.Enabled, "demo", false, "create a topic, produce a click stream, run a demo job and print its batches")
	fs.IntVar(&cfg.Demo.Rate, "demo-rate", cfg.Demo.Rate, "demo events per second")
	fs.DurationVar(&cfg.Demo.Interval, "demo-interval", cfg.Demo.Interval, "demo job batch interval")
	fs.BoolVar(&cfg.InfraOnly, "infra-only", false, "run only etcd and the broker (for separate coordinator and worker processes)")
	fs.Int64Var(&cfg.KeepBatches, "keep-batches", cfg.KeepBatches, "batches (and results) retained per job")
	fs.Var((*byteSize)(&cfg.KeepBytes), "keep-bytes", "bound on the encoded size of each job's retained results, e.g. 64MiB (0: no bound)")
	fs.DurationVar(&cfg.CompactInterval, "compact-interval", cfg.CompactInterval, "history the embedded etcd keeps; it compacts older revisions (negative: never)")
	fs.BoolVar(&cfg.TLS, "tls", false, "mutual TLS: make a throwaway CA and certificates in <data-dir>/tls (kept across runs) and require client certificates (CommonName the principal, OrganizationalUnit the role)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "serve plaintext without authentication on a non-loopback --grpc-addr (anyone reaching it can do anything)")
	devKafkaPolicyFlags(fs, &cfg)
	level := fs.String("log-level", "warn", "log level: trace, debug, info, warn, error")
	format := logFormatFlag(fs)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		logger, err := newLogger(*level, *format)
		if err != nil {
			return err
		}
		cfg.Logger = logger
		cfg.Out = cmd.OutOrStdout()
		setGC(devGCPercent)
		cfg.CLI = cliName(os.Executable, os.Getwd, exec.LookPath)
		return dev.Run(cmd.Context(), cfg)
	}
	return cmd
}

func newCoordinatorCmd() *cobra.Command {
	cfg := coordinator.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "run a coordinator (leads or stands by, via etcd election)",
		Args:  exactArgs(),
	}
	fs := cmd.Flags()
	endpoints := fs.String("etcd-endpoints", "127.0.0.1:2379", "comma-separated etcd endpoints")
	addr := fs.String("grpc-addr", "127.0.0.1:7070", "gRPC listen address")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "", "HTTP listen address of /metrics, /healthz and /readyz, e.g. 127.0.0.1:7071 (empty: none)")
	fs.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "address workers and clients use to reach this coordinator (default --grpc-addr)")
	fs.StringVar(&cfg.Prefix, "etcd-prefix", cfg.Prefix, "prefix of Sluice's etcd keys")
	fs.DurationVar(&cfg.SessionTTL, "session-ttl", cfg.SessionTTL, "leader lease; a leader silent this long is replaced")
	fs.Int64Var(&cfg.KeepBatches, "keep-batches", cfg.KeepBatches, "batches (and results) retained per job")
	fs.Var((*byteSize)(&cfg.KeepBytes), "keep-bytes", "bound on the encoded size of each job's retained results, e.g. 64MiB (0: no bound)")
	fs.DurationVar(&cfg.CompactInterval, "compact-interval", cfg.CompactInterval, "while leading, compact etcd's history older than this, every this often (negative: never)")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", cfg.HeartbeatTimeout, "drop a worker silent this long and re-run its tasks")
	security := addServerSecurity(fs)
	etcdSec := addEtcdSecurity(fs)
	kafkaPolicyFlags(fs, &cfg.KafkaPolicy)
	level := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	format := logFormatFlag(fs)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return runCoordinator(cmd.Context(), cfg, *addr, *endpoints, *level, *format, security, etcdSec)
	}
	return cmd
}

func runCoordinator(ctx context.Context, cfg coordinator.Config, addr, endpoints, level, format string, security *serverSecurity, etcdSec *etcdSecurity) error {
	logger, err := newLogger(level, format)
	if err != nil {
		return err
	}
	if cfg.AdvertiseAddr == "" {
		cfg.AdvertiseAddr = addr
	}
	if err := security.apply(&cfg, addr); err != nil {
		return err
	}
	if cfg.Auth != nil && cfg.TLS == nil && !auth.IsLoopback(addr) {
		logger.Warn("authentication without TLS: tokens would cross the network in the clear (Sluice's clients refuse to send them); add --tls-cert and --tls-key", "grpc_addr", addr)
	}
	// SLUICE_FAILPOINTS crashes or freezes this coordinator at a lifecycle
	// point; the fault-tolerance tests use it (see coordinator.Failpoints).
	if fp := os.Getenv("SLUICE_FAILPOINTS"); fp != "" {
		h, err := coordinator.Failpoints(fp)
		if err != nil {
			return err
		}
		cfg.Hooks = h
		logger.Warn("failpoints armed", "failpoints", fp)
	}
	ecfg, err := etcdSec.config(splitList(endpoints))
	if err != nil {
		return err
	}
	ecfg.Logger = dev.EtcdLogger(logger.Named("etcd"))
	cli, err := clientv3.New(ecfg)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()
	cfg.Etcd = cli
	cfg.Logger = logger
	c, err := coordinator.New(cfg)
	if err != nil {
		return err
	}
	webui.Mount(c, cfg.Auth, logger)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen --grpc-addr: %w", err)
	}
	gs := coordinator.NewGRPCServer(c)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return coordinator.Serve(gctx, gs, lis) })
	g.Go(func() error { return c.Run(gctx) })
	logger.Info("coordinator serving", "grpc_addr", lis.Addr().String(), "advertise", cfg.AdvertiseAddr,
		"tls", cfg.TLS != nil, "mutual_tls", *security.clientCA != "", "auth", cfg.Auth != nil, "http_addr", cfg.HTTPAddr)
	return g.Wait()
}

func newWorkerCmd() *cobra.Command {
	cfg := worker.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "run a worker that connects to the coordinators",
		Args:  exactArgs(),
	}
	fs := cmd.Flags()
	coords := fs.String("coordinator", "127.0.0.1:7070", "comma-separated coordinator addresses")
	fs.StringVar(&cfg.ID, "id", "", "stable worker id (default hostname-pid)")
	fs.IntVar(&cfg.Slots, "slots", cfg.Slots, "tasks run at once")
	fs.IntVar(&cfg.ConsumerCacheSize, "consumer-cache", cfg.ConsumerCacheSize, "Kafka consumers kept for reuse")
	fs.Var((*byteSize)(&cfg.ConsumerMemory), "consumer-memory",
		"bound on the records all cached consumers prefetch, e.g. 128MiB; each consumer gets consumer-memory/consumer-cache (at least 2 MiB)")
	fs.Var((*labelFlags)(&cfg.Labels), "label", "a label for fixed placement (placement.fixed worker_label); repeatable")
	fs.StringVar(&cfg.Host, "host", "", "this worker's host, matched with the partition leaders' hosts by brokers placement (default the hostname)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "", "HTTP listen address of /metrics, /healthz and /readyz, e.g. 127.0.0.1:7072 (empty: none)")
	security := addClientSecurity(fs)
	level := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	format := logFormatFlag(fs)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg.Coordinators = splitList(*coords)
		return runWorker(cmd.Context(), cfg, *level, *format, security)
	}
	return cmd
}

func runWorker(ctx context.Context, cfg worker.Config, level, format string, security *clientSecurity) error {
	logger, err := newLogger(level, format)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	if cfg.TLS, err = security.tlsConfig(); err != nil {
		return err
	}
	cfg.Token = security.bearer()
	workerGC()
	if fp := os.Getenv("SLUICE_FAILPOINTS"); fp != "" {
		fps, err := failpoint.Parse(fp, "mid-task", "mid-txn", "after-sink-write")
		if err != nil {
			return err
		}
		cfg.Failpoints = fps
		logger.Warn("failpoints armed", "failpoints", fp)
	}
	w, err := worker.New(cfg)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// workerGCPercent is the worker's GOGC unless the environment sets one. A
// worker's Go heap churns with every record; collecting at 3x the live
// heap instead of 2x halves the CPU spent on GC. It is not 5x, as it was
// while the pool read through librdkafka: its franz-go consumers' fetches
// and stashes are on the Go heap (40-90 MiB live in a worker of make
// bench's (e)), and at 5x a worker peaked at 390-490 MiB, at 3x at 280-290.
const workerGCPercent = 200

func workerGC() { setGC(workerGCPercent) }

// devGCPercent is sluice dev's GOGC unless the environment sets one. Its
// embedded broker allocates a buffer for every record batch it serves
// (kfake reads each batch from its file into a new one), its live heap is
// small, and at Go's default a consumer of many partitions' small batches
// made GC a quarter of the broker's CPU (make bench's (e)).
const devGCPercent = 400

// setGC sets GOGC to percent unless the environment sets it.
func setGC(percent int) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
}
