package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/dev"
)

// TestSetupCredentialsWork runs a coordinator and a worker from the built
// binary with the credentials each setup script makes, as its manifests use
// them: the worker must register under its id, and the CLI must list jobs
// as admin. A certificate without the right names or roles, a key sluice
// cannot load or a token file it refuses fails here.
func TestSetupCredentialsWork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	c := sluiceCLI(t)
	for _, tc := range []struct {
		name, script string
		// the coordinator's and the worker's security flags, the worker's
		// id and the CLI's, given the setup's directory
		coordinator, worker, cli func(dir string) []string
		workerID                 string
		workerEnv, cliEnv        string // env file of SLUICE_TOKEN, if any
	}{
		{
			name: "compose: TLS and tokens", script: "compose/setup.sh",
			coordinator: func(d string) []string {
				return []string{"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server-key.pem", "--token-file=" + d + "/tokens"}
			},
			worker:   func(d string) []string { return []string{"--tls-ca=" + d + "/ca.pem"} },
			cli:      func(d string) []string { return []string{"--tls-ca=" + d + "/ca.pem"} },
			workerID: "w1", workerEnv: "w1.env", cliEnv: "admin.env",
		},
		{
			name: "kubernetes: mutual TLS", script: "k8s/setup.sh",
			coordinator: func(d string) []string {
				return []string{"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server-key.pem", "--tls-client-ca=" + d + "/ca.pem"}
			},
			worker: func(d string) []string {
				return []string{"--tls-ca=" + d + "/ca.pem", "--tls-cert=" + d + "/sluice-worker-0.pem", "--tls-key=" + d + "/sluice-worker-0-key.pem"}
			},
			cli: func(d string) []string {
				return []string{"--tls-ca=" + d + "/ca.pem", "--tls-cert=" + d + "/admin.pem", "--tls-key=" + d + "/admin-key.pem"}
			},
			workerID: "sluice-worker-0",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := runSetup(t, tc.script)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			etcdAddr := freeAddr(t)
			e, err := dev.StartEtcd(ctx, dev.EtcdConfig{Dir: filepath.Join(t.TempDir(), "etcd"), ClientAddr: etcdAddr, PeerAddr: freeAddr(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			// The certificates name 127.0.0.1 for callers on the host.
			grpcAddr := freeAddr(t)
			coord := startServer(t, nil, c.bin, append([]string{"coordinator", "--etcd-endpoints=" + etcdAddr, "--grpc-addr=" + grpcAddr}, tc.coordinator(dir)...)...)
			w := startServer(t, tokenEnv(t, dir, tc.workerEnv), c.bin, append([]string{"worker", "--id=" + tc.workerID, "--coordinator=" + grpcAddr}, tc.worker(dir)...)...)
			if !w.waitFor(t, "connected") {
				t.Fatalf("the worker did not register\nworker:\n%s\ncoordinator:\n%s", w.output(), coord.output())
			}
			if !coord.waitFor(t, "worker registered") || !strings.Contains(coord.output(), tc.workerID) {
				t.Errorf("the coordinator did not log worker %s registering:\n%s", tc.workerID, coord.output())
			}
			cmd := exec.Command(c.bin, append([]string{"jobs", "--coordinator=" + grpcAddr}, tc.cli(dir)...)...)
			cmd.Env = append(os.Environ(), tokenEnv(t, dir, tc.cliEnv)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("sluice jobs as admin: %v\n%s", err, out)
			}
		})
	}
}

// tokenEnv is the environment of an env file setup.sh made (SLUICE_TOKEN).
func tokenEnv(t *testing.T, dir, file string) []string {
	t.Helper()
	if file == "" {
		return nil
	}
	var env []string
	for k, v := range envFile(t, filepath.Join(dir, file)) {
		env = append(env, k+"="+v)
	}
	return env
}

// waitFor says whether the process printed s before it exited (or a
// minute passed: a bound on a hung start, not a timing assertion).
func (s *server) waitFor(t *testing.T, want string) bool {
	t.Helper()
	deadline := time.After(time.Minute)
	for !strings.Contains(s.output(), want) {
		select {
		case <-s.done:
			return strings.Contains(s.output(), want)
		case <-deadline:
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}
