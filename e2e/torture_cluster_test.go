package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tproc is one run of a child process of the torture test. Its output goes
// to a file of the log directory, which outlives a failed test.
type tproc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (p *tproc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tortureCluster runs every part of a Sluice cluster as its own process, so
// that kill -9 and SIGSTOP are real: an etcd (`sluice dev --infra-only
// --kafka-bootstrap`, which starts no broker), a broker (a second `sluice
// dev --infra-only` with its own, unused, etcd, so that the broker can go
// down and up alone), coordinators and workers.
type tortureCluster struct {
	t       *testing.T
	logDir  string
	dataDir string
	brokers string
	etcd    string
	// The broker process's own etcd; nothing uses it, but its ports and data
	// must stay the same across restarts.
	brokerEtcd, brokerEtcdPeer string
	coords                     []string
	workers                    []string

	mu    sync.Mutex
	procs map[string]*tproc
	runs  map[string]int
}

const brokerProc = "broker"

func newTortureCluster(t *testing.T, logDir string, coordinators, workers int) *tortureCluster {
	t.Helper()
	c := &tortureCluster{
		t: t, logDir: logDir, dataDir: t.TempDir(),
		brokers: freeAddr(t), etcd: freeAddr(t), brokerEtcd: freeAddr(t), brokerEtcdPeer: freeAddr(t),
		procs: map[string]*tproc{}, runs: map[string]int{},
	}
	for range coordinators {
		c.coords = append(c.coords, freeAddr(t))
	}
	for i := range workers {
		c.workers = append(c.workers, fmt.Sprintf("w%d", i+1))
	}
	t.Cleanup(c.closeAll)
	etcd, err := c.start("etcd", "dev", "--infra-only", "--data-dir", filepath.Join(c.dataDir, "etcd"),
		"--etcd-addr", c.etcd, "--etcd-peer-addr", freeAddr(t), "--kafka-bootstrap", c.brokers)
	if err == nil {
		err = waitLogErr(etcd, "is up", 30*time.Second)
	}
	if err == nil {
		err = c.startBroker()
	}
	for i := range c.coords {
		if err == nil {
			err = c.startCoordinator(i)
		}
	}
	for _, w := range c.workers {
		if err == nil {
			err = c.startWorker(w)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs `sluice args...` as the process called name. (It returns
// errors rather than failing the test: the nemesis calls it from its own
// goroutines.)
func (c *tortureCluster) start(name string, args ...string) (*tproc, error) {
	c.mu.Lock()
	c.runs[name]++
	log := filepath.Join(c.logDir, fmt.Sprintf("%s.%d.log", name, c.runs[name]))
	c.mu.Unlock()
	f, err := os.Create(log)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	cmd := exec.Command(sluiceBin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &tproc{name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return p, nil
}

func (c *tortureCluster) proc(name string) *tproc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name]
}

// waitLogErr waits until the process wrote s; it fails if the process exits
// or takes longer than timeout.
func waitLogErr(p *tproc, s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(p.log)
		if strings.Contains(string(b), s) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before it printed %q:\n%s", p.name, p.err, s, lastLines(string(b), 30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q within %s:\n%s", p.name, s, timeout, lastLines(string(b), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *tortureCluster) startBroker() error {
	// The port of a broker that just exited may linger for a moment.
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := c.start(brokerProc, "dev", "--infra-only", "--data-dir", filepath.Join(c.dataDir, "kafka"),
			"--kafka-addr", c.brokers, "--etcd-addr", c.brokerEtcd, "--etcd-peer-addr", c.brokerEtcdPeer)
		if err != nil {
			return err
		}
		err = waitLogErr(p, "is up", 30*time.Second)
		if err == nil {
			return nil
		}
		if !p.exited() || time.Now().After(deadline) {
			return fmt.Errorf("broker: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stopBroker stops the broker as an operator would (SIGINT: kfake writes
// its state and closes), or kills it if it does not exit within 20s.
func (c *tortureCluster) stopBroker() {
	p := c.proc(brokerProc)
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (c *tortureCluster) coordName(i int) string { return fmt.Sprintf("coordinator-%d", i) }

// startCoordinator starts coordinator i and waits until it listens.
func (c *tortureCluster) startCoordinator(i int) error {
	p, err := c.start(c.coordName(i), "coordinator", "--etcd-endpoints", c.etcd, "--grpc-addr", c.coords[i],
		"--session-ttl", "2s", "--heartbeat-timeout", "3s", "--log-level", "info")
	if err != nil {
		return err
	}
	return waitLogErr(p, "coordinator serving", 30*time.Second)
}

func (c *tortureCluster) startWorker(id string) error {
	_, err := c.start(id, "worker", "--coordinator", strings.Join(c.coords, ","), "--id", id, "--log-level", "info")
	return err
}

// restart starts a process that was killed again, with the same arguments.
func (c *tortureCluster) restart(name string) error {
	switch {
	case name == brokerProc:
		return c.startBroker()
	case strings.HasPrefix(name, "coordinator-"):
		var i int
		fmt.Sscanf(name, "coordinator-%d", &i)
		return c.startCoordinator(i)
	default:
		return c.startWorker(name)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *tortureCluster) kill(name string) {
	p := c.proc(name)
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (c *tortureCluster) signal(name string, sig syscall.Signal) {
	_ = c.proc(name).cmd.Process.Signal(sig)
}

// closeAll ends every process still running.
func (c *tortureCluster) closeAll() {
	c.mu.Lock()
	procs := make([]*tproc, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
