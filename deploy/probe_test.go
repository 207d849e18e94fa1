package deploy_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/dev"
)

// The probes of the Kubernetes manifests; TestProbePathsServed checks that
// the built servers serve them on --http-addr.
const (
	livenessPath  = "/healthz"
	readinessPath = "/readyz"
)

// TestProbePathsServed starts a coordinator (on an embedded etcd) and a
// worker from the built binary with --http-addr and asks each for the
// probes' paths: the liveness path must answer 200, the readiness path
// must exist (200 or 503: a worker without a coordinator is not ready).
func TestProbePathsServed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	c := sluiceCLI(t)
	for _, cmd := range []string{"coordinator", "worker"} {
		if !c.flagsOf(t, cmd)["http-addr"] {
			t.Errorf("`sluice %s` has no flag --http-addr (not in `sluice %s --help` of the binary built from this repository): no probe can reach it", cmd, cmd)
		}
	}
	if t.Failed() {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	etcdAddr, peerAddr := freeAddr(t), freeAddr(t)
	e, err := dev.StartEtcd(ctx, dev.EtcdConfig{Dir: filepath.Join(dir, "etcd"), ClientAddr: etcdAddr, PeerAddr: peerAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()

	grpcAddr := freeAddr(t)
	servers := []struct {
		name string
		args []string
	}{
		{"coordinator", []string{"coordinator", "--etcd-endpoints=" + etcdAddr, "--grpc-addr=" + grpcAddr}},
		// No coordinator answers at this address: alive, not ready.
		{"worker", []string{"worker", "--id=probe", "--coordinator=" + freeAddr(t)}},
	}
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			httpAddr := freeAddr(t)
			p := startServer(t, nil, c.bin, append(s.args, "--http-addr="+httpAddr)...)
			base := "http://" + httpAddr
			code := p.get(t, base+livenessPath)
			if code != http.StatusOK {
				t.Errorf("sluice %s: GET %s = %d, want 200\n%s", s.name, livenessPath, code, p.output())
			}
			code = p.get(t, base+readinessPath)
			if code != http.StatusOK && code != http.StatusServiceUnavailable {
				t.Errorf("sluice %s: GET %s = %d, want 200 or 503\n%s", s.name, readinessPath, code, p.output())
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := dev.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type server struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

func (s *server) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(b)
}

func (s *server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// startServer starts the binary with env added to this process's and
// stops it when the test ends.
func startServer(t *testing.T, env []string, bin string, args ...string) *server {
	t.Helper()
	s := &server{done: make(chan struct{})}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = s, s
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})
	return s
}

// get returns the status of GET url once the server listens; it fails the
// test if the process exits first.
func (s *server) get(t *testing.T, url string) int {
	t.Helper()
	// A bound on a hung start, not a timing assertion.
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return resp.StatusCode
		}
		select {
		case <-s.done:
			t.Fatalf("%s exited: %v\n%s", strings.Join(s.cmd.Args, " "), s.cmd.ProcessState, s.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v after a minute\n%s", url, err, s.output())
		}
	}
}
