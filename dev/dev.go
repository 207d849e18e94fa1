package dev

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/webui"
	"github.com/sluice-stream/sluice/worker"
)

// Config configures `sluice dev`.
type Config struct {
	// DataDir holds etcd's data and the embedded broker's topics; running
	// again with the same directory resumes every job where it committed.
	DataDir  string
	GRPCAddr string
	// HTTPAddr is the coordinator's operations listener (/metrics,
	// /healthz, /readyz); "" serves none. When it is DefaultHTTPAddr and
	// that is taken (another sluice dev), dev runs without it and says so.
	HTTPAddr     string
	KafkaAddr    string
	EtcdAddr     string
	EtcdPeerAddr string
	// KafkaBootstrap points at a real Kafka instead of the embedded broker.
	KafkaBootstrap string
	Workers        int
	Slots          int
	Demo           DemoConfig
	Logger         hclog.Logger
	// Out receives the banner and the demo's batch lines.
	Out io.Writer
	// CLI is how the banner's commands run the sluice binary: "sluice"
	// when it is on PATH, else a path such as ./bin/sluice.
	CLI string
	// Coordinator tweaks the coordinator config (tests).
	Coordinator func(*coordinator.Config)
	// InfraOnly runs just etcd and the broker, for a cluster of separate
	// coordinator and worker processes on one machine.
	InfraOnly bool
	// KeepBatches and KeepBytes bound what the coordinator retains of each
	// job's batches and results (coordinator.Config).
	KeepBatches int64
	KeepBytes   int64
	// TLS serves mutual TLS with a throwaway CA and certificates made in
	// DataDir/tls: workers, the demo and callers present client
	// certificates (CommonName the principal, OrganizationalUnit the role).
	TLS bool
	// Insecure serves plaintext on a non-loopback GRPCAddr.
	Insecure bool
	// CompactInterval is how much history the embedded etcd keeps: it
	// compacts itself (periodic auto-compaction), so the coordinator does
	// not. Negative disables compaction.
	CompactInterval time.Duration
}

// DefaultHTTPAddr is where `sluice dev` serves metrics and health.
const DefaultHTTPAddr = "127.0.0.1:7071"

// DefaultConfig returns the defaults of `sluice dev`.
func DefaultConfig() Config {
	ccfg := coordinator.DefaultConfig()
	return Config{
		KeepBatches:     ccfg.KeepBatches,
		KeepBytes:       ccfg.KeepBytes,
		CompactInterval: ccfg.CompactInterval,
		DataDir:         ".sluice-dev",
		GRPCAddr:        "127.0.0.1:7070",
		HTTPAddr:        DefaultHTTPAddr,
		KafkaAddr:       "127.0.0.1:19092",
		EtcdAddr:        "127.0.0.1:12379",
		EtcdPeerAddr:    "127.0.0.1:12380",
		Workers:         2,
		Slots:           4,
		Demo:            DefaultDemoConfig(),
		Logger:          hclog.NewNullLogger(),
		Out:             io.Discard,
		CLI:             "sluice",
	}
}

// Run starts everything and blocks until ctx ends, then stops it all in order:
// workers, coordinator, gRPC server, broker, etcd.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Workers < 1 && !cfg.InfraOnly {
		return fmt.Errorf("dev: --workers %d: at least one worker is needed", cfg.Workers)
	}
	logger := cfg.Logger
	var sec *devSecurity
	if cfg.TLS && !cfg.InfraOnly {
		var err error
		if sec, err = newDevSecurity(cfg); err != nil {
			return err
		}
	} else if err := auth.CheckExposure(cfg.GRPCAddr, false, false, cfg.Insecure || cfg.InfraOnly); err != nil {
		return fmt.Errorf("dev: %w (or use --tls)", err)
	}
	e, err := StartEtcd(ctx, EtcdConfig{
		Dir: filepath.Join(cfg.DataDir, "etcd"), ClientAddr: cfg.EtcdAddr, PeerAddr: cfg.EtcdPeerAddr,
		MaxRequestBytes: 8 << 20, AutoCompaction: max(cfg.CompactInterval, 0),
	})
	if err != nil {
		return err
	}
	defer e.Close()

	bootstrap := cfg.KafkaBootstrap
	if bootstrap == "" {
		k, err := StartKafka(KafkaConfig{Addr: cfg.KafkaAddr, Dir: filepath.Join(cfg.DataDir, "kafka")})
		if err != nil {
			return err
		}
		defer k.Close()
		bootstrap = k.ListenAddrs()[0]
	}

	if cfg.InfraOnly {
		fmt.Fprintf(cfg.Out, "sluice dev (infra only) is up\n  kafka bootstrap   %s\n  etcd              %s\n  data dir          %s\n", bootstrap, cfg.EtcdAddr, cfg.DataDir)
		<-ctx.Done()
		return nil
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.EtcdAddr}, DialTimeout: 5 * time.Second, Logger: EtcdLogger(logger.Named("etcd"))})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()

	ccfg := coordinator.DefaultConfig()
	ccfg.Etcd = cli
	ccfg.AdvertiseAddr = cfg.GRPCAddr
	ccfg.Logger = logger
	ccfg.MaxRequestBytes = 7 << 20
	if cfg.KeepBatches > 0 {
		ccfg.KeepBatches = cfg.KeepBatches
	}
	ccfg.KeepBytes = cfg.KeepBytes
	ccfg.CompactInterval = -1 // the embedded etcd compacts itself
	ccfg.HTTPAddr = cfg.HTTPAddr
	if ccfg.HTTPAddr == DefaultHTTPAddr && !free(ccfg.HTTPAddr) {
		fmt.Fprintf(cfg.Out, "sluice dev: %s is in use; serving no metrics (set --http-addr)\n", DefaultHTTPAddr)
		ccfg.HTTPAddr = ""
		cfg.HTTPAddr = ""
	}
	if sec != nil {
		if err := sec.coordinator(&ccfg); err != nil {
			return err
		}
	}
	if cfg.Coordinator != nil {
		cfg.Coordinator(&ccfg)
	}
	coord, err := coordinator.New(ccfg)
	if err != nil {
		return err
	}
	webui.Mount(coord, ccfg.Auth, cfg.Logger)
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen --grpc-addr %s: %w", cfg.GRPCAddr, err)
	}
	gs := coordinator.NewGRPCServer(coord)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return coordinator.Serve(gctx, gs, lis) })
	g.Go(func() error { return coord.Run(gctx) })
	for i := range cfg.Workers {
		wcfg := worker.DefaultConfig()
		wcfg.Coordinators = []string{cfg.GRPCAddr}
		wcfg.ID = workerID(i)
		wcfg.Slots = cfg.Slots
		wcfg.Logger = logger
		if sec != nil {
			if err := sec.worker(&wcfg); err != nil {
				return err
			}
		}
		w, err := worker.New(wcfg)
		if err != nil {
			return err
		}
		g.Go(func() error { return w.Run(gctx) })
	}
	printBanner(cfg, bootstrap, sec)
	if cfg.HTTPAddr != "" {
		url, curl := "http://"+cfg.HTTPAddr, "curl"
		if sec != nil {
			url, curl = "https://"+cfg.HTTPAddr, "curl --cacert "+sec.certs.CA()
		}
		fmt.Fprintf(cfg.Out, "Web UI: %s/\nMetrics and health:\n  %s %[1]s/metrics\n  %[2]s %[1]s/readyz\n\n", url, curl)
	}
	if cfg.Demo.Enabled {
		var dial []grpc.DialOption
		if sec != nil {
			if dial, err = sec.adminDial(); err != nil {
				return err
			}
		}
		g.Go(func() error { return runDemo(gctx, cfg, bootstrap, dial...) })
	}
	return g.Wait()
}

// free reports whether addr can be listened on now.
func free(addr string) bool {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	_ = lis.Close()
	return true
}

func printBanner(cfg Config, bootstrap string, sec *devSecurity) {
	if sec != nil {
		printTLSBanner(cfg, bootstrap, sec)
		return
	}
	fmt.Fprintf(cfg.Out, `sluice dev is up
  coordinator gRPC  %s   (JobService, WorkerService, health, reflection)
  kafka bootstrap   %s
  etcd              %s
  workers           %d x %d slots
  data dir          %s

Submit a job with grpcurl:
  grpcurl -plaintext -d @ %[1]s sluice.v1.JobService/SubmitJob < job.json
Look at it with the CLI:
  %[7]s jobs --coordinator %[1]s
  %[7]s batches JOB --coordinator %[1]s
  %[7]s results JOB --merge --coordinator %[1]s
  %[7]s watch JOB --coordinator %[1]s

`, cfg.GRPCAddr, bootstrap, cfg.EtcdAddr, cfg.Workers, cfg.Slots, cfg.DataDir, cliName(cfg))
}

// cliName is the banner's command for the sluice binary.
func cliName(cfg Config) string {
	if cfg.CLI == "" {
		return "sluice"
	}
	return cfg.CLI
}

func printTLSBanner(cfg Config, bootstrap string, sec *devSecurity) {
	c := sec.certs
	fmt.Fprintf(cfg.Out, `sluice dev is up, with mutual TLS
  coordinator gRPC  %s   (JobService, WorkerService, health, reflection)
  kafka bootstrap   %s
  etcd              %s
  workers           %d x %d slots
  data dir          %s
  certificates      %s (CA ca.pem; admin.pem and viewer.pem with their -key.pem)

Submit a job with grpcurl, as the admin:
  grpcurl -cacert %s -cert %s -key %s -d @ %[1]s sluice.v1.JobService/SubmitJob < job.json
Look at it with the CLI:
  export SLUICE_TLS_CA=%[8]s SLUICE_TLS_CERT=%[9]s SLUICE_TLS_KEY=%[10]s
  %[11]s jobs --coordinator %[1]s
  %[11]s results JOB --merge --coordinator %[1]s

`, cfg.GRPCAddr, bootstrap, cfg.EtcdAddr, cfg.Workers, cfg.Slots, cfg.DataDir, c.Dir, c.CA(), c.ClientCert("admin"), c.ClientKey("admin"), cliName(cfg))
}
