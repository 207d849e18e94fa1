package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// history is the log of every operation of a run, client and nemesis, with
// its start and end time.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []*hop
}

type hop struct {
	id         int
	start, end time.Duration
	actor      string // client, nemesis, final
	op         string
	target     string
	detail     string
	result     string
}

func (h *history) begin(actor, op, target, detail string) *hop {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := &hop{id: len(h.ops) + 1, start: time.Since(h.start), actor: actor, op: op, target: target, detail: detail, end: -1}
	h.ops = append(h.ops, o)
	return o
}

func (h *history) finish(o *hop, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o.end = time.Since(h.start)
	o.result = "ok"
	if err != nil {
		o.result = "error: " + err.Error()
	}
}

func (h *history) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, o := range h.ops {
		end := "   (running)"
		if o.end >= 0 {
			end = fmt.Sprintf("..%8.3fs", o.end.Seconds())
		}
		fmt.Fprintf(&b, "  #%-4d %8.3fs%s %-7s %-14s %-13s %s -> %s\n", o.id, o.start.Seconds(), end, o.actor, o.op, o.target, o.detail, o.result)
	}
	return b.String()
}

func (h *history) counts() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for _, o := range h.ops {
		out[o.op]++
	}
	return out
}

// genJob is what the generator believes about one job.
type genJob struct {
	kind    *jobKind
	exists  bool
	running bool
	v       variant
	gens    int // tags handed out
	tag     string
	// newTag is set by a reset of a Kafka sink job: its next run must carry
	// a new tag, so that its output is told from the earlier incarnation's.
	newTag bool
}

// generator issues random operations on the jobs, one at a time, as a user
// would: submit, update, stop, resume, reset, delete and resubmit.
type generator struct {
	rng     *rand.Rand
	c       *client.Client
	h       *history
	brokers string
	mirror  *sourceMirror
	jobs    []*genJob

	skip map[string]bool

	mu     sync.Mutex
	resets map[string]int
}

func newGenerator(rng *rand.Rand, c *client.Client, h *history, brokers string, mirror *sourceMirror, skip map[string]bool) *generator {
	g := &generator{rng: rng, c: c, h: h, brokers: brokers, mirror: mirror, skip: skip, resets: map[string]int{}}
	for _, k := range tortureJobs {
		g.jobs = append(g.jobs, &genJob{kind: k})
	}
	return g
}

// resetsAsked is how many resets of job were requested so far.
func (g *generator) resetsAsked(job string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.resets[job]
}

const opTimeout = 8 * time.Second

func (g *generator) call(actor, op string, j *genJob, detail string, fn func(ctx context.Context) error) error {
	o := g.h.begin(actor, op, j.kind.name, detail)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err := fn(ctx)
	g.h.finish(o, err)
	if err != nil {
		g.refresh(j)
	}
	return err
}

// refresh re-reads a job's state after an operation that failed (it may or
// may not have been applied).
func (g *generator) refresh(j *genJob) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	job, err := g.c.Job(ctx, j.kind.name)
	switch {
	case status.Code(err) == codes.NotFound:
		j.exists, j.running = false, false
	case err == nil:
		j.exists = true
		j.running = job.GetState() == sluicev1.JobState_JOB_STATE_RUNNING
	}
}

func (g *generator) randomVariant() variant {
	return variant{
		interval:   variantIntervals[g.rng.Intn(len(variantIntervals))],
		maxRecords: variantMax[g.rng.Intn(len(variantMax))],
		extra:      variantExtra[g.rng.Intn(len(variantExtra))],
		keyExpr:    variantKeys[g.rng.Intn(len(variantKeys))],
	}
}

// randomStart picks where a new incarnation starts: earliest, latest,
// explicit offsets (some partitions, the others earliest) or a time.
func (g *generator) randomStart(j *genJob, runStart time.Time, resetting bool) (*sluicev1.StartingOffsets, string) {
	r := g.rng.Intn(100)
	switch {
	case r < 45:
		return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_EARLIEST}}, "earliest"
	case r < 60:
		return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: sluicev1.StartPosition_START_POSITION_LATEST}}, "latest"
	case r < 90 || !resetting:
		ex := &sluicev1.ExplicitOffsets{}
		var parts []string
		for _, t := range j.kind.topics {
			for p := range sourceParts[t] {
				if g.rng.Intn(4) == 0 {
					continue // left to others: earliest
				}
				off := g.rng.Int63n(g.mirror.end(tp{t, p}) + 1)
				ex.Offsets = append(ex.Offsets, &sluicev1.PartitionOffset{Topic: t, Partition: p, Offset: off})
				parts = append(parts, fmt.Sprintf("%s/%d=%d", t, p, off))
			}
		}
		return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{Explicit: ex}}, "explicit[" + strings.Join(parts, " ") + "]"
	default:
		at := runStart.Add(time.Duration(g.rng.Int63n(int64(time.Since(runStart)) + 1)))
		return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Timestamp{Timestamp: timestamppb.New(at)}},
			"time+" + at.Sub(runStart).Round(time.Millisecond).String()
	}
}

func (g *generator) nextTag(j *genJob) string {
	j.gens++
	return fmt.Sprintf("%s-g%d", j.kind.name, j.gens)
}

func (g *generator) submit(actor string, j *genJob, runStart time.Time) {
	v := g.randomVariant()
	start, where := g.randomStart(j, runStart, false)
	tag := g.nextTag(j)
	spec := j.kind.spec(g.brokers, v, tag, start)
	err := g.call(actor, "submit", j, fmt.Sprintf("from %s, %s", where, fmtVariant(v, j, tag)), func(ctx context.Context) error {
		_, err := g.c.Submit(ctx, spec)
		return err
	})
	if err == nil {
		j.exists, j.running, j.v, j.tag, j.newTag = true, true, v, tag, false
	} else {
		// Whether it was stored or not, the next run carries a new tag.
		j.v, j.tag, j.newTag = v, tag, true
	}
}

func fmtVariant(v variant, j *genJob, tag string) string {
	s := fmt.Sprintf("interval %s, max %d", v.interval, v.maxRecords)
	if v.extra != "" {
		s += fmt.Sprintf(", extra filter %q", v.extra)
	}
	if j.kind.agg() && v.keyExpr != "" {
		s += fmt.Sprintf(", key %q", v.keyExpr)
	}
	if j.kind.sink {
		s += ", tag " + tag
	}
	return s
}

// update replaces the spec with an equivalent one (the results must not
// change). A Kafka sink job that was reset gets a new tag with it.
func (g *generator) update(actor string, j *genJob) {
	v := g.randomVariant()
	tag := j.tag
	if j.kind.sink && j.newTag {
		tag = g.nextTag(j)
	}
	spec := j.kind.spec(g.brokers, v, tag, nil)
	err := g.call(actor, "update", j, fmtVariant(v, j, tag), func(ctx context.Context) error {
		job, err := g.c.Update(ctx, spec)
		if err == nil {
			j.running = job.GetState() == sluicev1.JobState_JOB_STATE_RUNNING
		}
		return err
	})
	j.v, j.tag = v, tag
	if err == nil {
		j.newTag = false
	}
}

func (g *generator) stop(actor string, j *genJob) error {
	err := g.call(actor, "stop", j, "", func(ctx context.Context) error {
		_, err := g.c.Stop(ctx, j.kind.name)
		return err
	})
	if err == nil {
		j.running = false
	}
	return err
}

// resume runs a stopped job again; a reset Kafka sink job is resumed by an
// update that gives it a new tag.
func (g *generator) resume(actor string, j *genJob) {
	if j.kind.sink && j.newTag {
		// Never Resume with the old tag: the new incarnation's output
		// would carry the old one's.
		g.update(actor, j)
		if j.running || !j.exists || j.newTag {
			return
		}
	}
	if g.call(actor, "resume", j, "", func(ctx context.Context) error {
		_, err := g.c.Resume(ctx, j.kind.name)
		return err
	}) == nil {
		j.running = true
	}
}

func (g *generator) reset(actor string, j *genJob, runStart time.Time) {
	if j.running && g.stop(actor, j) != nil {
		return
	}
	to, where := g.randomStart(j, runStart, true)
	g.mu.Lock()
	g.resets[j.kind.name]++
	g.mu.Unlock()
	// Whatever the answer, it may have been applied.
	if j.kind.sink {
		j.newTag = true
	}
	_ = g.call(actor, "reset", j, "to "+where, func(ctx context.Context) error {
		_, err := g.c.ResetOffsets(ctx, j.kind.name, to)
		return err
	})
}

func (g *generator) delete(actor string, j *genJob) {
	if g.call(actor, "delete", j, "", func(ctx context.Context) error {
		return g.c.Delete(ctx, j.kind.name)
	}) == nil {
		j.exists, j.running = false, false
	}
}

// clientOps are the generator's operations on a running or stopped job,
// with their weights; TORTURE_SKIP can leave any of them out.
var clientOps = []struct {
	name   string
	weight int
}{{"update", 20}, {"stop", 20}, {"reset", 25}, {"delete", 20}, {"stop-resume", 15}}

// step runs one random operation on a random job.
func (g *generator) step(runStart time.Time) {
	j := g.jobs[g.rng.Intn(len(g.jobs))]
	if !j.exists {
		g.submit("client", j, runStart)
		return
	}
	if !j.running && g.rng.Intn(100) < 45 {
		g.resume("client", j)
		return
	}
	total := 0
	for _, op := range clientOps {
		if !g.skip[op.name] {
			total += op.weight
		}
	}
	if total == 0 {
		return
	}
	r := g.rng.Intn(total)
	op := ""
	for _, o := range clientOps {
		if g.skip[o.name] {
			continue
		}
		if r < o.weight {
			op = o.name
			break
		}
		r -= o.weight
	}
	switch op {
	case "update":
		g.update("client", j)
	case "stop":
		if j.running {
			g.stop("client", j)
		} else {
			g.resume("client", j)
		}
	case "reset":
		g.reset("client", j, runStart)
		if g.rng.Intn(2) == 0 {
			g.resume("client", j)
		}
	case "delete":
		g.delete("client", j)
		if g.rng.Intn(3) > 0 {
			g.submit("client", j, runStart)
		}
	case "stop-resume":
		if j.running && g.stop("client", j) == nil {
			g.resume("client", j)
		}
	}
}

// settle brings every job back to running (submitting, resuming or
// updating it), retrying while the cluster recovers.
func (g *generator) settle(runStart time.Time, deadline time.Time) error {
	for _, j := range g.jobs {
		for {
			g.refresh(j)
			if j.exists && j.running && !(j.kind.sink && j.newTag) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("job %s could not be brought back to running", j.kind.name)
			}
			if !j.exists {
				g.submit("final", j, runStart)
			} else {
				g.resume("final", j)
			}
			if !(j.exists && j.running) {
				time.Sleep(time.Second)
			}
		}
	}
	return nil
}

// nemesis breaks processes: kill -9 and restart a coordinator or worker,
// SIGSTOP and SIGCONT one, take the broker down and up, or freeze it. At
// most maxFaults faults are active at once; each heals after a random time.
type nemesis struct {
	rng       *rand.Rand
	c         *tortureCluster
	h         *history
	maxFaults int

	mu     sync.Mutex
	active map[string]bool
	wg     sync.WaitGroup
	stopc  chan struct{}
	counts map[string]int
	errs   []string // heals that failed: the cluster is not whole again
	skip   map[string]bool
}

// nemesisFaults are the faults; TORTURE_SKIP can leave any of them out.
var nemesisFaults = []string{"kill", "pause", "broker-down", "broker-pause"}

func newNemesis(rng *rand.Rand, c *tortureCluster, h *history, skip map[string]bool) *nemesis {
	return &nemesis{rng: rng, c: c, h: h, maxFaults: 2, active: map[string]bool{}, stopc: make(chan struct{}), counts: map[string]int{}, skip: skip}
}

func (n *nemesis) targets() []string {
	var ts []string
	for i := range n.c.coords {
		ts = append(ts, n.c.coordName(i))
	}
	ts = append(ts, n.c.workers...)
	return append(ts, brokerProc)
}

// step starts one fault, unless enough are active.
func (n *nemesis) step() {
	n.mu.Lock()
	if len(n.active) >= n.maxFaults {
		n.mu.Unlock()
		return
	}
	var free []string
	for _, t := range n.targets() {
		if !n.active[t] {
			free = append(free, t)
		}
	}
	target := free[n.rng.Intn(len(free))]
	var kinds []string
	for _, k := range nemesisFaults {
		if !n.skip[k] && strings.HasPrefix(k, "broker-") == (target == brokerProc) {
			kinds = append(kinds, strings.TrimPrefix(k, "broker-"))
		}
	}
	if len(kinds) == 0 {
		n.mu.Unlock()
		return
	}
	kind := kinds[n.rng.Intn(len(kinds))]
	if kind == "down" {
		kind = "broker-down"
	}
	var hold time.Duration
	switch {
	case kind == "kill":
		hold = time.Duration(200+n.rng.Intn(2800)) * time.Millisecond
	case kind == "broker-down":
		hold = time.Duration(1000+n.rng.Intn(4000)) * time.Millisecond
	case target == brokerProc:
		hold = time.Duration(500+n.rng.Intn(3500)) * time.Millisecond
	default:
		// Beyond the 3s heartbeat timeout and the 2s session TTL at times:
		// the frozen process wakes up as a zombie.
		hold = time.Duration(500+n.rng.Intn(7500)) * time.Millisecond
	}
	n.active[target] = true
	n.counts[kind]++
	n.mu.Unlock()

	o := n.h.begin("nemesis", kind, target, fmt.Sprintf("for %s", hold.Round(time.Millisecond)))
	switch kind {
	case "kill":
		n.c.kill(target)
	case "broker-down":
		n.c.stopBroker()
	case "pause":
		n.c.signal(target, syscall.SIGSTOP)
	}
	n.h.finish(o, nil)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTimer(hold)
		select {
		case <-t.C:
		case <-n.stopc:
			t.Stop()
		}
		heal := map[string]string{"kill": "restart", "broker-down": "broker-up", "pause": "resume-proc"}[kind]
		o := n.h.begin("nemesis", heal, target, "")
		var err error
		if kind == "pause" {
			n.c.signal(target, syscall.SIGCONT)
		} else {
			err = n.c.restart(target)
		}
		n.h.finish(o, err)
		if err != nil {
			n.mu.Lock()
			n.errs = append(n.errs, fmt.Sprintf("%s %s: %v", heal, target, err))
			n.mu.Unlock()
		}
		n.mu.Lock()
		delete(n.active, target)
		n.mu.Unlock()
	}()
}

// healAll ends every active fault now.
func (n *nemesis) healAll() {
	close(n.stopc)
	n.wg.Wait()
}
