package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The multi-host test's names: namespaces are sluicens-<pid>-<host>, the
// one link in the root namespace sluicens<pid> (at most 15 characters). The pid of the test process that
// made them tells a stale leftover (its process is gone) from a run in
// progress.
const netnsPrefix = "sluicens"

// netnet is a private network of hosts on one machine: one Linux network
// namespace per host, each with a veth pair whose other end is a port of a
// bridge. The bridge has a namespace of its own, the switch, whose empty
// firewall forwards everything (the root namespace's may drop bridged
// frames, as Docker's FORWARD policy does). One more veth links the root
// namespace to the switch with an address on the subnet, so the test
// process reaches every host; the hosts reach each other through the
// switch and nothing else.
type netnet struct {
	t      *testing.T
	pid    string
	subnet string // "10.213.N."
	sw     string // the switch's namespace
	uplink string // the root namespace's link to the switch
	hosts  map[string]*nshost
}

type nshost struct {
	ns   string // namespace
	port string // the bridge port in the switch, the other end of the host's eth0
	ip   string
}

// requireNetns skips the test, or fails it under CI, when this machine
// cannot make network namespaces.
func requireNetns(t *testing.T) {
	t.Helper()
	reason := ""
	if _, err := exec.LookPath("ip"); err != nil {
		reason = "the ip command (iproute2) is not installed"
	} else if os.Geteuid() != 0 {
		reason = "making network namespaces needs root"
	} else {
		probe := fmt.Sprintf("%s-%d-probe", netnsPrefix, os.Getpid())
		if err := ipCmd("netns", "add", probe); err != nil {
			reason = "cannot make a network namespace: " + err.Error()
		} else {
			if err := ipCmd("netns", "exec", probe, "ip", "link", "set", "lo", "up"); err != nil {
				reason = "cannot run a command in a network namespace: " + err.Error()
			}
			if err := ipCmd("netns", "del", probe); err != nil {
				t.Fatalf("remove the probe namespace: %v", err)
			}
		}
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the multi-host test cannot run here: %s", reason)
	}
	t.Skipf("the multi-host test cannot run here: %s", reason)
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func ipOut(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// stale says whether a name is one this test made (the prefix, an optional
// dash, a pid) and a leftover: its process is gone, or it is this process,
// which has made nothing yet.
func stale(name string) bool {
	rest, ok := strings.CutPrefix(name, netnsPrefix)
	if !ok {
		return false
	}
	rest = strings.TrimPrefix(rest, "-")
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	pid, err := strconv.Atoi(rest[:end])
	if err != nil {
		return false
	}
	if pid == os.Getpid() {
		return true
	}
	_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, os.ErrNotExist)
}

// removeStale removes the namespaces and links a crashed run left, and
// kills the processes it left in them.
func removeStale(t *testing.T) {
	t.Helper()
	list, err := ipOut("netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if stale(f[0]) {
			t.Logf("removing the stale namespace %s", f[0])
			killNamespace(t, f[0])
			if err := ipCmd("netns", "del", f[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	links, err := ipOut("-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(links, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if stale(name) {
			t.Logf("removing the stale link %s", name)
			// A veth goes by itself with its namespace, once the processes
			// killed in it have exited.
			if err := ipCmd("link", "del", name); err != nil && ipCmd("link", "show", "dev", name) == nil {
				t.Fatal(err)
			}
		}
	}
}

// killNamespace kills what runs in a namespace (this test's processes).
func killNamespace(t *testing.T, ns string) {
	out, err := ipOut("netns", "pids", ns)
	if err != nil {
		t.Logf("list the processes of %s: %v", ns, err)
		return
	}
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// newNetnet makes the switch and a namespace per host, with addresses
// .10, .11, ... in host order; everything goes at the end of the test.
func newNetnet(t *testing.T, hosts ...string) *netnet {
	t.Helper()
	requireNetns(t)
	removeStale(t)
	n := &netnet{t: t, pid: strconv.Itoa(os.Getpid()), hosts: map[string]*nshost{}}
	n.sw = fmt.Sprintf("%s-%s-switch", netnsPrefix, n.pid)
	n.uplink = netnsPrefix + n.pid
	n.subnet = freeSubnet(t)
	t.Cleanup(n.remove)

	n.must("netns", "add", n.sw)
	n.must("-n", n.sw, "link", "add", "br0", "type", "bridge")
	n.must("-n", n.sw, "link", "set", "br0", "up")
	n.must("link", "add", n.uplink, "type", "veth", "peer", "name", "uplink", "netns", n.sw)
	n.must("-n", n.sw, "link", "set", "uplink", "master", "br0", "up")
	n.must("addr", "add", n.subnet+"1/24", "dev", n.uplink)
	n.must("link", "set", n.uplink, "up")
	for i, name := range hosts {
		h := &nshost{
			ns:   fmt.Sprintf("%s-%s-%s", netnsPrefix, n.pid, name),
			port: "to-" + name,
			ip:   fmt.Sprintf("%s%d", n.subnet, 10+i),
		}
		n.hosts[name] = h
		n.must("netns", "add", h.ns)
		n.must("-n", n.sw, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		n.must("-n", n.sw, "link", "set", h.port, "master", "br0", "up")
		n.must("-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
		n.must("-n", h.ns, "link", "set", "eth0", "up")
		n.must("-n", h.ns, "link", "set", "lo", "up")
	}
	t.Logf("hosts on %s0/24 (switch %s, test process %s1 on %s): %v", n.subnet, n.sw, n.subnet, n.uplink, n.addrs())
	return n
}

// freeSubnet picks a 10.213.N.0/24 that no address or route of the machine
// uses, starting from one derived from the pid so parallel runs differ.
func freeSubnet(t *testing.T) string {
	t.Helper()
	addrs, err := ipOut("-4", "addr", "show")
	if err != nil {
		t.Fatal(err)
	}
	routes, err := ipOut("-4", "route", "show", "table", "all")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 250 {
		s := fmt.Sprintf("10.213.%d.", (os.Getpid()+i)%250+1)
		if !strings.Contains(addrs, s) && !strings.Contains(routes, s) {
			return s
		}
	}
	t.Fatal("no free 10.213.N.0/24 subnet")
	return ""
}

func (n *netnet) addrs() map[string]string {
	m := map[string]string{}
	for name, h := range n.hosts {
		m[name] = h.ip
	}
	return m
}

func (n *netnet) must(args ...string) {
	n.t.Helper()
	if err := ipCmd(args...); err != nil {
		n.t.Fatal(err)
	}
}

// remove deletes the namespaces, and with them the veths. The processes'
// own cleanups ran before (registered later).
func (n *netnet) remove() {
	for _, h := range n.hosts {
		killNamespace(n.t, h.ns)
		if err := ipCmd("netns", "del", h.ns); err != nil {
			n.t.Errorf("cleanup: %v", err)
		}
	}
	if err := ipCmd("netns", "del", n.sw); err != nil {
		n.t.Errorf("cleanup: %v", err)
	}
	// The uplink goes with the switch's end, unless setup stopped before.
	if ipCmd("link", "show", "dev", n.uplink) == nil {
		if err := ipCmd("link", "del", n.uplink); err != nil && ipCmd("link", "show", "dev", n.uplink) == nil {
			n.t.Errorf("cleanup: %v", err)
		}
	}
}

func (n *netnet) host(name string) *nshost {
	n.t.Helper()
	h, ok := n.hosts[name]
	if !ok {
		n.t.Fatalf("no host %q", name)
	}
	return h
}

// start runs the sluice binary on a host.
func (n *netnet) start(host string, env []string, args ...string) *proc {
	n.t.Helper()
	return startProcEnv(n.t, env, "ip", append([]string{"netns", "exec", n.host(host).ns, sluiceBin}, args...)...)
}

// cut drops every packet between host a and hosts bs, both ways, with
// blackhole routes: connections stall as behind a broken switch rather
// than being refused.
func (n *netnet) cut(a string, bs ...string) {
	n.t.Helper()
	for _, b := range bs {
		n.must("-n", n.host(a).ns, "route", "add", "blackhole", n.host(b).ip+"/32")
		n.must("-n", n.host(b).ns, "route", "add", "blackhole", n.host(a).ip+"/32")
	}
}

func (n *netnet) heal(a string, bs ...string) {
	n.t.Helper()
	for _, b := range bs {
		n.must("-n", n.host(a).ns, "route", "del", "blackhole", n.host(b).ip+"/32")
		n.must("-n", n.host(b).ns, "route", "del", "blackhole", n.host(a).ip+"/32")
	}
}

// unplug takes the host's port on the switch down: the host loses its
// carrier and every packet to and from it is lost.
func (n *netnet) unplug(host string) { n.must("-n", n.sw, "link", "set", n.host(host).port, "down") }
func (n *netnet) plug(host string)   { n.must("-n", n.sw, "link", "set", n.host(host).port, "up") }

// waitOutputSince waits until the process printed s after the first from
// bytes of its output.
func (p *proc) waitOutputSince(t *testing.T, from int, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := p.out.String()
		if strings.Contains(out[min(from, len(out)):], s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %s:\n%s", s, timeout, lastLines(out, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) mark() int { return len(p.out.String()) }

// lastCommitted returns the job's last committed batch, read from etcd
// directly: a coordinator cut off from etcd would stall the API.
func lastCommitted(store *offsetstore.Store, job string) (*sluicev1.Batch, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	last, err := store.LastBatch(ctx, job)
	if err != nil {
		return nil, err
	}
	b := last.Value
	if b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED && b.GetId() > 1 {
		return store.Batch(ctx, job, b.GetId()-1)
	}
	return b, nil
}

// waitCommit waits for a committed batch that satisfies ok.
func waitCommit(t *testing.T, store *offsetstore.Store, job, what string, timeout time.Duration, ok func(*sluicev1.Batch) bool) *sluicev1.Batch {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var b *sluicev1.Batch
	var err error
	for {
		b, err = lastCommitted(store, job)
		if err == nil && b.GetState() == sluicev1.BatchState_BATCH_STATE_COMMITTED && ok(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("no batch %s within %s: last committed %v, error %v", what, timeout, b, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func committedAfter(at time.Time) func(*sluicev1.Batch) bool {
	return func(b *sluicev1.Batch) bool { return b.GetCommitTime().AsTime().After(at) }
}

// TestMultiHostNetns runs etcd with the broker, two coordinators and three
// workers each on its own host (a network namespace with its own address)
// while a job counts a stream, and breaks the network under it: the leader
// loses etcd (the standby takes over), the new leader loses the workers,
// and a worker is unplugged in the middle of a task. Each fault heals; the
// counts must equal the ground truth, the offsets the ends, and the
// batches must tile every partition.
func TestMultiHostNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	const (
		topic = "hosts"
		parts = 6
	)
	n := newNetnet(t, "infra", "c0", "c1", "w1", "w2", "w3")
	infra := n.host("infra").ip
	brokers, etcdAddr := infra+":9092", infra+":2379"
	n.start("infra", nil, "dev", "--infra-only", "--data-dir", t.TempDir(),
		"--kafka-addr", brokers, "--etcd-addr", etcdAddr, "--etcd-peer-addr", infra+":2380")

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	store := offsetstore.New(cli, offsetstore.Options{})
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd on %s not up: %v", etcdAddr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	coordAddr := func(h string) string { return n.host(h).ip + ":7070" }
	// --insecure: plaintext without authentication on a non-loopback
	// address is refused otherwise; this network is the test's own.
	coordinator := func(h string) *proc {
		return n.start(h, nil, "coordinator", "--etcd-endpoints", etcdAddr, "--grpc-addr", coordAddr(h), "--insecure",
			"--session-ttl", "2s", "--heartbeat-timeout", "3s", "--log-level", "info")
	}
	coords := coordAddr("c0") + "," + coordAddr("c1")
	worker := func(h, failpoints string) *proc {
		return n.start(h, []string{"SLUICE_FAILPOINTS=" + failpoints}, "worker", "--coordinator", coords, "--id", h, "--log-level", "info")
	}
	procs := map[string]*proc{"c0": coordinator("c0")}
	procs["c0"].waitOutput(t, "leading: addr=", 30*time.Second)
	procs["c1"] = coordinator("c1")
	procs["c1"].waitOutput(t, "campaigning for leadership", 30*time.Second)
	// leader says which coordinator leads now, from the election in etcd
	// (a short lease on a busy machine can move it at any time), and the
	// other one.
	leader := func() (string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, store.ElectionPrefix(), clientv3.WithFirstCreate()...)
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("no leader in etcd: %v", err)
		}
		if string(resp.Kvs[0].Value) == coordAddr("c0") {
			return "c0", "c1"
		}
		return "c1", "c0"
	}
	// waitCoordinators waits until either coordinator printed s since the
	// marks: the one that prints it is the leader at that moment.
	marks := func() map[string]int { return map[string]int{"c0": procs["c0"].mark(), "c1": procs["c1"].mark()} }
	waitCoordinators := func(since map[string]int, s string, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			for h, p := range procs {
				if out := p.out.String(); strings.Contains(out[since[h]:], s) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no coordinator printed %q within %s:\nc0: %s\nc1: %s", s, timeout,
					lastLines(procs["c0"].out.String(), 20), lastLines(procs["c1"].out.String(), 20))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	worker("w1", "")
	worker("w2", "")
	w3 := worker("w3", "")
	for _, w := range []string{"w1", "w2", "w3"} {
		waitCoordinators(map[string]int{}, "worker registered: worker_id="+w, 30*time.Second)
	}

	createTopic(t, brokers, topic, parts)
	s := newStream()
	s.produce(t, brokers, topic, parts, 3000, 0)
	c := (&procCluster{t: t}).client(coordAddr("c0"), coordAddr("c1"))
	waitServing(t, c)
	spec := chaosJob(brokers, topic)
	spec.Name = "hosts-count"
	job := spec.GetName()
	if _, err := c.Submit(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	// Records keep coming through every fault.
	stop := make(chan struct{})
	var producing sync.WaitGroup
	producing.Add(1)
	go func() {
		defer producing.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.produce(t, brokers, topic, parts, 200, 1000)
		}
	}()
	var stopOnce sync.Once
	stopProducing := func() { stopOnce.Do(func() { close(stop); producing.Wait() }) }
	t.Cleanup(stopProducing)
	waitCommit(t, store, job, "3", 60*time.Second, func(b *sluicev1.Batch) bool { return b.GetId() >= 3 })

	// 1. The leader loses etcd (and the broker, on the same host): its lease
	// runs out, it stops leading, and the standby leads. The cut is in place
	// when n.cut returns: a batch committed after that is the new leader's.
	old, standby := leader()
	oldMark, standbyMark := procs[old].mark(), procs[standby].mark()
	n.cut(old, "infra")
	cut := time.Now()
	procs[standby].waitOutputSince(t, standbyMark, "leading: addr=", 30*time.Second)
	leads := time.Since(cut)
	first := waitCommit(t, store, job, "committed by the new leader", 60*time.Second, committedAfter(cut))
	failover := first.GetCommitTime().AsTime().Sub(cut)
	t.Logf("1. leader %s cut off from etcd: %s leads within %s and committed batch %d %s after the cut (session TTL 2s)",
		old, standby, leads.Round(time.Millisecond), first.GetId(), failover.Round(time.Millisecond))
	procs[old].waitOutputSince(t, oldMark, "leadership ended", 30*time.Second)
	n.heal(old, "infra")
	healed := time.Now()
	waitCommit(t, store, job, "after healing "+old, 30*time.Second, committedAfter(healed))

	// 2. The leader loses the workers: it drops them after the heartbeat
	// timeout; they come back when the network heals.
	lead, _ := leader()
	mark := procs[lead].mark()
	n.cut(lead, "w1", "w2", "w3")
	cut = time.Now()
	for _, w := range []string{"w1", "w2", "w3"} {
		procs[lead].waitOutputSince(t, mark, "worker missed heartbeats, dropping it: worker_id="+w, 30*time.Second)
	}
	dropped := time.Since(cut)
	since := marks()
	n.heal(lead, "w1", "w2", "w3")
	healed = time.Now()
	for _, w := range []string{"w1", "w2", "w3"} {
		waitCoordinators(since, "worker registered: worker_id="+w, 60*time.Second)
	}
	b := waitCommit(t, store, job, "after healing the workers", 30*time.Second, committedAfter(healed))
	t.Logf("2. leader %s cut off from the workers: all dropped %s after the cut; batch %d committed %s after healing",
		lead, dropped.Round(time.Millisecond), b.GetId(), b.GetCommitTime().AsTime().Sub(healed).Round(time.Millisecond))

	// 3. A worker is unplugged in the middle of a task: its tasks run
	// elsewhere, and when it is back, what it sends for them is ignored. A
	// failpoint freezes it after the first record of its second task, so the
	// cable is pulled while the task runs, not between tasks.
	w3.interrupt(t)
	w3 = worker("w3", "mid-task:2:stop")
	w3.waitOutput(t, "failpoint mid-task:2:stop reached", 60*time.Second)
	since = marks()
	n.unplug("w3")
	cut = time.Now()
	if err := w3.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitCoordinators(since, "worker missed heartbeats, dropping it: worker_id=w3", 30*time.Second)
	b = waitCommit(t, store, job, "without w3", 30*time.Second, committedAfter(time.Now()))
	t.Logf("3. worker w3 unplugged mid-task: batch %d committed without it %s after the cut",
		b.GetId(), b.GetCommitTime().AsTime().Sub(cut).Round(time.Millisecond))
	since = marks()
	n.plug("w3")
	waitCoordinators(since, "worker registered: worker_id=w3", 60*time.Second)

	stopProducing()
	batches := verifyExact(t, c, job, s, 60*time.Second)
	var retried int32
	for _, b := range batches {
		retried += b.GetMetrics().GetTaskAttempts() - b.GetMetrics().GetTasks()
	}
	if retried < 1 {
		t.Errorf("task attempts beyond one per task = %d, want at least 1 (w3's task ran again elsewhere)", retried)
	}
	s.mu.Lock()
	t.Logf("%d records, %d batches, %d task attempts beyond the first; failover %s", s.n, len(batches), retried, failover.Round(time.Millisecond))
	s.mu.Unlock()
}
