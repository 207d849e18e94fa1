// Package dev runs a whole Sluice cluster in one process: an embedded etcd, an
// embedded Kafka-protocol broker (kfake), a coordinator and workers. It backs
// `sluice dev` and the integration tests.
package dev

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// EtcdConfig configures an embedded etcd.
type EtcdConfig struct {
	// Dir holds etcd's data; it survives restarts.
	Dir string
	// ClientAddr and PeerAddr are host:port listen addresses.
	ClientAddr string
	PeerAddr   string
	// MaxRequestBytes raises etcd's request limit; 0 keeps etcd's default.
	MaxRequestBytes uint
	// AutoCompaction makes etcd compact its own history, keeping this much
	// of it (periodic mode); 0 leaves compaction to its clients.
	AutoCompaction time.Duration
	// TLS, if set, serves clients over TLS (tests of the coordinator's etcd
	// TLS).
	TLS *EtcdTLS
}

// EtcdTLS is an embedded etcd's client TLS: its certificate and key and,
// to require client certificates, the CA that signs them.
type EtcdTLS struct {
	CertFile, KeyFile, ClientCA string
}

// StartEtcd starts an embedded single-member etcd and waits until it serves.
// Its logs go to etcd.log in Dir. Close the returned server to stop it.
func StartEtcd(ctx context.Context, c EtcdConfig) (*embed.Etcd, error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	scheme := "http://"
	if c.TLS != nil {
		scheme = "https://"
	}
	cu, err := url.Parse(scheme + c.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd client address %q: %w", c.ClientAddr, err)
	}
	pu, err := url.Parse("http://" + c.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd peer address %q: %w", c.PeerAddr, err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "sluice-dev"
	cfg.Dir = filepath.Join(c.Dir, "data")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(c.Dir, "etcd.log")}
	if c.TLS != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile,
			TrustedCAFile: c.TLS.ClientCA, ClientCertAuth: c.TLS.ClientCA != "",
		}
	}
	if c.MaxRequestBytes > 0 {
		cfg.MaxRequestBytes = c.MaxRequestBytes
	}
	if c.AutoCompaction > 0 {
		cfg.AutoCompactionMode = embed.CompactorModePeriodic
		cfg.AutoCompactionRetention = c.AutoCompaction.String()
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd did not become ready within 30s (see %s)", cfg.LogOutputs[0])
	}
}

// KafkaConfig configures the embedded broker.
type KafkaConfig struct {
	// Addr is the ip:port the broker listens on and advertises.
	Addr string
	// Dir persists topics across restarts; empty keeps them in memory.
	Dir string
}

// StartKafka starts a single embedded kfake broker.
func StartKafka(c KafkaConfig) (*kfake.Cluster, error) {
	host, portStr, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return nil, fmt.Errorf("kafka address %q: %w", c.Addr, err)
	}
	if host != "localhost" && net.ParseIP(host) == nil {
		return nil, fmt.Errorf("kafka address %q: the embedded broker listens on an IP address of this host, not a name", c.Addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("kafka address %q: %w", c.Addr, err)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port)}
	if host != "127.0.0.1" && host != "localhost" {
		// kfake binds 127.0.0.1 and advertises what it bound: binding the
		// given address instead lets clients on other hosts reach it.
		opts = append(opts, kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return net.Listen(network, net.JoinHostPort(host, p))
		}))
	}
	if c.Dir != "" {
		if err := os.MkdirAll(c.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("kafka data dir: %w", err)
		}
		opts = append(opts, kfake.DataDir(c.Dir))
	}
	k, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka on %s: %w", c.Addr, err)
	}
	return k, nil
}

// FreeAddr returns a loopback address with a port free right now, for tests
// and tools that start servers on chosen addresses. The port is below the
// kernel's ephemeral range when it can be: a port of that range (what
// listening on port 0 gives) can become the local end of any outgoing
// connection on the machine before the server binds it. Ports handed out
// are not handed out again by this process.
func FreeAddr() (string, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	// Above the well-known ports and sluice dev's defaults (7070, 12379,
	// 12380, 19092), which another run may be using.
	const floor = 20000
	for range 1000 {
		if low <= floor+1000 {
			break
		}
		port := floor + rand.IntN(low-floor)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		if _, taken := handedOut.LoadOrStore(port, true); !taken {
			return l.Addr().String(), nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// handedOut holds the ports FreeAddr returned.
var handedOut sync.Map
