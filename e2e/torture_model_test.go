package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The checker follows every write Sluice makes to etcd, in revision order,
// through a watch the test opens before the first job exists: job records,
// plans, commits (batch, results and offsets in one transaction), resets and
// deletes. From them it knows each job incarnation exactly, including
// batches that were pruned or deleted later, and checks:
//   - every plan starts at the committed offsets;
//   - every commit's ranges start where the offsets stood (contiguous, no
//     gap, no overlap) and move the offsets to their ends;
//   - every committed collect result equals the ground truth of exactly the
//     batch's ranges (per-key count, and sum, min and max where asked);
//   - for the Kafka sink, every source record an incarnation committed
//     appears in the output, read with read_committed, exactly once, with
//     that incarnation's tag, its batch's id and the right key and value.
//
// Writes the test cannot attribute to an operation of its own (a reset
// nobody asked for) are reported too.

// anomaly is one thing the checker found wrong.
type anomaly struct {
	at   time.Duration // since the start of the run
	job  string
	kind string // lost, duplicated, wrong, protocol, failed
	msg  string
}

// incarnation is a job from its starting offsets (submit or reset) to the
// next reset or its deletion. Its expected output is the ground truth of
// the offsets it covers.
type incarnation struct {
	job     string
	gen     int // how many times the job was created so far
	n       int // incarnation number of the job, from 1
	kind    string
	rev     int64
	at      time.Duration
	start   map[tp]int64
	end     map[tp]int64
	batches []*committedBatch
	// dropped are batches planned and never committed (a reset or a delete
	// dropped them); a Kafka sink may have written their output.
	dropped []*sluicev1.Batch
	tags    map[string]bool
	// ids are the Job.incarnation values the job record had during it.
	ids     map[string]bool
	ended   string
	records int64
}

func (inc *incarnation) String() string {
	ids := "none"
	if len(inc.batches) > 0 {
		ids = fmt.Sprintf("%d..%d", inc.batches[0].id, inc.batches[len(inc.batches)-1].id)
	}
	tags := slices.Sorted(maps.Keys(inc.tags))
	return fmt.Sprintf("%s #%d (gen %d, %s at +%s rev %d): start %s, committed %s, batches %s (%d), records %d, dropped plans %d, tags %v, ended %q",
		inc.job, inc.n, inc.gen, inc.kind, inc.at.Round(time.Millisecond), inc.rev, fmtOffsets(inc.start), fmtOffsets(inc.end),
		ids, len(inc.batches), inc.records, len(inc.dropped), tags, inc.ended)
}

type committedBatch struct {
	id     int64
	rev    int64
	ranges []*sluicev1.OffsetRange
}

// jobModel is what etcd says about one job name.
type jobModel struct {
	kind    *jobKind
	gen     int
	exists  bool
	state   sluicev1.JobState
	spec    *sluicev1.JobSpec
	message string
	incID   string       // Job.incarnation of the last job record
	offsets map[tp]int64 // nil before the starting offsets are resolved
	planned map[int64]*sluicev1.Batch
	lastID  int64
	cur     *incarnation
	incs    []*incarnation
}

// pendingCheck is a committed result waiting for the source mirror to
// reach the end of its ranges.
type pendingCheck struct {
	job    string
	inc    *incarnation
	batch  *sluicev1.Batch
	result *sluicev1.BatchResult
}

type tortureModel struct {
	prefix string
	start  time.Time
	mirror *sourceMirror
	// resets counts reset requests per job, so that a reset nobody asked
	// for is seen.
	resetAsked func(job string) int

	mu        sync.Mutex
	jobs      map[string]*jobModel
	anomalies []anomaly
	lost      int64
	dup       int64
	wrong     int64
	pending   []pendingCheck
	rev       int64 // last revision applied
	checked   int   // batch results checked
	commits   int
	resets    map[string]int
}

func newTortureModel(prefix string, start time.Time, mirror *sourceMirror, resetAsked func(string) int) *tortureModel {
	m := &tortureModel{prefix: prefix, start: start, mirror: mirror, resetAsked: resetAsked,
		jobs: map[string]*jobModel{}, resets: map[string]int{}}
	for _, k := range tortureJobs {
		m.jobs[k.name] = &jobModel{kind: k, planned: map[int64]*sluicev1.Batch{}}
	}
	return m
}

func (m *tortureModel) since() time.Duration { return time.Since(m.start) }

func (m *tortureModel) report(job, kind, format string, args ...any) {
	m.anomalies = append(m.anomalies, anomaly{at: m.since(), job: job, kind: kind, msg: fmt.Sprintf(format, args...)})
}

// watch applies every event under the prefix from revision rev on, until
// ctx ends. A watch that breaks (compaction past it, etcd gone) is reported:
// the checker would otherwise miss writes.
func (m *tortureModel) watch(ctx context.Context, cli *clientv3.Client, rev int64, progress chan<- int64) {
	wch := cli.Watch(clientv3.WithRequireLeader(ctx), m.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithPrevKV())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			m.mu.Lock()
			m.report("", "protocol", "etcd watch of %s broke at revision %d: %v (the checker misses writes from here on)", m.prefix, m.rev, err)
			m.mu.Unlock()
			return
		}
		if wr.IsProgressNotify() {
			select {
			case progress <- wr.Header.Revision:
			default:
			}
			continue
		}
		// A transaction's events share a revision and arrive together.
		for i := 0; i < len(wr.Events); {
			j := i
			rev := wr.Events[i].Kv.ModRevision
			for j < len(wr.Events) && wr.Events[j].Kv.ModRevision == rev {
				j++
			}
			m.apply(rev, wr.Events[i:j])
			i = j
		}
		select {
		case progress <- wr.Header.Revision:
		default:
		}
	}
}

// jobEvents are one job's writes in one revision.
type jobEvents struct {
	jobPut    *sluicev1.Job
	created   bool
	jobDel    bool
	offPut    *sluicev1.CommittedOffsets
	offDel    bool
	planPuts  []*sluicev1.Batch
	commits   []*sluicev1.Batch
	batchDels []int64
	results   map[int64]*sluicev1.BatchResult
}

func (m *tortureModel) apply(rev int64, evs []*clientv3.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev = rev
	byJob := map[string]*jobEvents{}
	var order []string
	get := func(job string) *jobEvents {
		je := byJob[job]
		if je == nil {
			je = &jobEvents{results: map[int64]*sluicev1.BatchResult{}}
			byJob[job] = je
			order = append(order, job)
		}
		return je
	}
	for _, ev := range evs {
		rest, ok := strings.CutPrefix(string(ev.Kv.Key), m.prefix)
		if !ok {
			continue
		}
		kind, name, _ := strings.Cut(rest, "/")
		put := ev.Type == mvccpb.PUT
		switch kind {
		case "jobs":
			je := get(name)
			if !put {
				je.jobDel = true
				continue
			}
			j := &sluicev1.Job{}
			if err := proto.Unmarshal(ev.Kv.Value, j); err != nil {
				m.report(name, "protocol", "rev %d: undecodable job record: %v", rev, err)
				continue
			}
			je.jobPut, je.created = j, ev.Kv.CreateRevision == ev.Kv.ModRevision
		case "offsets":
			je := get(name)
			if !put {
				je.offDel = true
				continue
			}
			o := &sluicev1.CommittedOffsets{}
			if err := offsetstore.Decode(ev.Kv.Value, o); err != nil {
				m.report(name, "protocol", "rev %d: undecodable offsets: %v", rev, err)
				continue
			}
			je.offPut = o
		case "batches", "results":
			job, idStr, _ := strings.Cut(name, "/")
			id, err := strconv.ParseInt(idStr, 10, 64)
			if err != nil {
				continue
			}
			je := get(job)
			if !put {
				if kind == "batches" {
					je.batchDels = append(je.batchDels, id)
				}
				continue
			}
			if kind == "results" {
				r := &sluicev1.BatchResult{}
				if err := offsetstore.Decode(ev.Kv.Value, r); err != nil {
					m.report(job, "protocol", "rev %d: undecodable result of batch %d: %v", rev, id, err)
					continue
				}
				je.results[id] = r
				continue
			}
			b := &sluicev1.Batch{}
			if err := offsetstore.Decode(ev.Kv.Value, b); err != nil {
				m.report(job, "protocol", "rev %d: undecodable batch %d: %v", rev, id, err)
				continue
			}
			if b.GetState() == sluicev1.BatchState_BATCH_STATE_COMMITTED {
				je.commits = append(je.commits, b)
			} else {
				je.planPuts = append(je.planPuts, b)
			}
		}
	}
	for _, job := range order {
		jm := m.jobs[job]
		if jm == nil {
			continue // not a torture job
		}
		m.applyJob(rev, job, jm, byJob[job])
	}
	m.drainPending(false)
}

func (m *tortureModel) applyJob(rev int64, job string, jm *jobModel, je *jobEvents) {
	if je.jobDel {
		if jm.offsets != nil && !je.offDel {
			m.report(job, "protocol", "rev %d: job deleted but its offsets were kept", rev)
		}
		m.endIncarnation(jm, "deleted")
		jm.exists, jm.offsets, jm.lastID = false, nil, 0
		if je.jobPut == nil {
			return
		}
	}
	if je.jobPut != nil && je.created {
		if jm.exists && !je.jobDel {
			m.report(job, "protocol", "rev %d: job created again without a delete", rev)
		}
		jm.gen++
		jm.exists, jm.offsets, jm.lastID = true, nil, 0
		jm.planned = map[int64]*sluicev1.Batch{}
		m.setJob(jm, je.jobPut)
	}
	if !jm.exists && (je.offPut != nil || len(je.planPuts) > 0 || len(je.commits) > 0) {
		m.report(job, "protocol", "rev %d: offsets or batches written for a job that does not exist (after its delete)", rev)
		return
	}
	if je.jobPut != nil {
		// A reset writes the job's new incarnation id with the offsets.
		jm.incID = je.jobPut.GetIncarnation()
	}
	for _, id := range je.batchDels {
		if p := jm.planned[id]; p != nil {
			if jm.cur != nil {
				jm.cur.dropped = append(jm.cur.dropped, p)
			}
			delete(jm.planned, id)
		}
	}
	for _, b := range je.planPuts {
		m.plan(rev, job, jm, b)
	}
	switch {
	case len(je.commits) > 1:
		m.report(job, "protocol", "rev %d: %d batches committed in one transaction", rev, len(je.commits))
	case len(je.commits) == 1 && je.offPut == nil:
		m.report(job, "protocol", "rev %d: batch %d committed without moving the offsets", rev, je.commits[0].GetId())
	case len(je.commits) == 1:
		m.commit(rev, job, jm, je.commits[0], je.offPut, je.results[je.commits[0].GetId()])
	case je.offPut != nil && jm.offsets == nil && (je.jobPut == nil || je.created):
		// A runner resolved the starting offsets. (A reset writes the job
		// record with its new incarnation id in the same transaction; it
		// may come before the runner resolved anything.)
		m.newIncarnation(rev, jm, job, "start", je.offPut)
	case je.offPut != nil:
		asked := m.resetAsked(job)
		m.resets[job]++
		if m.resets[job] > asked {
			m.report(job, "protocol", "rev %d: offsets rewritten outside a commit, but only %d resets were asked for and this is the %d-th: %s",
				rev, asked, m.resets[job], fmtOffsets(offsetMapOf(je.offPut)))
		}
		if len(jm.planned) > 0 {
			m.report(job, "protocol", "rev %d: a reset kept planned batches %v: they would run from the old offsets", rev, slices.Sorted(maps.Keys(jm.planned)))
		}
		m.endIncarnation(jm, "reset")
		m.newIncarnation(rev, jm, job, "reset", je.offPut)
	}
	if len(je.commits) == 0 {
		for id := range je.results {
			m.report(job, "protocol", "rev %d: result of batch %d written outside its commit", rev, id)
		}
	}
	if je.jobPut != nil && !je.created {
		m.setJob(jm, je.jobPut)
	}
}

func (m *tortureModel) setJob(jm *jobModel, j *sluicev1.Job) {
	if j.GetState() == sluicev1.JobState_JOB_STATE_FAILED && jm.state != sluicev1.JobState_JOB_STATE_FAILED {
		m.report(j.GetSpec().GetName(), "failed", "job failed: %s", j.GetMessage())
	}
	jm.state, jm.spec, jm.message, jm.incID = j.GetState(), j.GetSpec(), j.GetMessage(), j.GetIncarnation()
	if jm.cur != nil && jm.incID != "" {
		jm.cur.ids[jm.incID] = true
	}
	if jm.cur != nil && jm.state == sluicev1.JobState_JOB_STATE_RUNNING && jm.kind.sink {
		jm.cur.tags[specTag(jm.spec)] = true
	}
}

func offsetMapOf(o *sluicev1.CommittedOffsets) map[tp]int64 {
	out := map[tp]int64{}
	for _, po := range o.GetOffsets() {
		out[tp{po.GetTopic(), po.GetPartition()}] = po.GetOffset()
	}
	return out
}

func fmtOffsets(o map[tp]int64) string {
	keys := slices.SortedFunc(maps.Keys(o), func(a, b tp) int { return strings.Compare(a.String(), b.String()) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, o[k])
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func (m *tortureModel) newIncarnation(rev int64, jm *jobModel, job, kind string, offs *sluicev1.CommittedOffsets) {
	start := offsetMapOf(offs)
	inc := &incarnation{job: job, gen: jm.gen, n: len(jm.incs) + 1, kind: kind, rev: rev, at: m.since(),
		start: start, end: maps.Clone(start), tags: map[string]bool{}, ids: map[string]bool{}}
	if jm.incID != "" {
		inc.ids[jm.incID] = true
	}
	jm.cur, jm.offsets = inc, maps.Clone(start)
	jm.incs = append(jm.incs, inc)
	if jm.state == sluicev1.JobState_JOB_STATE_RUNNING && jm.kind.sink {
		inc.tags[specTag(jm.spec)] = true
	}
	for _, t := range jm.kind.topics {
		for p := range sourceParts[t] {
			if _, ok := start[tp{t, p}]; !ok {
				m.report(job, "protocol", "rev %d: %s offsets %s lack partition %s/%d", rev, kind, fmtOffsets(start), t, p)
			}
		}
	}
	// Starting offsets that are earliest or explicit are known exactly: no
	// record is ever deleted, so earliest is 0.
	if want := exactStart(jm.spec.GetSource().GetStartingOffsets(), jm.kind.topics); kind == "start" && want != nil && !maps.Equal(start, want) {
		m.report(job, "wrong", "rev %d: starting offsets %s, but the spec asks for %s", rev, fmtOffsets(start), fmtOffsets(want))
	}
}

// exactStart returns the offsets a starting position resolves to when they
// do not depend on time: earliest (0, nothing is deleted) or explicit with
// earliest for the others. nil otherwise.
func exactStart(so *sluicev1.StartingOffsets, topics []string) map[tp]int64 {
	out := map[tp]int64{}
	for _, t := range topics {
		for p := range sourceParts[t] {
			out[tp{t, p}] = 0
		}
	}
	switch k := so.GetKind().(type) {
	case nil:
		return out
	case *sluicev1.StartingOffsets_Position:
		if k.Position == sluicev1.StartPosition_START_POSITION_EARLIEST {
			return out
		}
	case *sluicev1.StartingOffsets_Explicit:
		if k.Explicit.GetOthers() == sluicev1.StartPosition_START_POSITION_LATEST {
			return nil
		}
		for _, po := range k.Explicit.GetOffsets() {
			out[tp{po.GetTopic(), po.GetPartition()}] = po.GetOffset()
		}
		return out
	}
	return nil
}

func (m *tortureModel) endIncarnation(jm *jobModel, why string) {
	if jm.cur == nil {
		return
	}
	for _, id := range slices.Sorted(maps.Keys(jm.planned)) {
		jm.cur.dropped = append(jm.cur.dropped, jm.planned[id])
	}
	jm.planned = map[int64]*sluicev1.Batch{}
	jm.cur.ended = why
	jm.cur = nil
}

func (m *tortureModel) plan(rev int64, job string, jm *jobModel, b *sluicev1.Batch) {
	if jm.offsets == nil {
		m.report(job, "protocol", "rev %d: batch %d planned before the job's starting offsets were recorded", rev, b.GetId())
		return
	}
	if b.GetId() <= jm.lastID {
		m.report(job, "protocol", "rev %d: batch %d planned, but batch %d is already committed", rev, b.GetId(), jm.lastID)
	}
	for _, r := range b.GetRanges() {
		k := tp{r.GetTopic(), r.GetPartition()}
		if r.GetFromOffset() != jm.offsets[k] {
			m.report(job, "protocol", "rev %d: batch %d planned %s [%d, %d) while the committed offset is %d",
				rev, b.GetId(), k, r.GetFromOffset(), r.GetUntilOffset(), jm.offsets[k])
		}
	}
	if old := jm.planned[b.GetId()]; old != nil && !slices.EqualFunc(old.GetRanges(), b.GetRanges(), rangeEqual) {
		m.report(job, "protocol", "rev %d: planned batch %d rewritten with other ranges: %s, then %s", rev, b.GetId(), fmtRanges(old.GetRanges()), fmtRanges(b.GetRanges()))
	}
	if len(b.GetDataLoss()) > 0 {
		m.report(job, "lost", "rev %d: batch %d records data loss %v, but no record was deleted", rev, b.GetId(), b.GetDataLoss())
	}
	jm.planned[b.GetId()] = b
}

func rangeEqual(a, b *sluicev1.OffsetRange) bool { return proto.Equal(a, b) }

func fmtRanges(rs []*sluicev1.OffsetRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s/%d[%d,%d)", r.GetTopic(), r.GetPartition(), r.GetFromOffset(), r.GetUntilOffset())
	}
	return strings.Join(parts, " ")
}

func (m *tortureModel) commit(rev int64, job string, jm *jobModel, b *sluicev1.Batch, offs *sluicev1.CommittedOffsets, res *sluicev1.BatchResult) {
	m.commits++
	inc := jm.cur
	if inc == nil || jm.offsets == nil {
		m.report(job, "protocol", "rev %d: batch %d committed with no starting offsets", rev, b.GetId())
		return
	}
	if p := jm.planned[b.GetId()]; p == nil {
		m.report(job, "protocol", "rev %d: batch %d committed but never planned in this incarnation", rev, b.GetId())
	} else if !slices.EqualFunc(p.GetRanges(), b.GetRanges(), rangeEqual) {
		m.report(job, "protocol", "rev %d: batch %d committed ranges %s but planned %s", rev, b.GetId(), fmtRanges(b.GetRanges()), fmtRanges(p.GetRanges()))
	}
	delete(jm.planned, b.GetId())
	if b.GetId() <= jm.lastID {
		m.report(job, "protocol", "rev %d: batch %d committed after batch %d", rev, b.GetId(), jm.lastID)
	}
	jm.lastID = b.GetId()
	want := maps.Clone(jm.offsets)
	for _, r := range b.GetRanges() {
		k := tp{r.GetTopic(), r.GetPartition()}
		from, until, at := r.GetFromOffset(), r.GetUntilOffset(), jm.offsets[k]
		switch {
		case until < from:
			m.report(job, "wrong", "rev %d: batch %d has a backwards range %s [%d, %d)", rev, b.GetId(), k, from, until)
		case from > at:
			m.lost += from - at
			m.report(job, "lost", "rev %d: batch %d starts %s at %d but the committed offset was %d: offsets [%d, %d) are never processed",
				rev, b.GetId(), k, from, at, at, from)
		case from < at:
			m.dup += min(until, at) - from
			m.report(job, "duplicated", "rev %d: batch %d starts %s at %d but the committed offset was %d: offsets [%d, %d) are processed again",
				rev, b.GetId(), k, from, at, from, min(until, at))
		}
		want[k] = until
		inc.records += max(until-from, 0)
	}
	if len(b.GetDataLoss()) > 0 {
		m.report(job, "lost", "rev %d: committed batch %d records data loss %v, but no record was deleted", rev, b.GetId(), b.GetDataLoss())
	}
	got := offsetMapOf(offs)
	if !maps.Equal(got, want) {
		m.report(job, "protocol", "rev %d: batch %d moved the offsets to %s, want %s", rev, b.GetId(), fmtOffsets(got), fmtOffsets(want))
	}
	jm.offsets = got
	inc.end = maps.Clone(got)
	inc.batches = append(inc.batches, &committedBatch{id: b.GetId(), rev: rev, ranges: b.GetRanges()})
	if jm.kind.agg() {
		if res == nil {
			m.report(job, "lost", "rev %d: batch %d committed without its collect result", rev, b.GetId())
			return
		}
		m.pending = append(m.pending, pendingCheck{job: job, inc: inc, batch: b, result: res})
	}
}

// aggTruth is the expected aggregate of one key.
type aggTruth struct {
	count, sum, min, max int64
}

// addTruth counts record n of the known stream into want.
func addTruth(want map[string]*aggTruth, n int64) {
	a := tAmt(n)
	t := want[tKey(n)]
	if t == nil {
		t = &aggTruth{min: a, max: a}
		want[tKey(n)] = t
	}
	t.count++
	t.sum += a
	t.min, t.max = min(t.min, a), max(t.max, a)
}

// drainPending checks the results whose ranges the mirror now holds (all
// of them when final).
func (m *tortureModel) drainPending(final bool) {
	kept := m.pending[:0]
	for _, pc := range m.pending {
		ready := true
		for _, r := range pc.batch.GetRanges() {
			ready = ready && m.mirror.has(tp{r.GetTopic(), r.GetPartition()}, r.GetUntilOffset())
		}
		if !ready && !final {
			kept = append(kept, pc)
			continue
		}
		m.checkResult(pc, ready)
	}
	m.pending = kept
}

func (m *tortureModel) checkResult(pc pendingCheck, ready bool) {
	m.checked++
	b := pc.batch
	kind := m.jobs[pc.job].kind
	if !ready {
		m.report(pc.job, "wrong", "batch %d ranges %s go beyond the source's end offsets", b.GetId(), fmtRanges(b.GetRanges()))
		return
	}
	want := map[string]*aggTruth{}
	for _, r := range b.GetRanges() {
		k := tp{r.GetTopic(), r.GetPartition()}
		for off := r.GetFromOffset(); off < r.GetUntilOffset(); off++ {
			n, _ := m.mirror.get(k, off)
			if n < 0 || !kind.keep(n) {
				continue
			}
			addTruth(want, n)
		}
	}
	got := map[string]*sluicev1.KeyAggregate{}
	for _, ka := range pc.result.GetAggregates() {
		if ka.GetCount() == 0 {
			continue
		}
		got[ka.GetKey()] = ka
	}
	var diffs []string
	for _, key := range slices.Sorted(maps.Keys(want)) {
		w, g := want[key], got[key]
		gc := g.GetCount()
		switch {
		case gc < w.count:
			m.lost += w.count - gc
		case gc > w.count:
			m.dup += gc - w.count
		case kind.sumAmt && (g.GetSum() != float64(w.sum) || g.GetMin() != float64(w.min) || g.GetMax() != float64(w.max)):
			m.wrong++
		default:
			continue
		}
		if kind.sumAmt {
			diffs = append(diffs, fmt.Sprintf("%s: count %d sum %v min %v max %v, want %d %d %d %d", key, gc, g.GetSum(), g.GetMin(), g.GetMax(), w.count, w.sum, w.min, w.max))
		} else {
			diffs = append(diffs, fmt.Sprintf("%s: count %d, want %d", key, gc, w.count))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(got)) {
		if want[key] == nil {
			m.wrong += got[key].GetCount()
			diffs = append(diffs, fmt.Sprintf("%s: count %d, want none", key, got[key].GetCount()))
		}
	}
	if len(diffs) > 0 {
		m.report(pc.job, "wrong", "incarnation %d, batch %d %s: result differs from the ground truth of its ranges: %s",
			pc.inc.n, b.GetId(), fmtRanges(b.GetRanges()), strings.Join(diffs, "; "))
	}
}

// checkIncarnationIDs compares the incarnations the checker saw with the
// job records' incarnation ids: one id per incarnation, never reused.
func (m *tortureModel) checkIncarnationIDs() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range tortureJobs {
		owner := map[string]*incarnation{}
		for _, inc := range m.jobs[k.name].incs {
			if len(inc.ids) > 1 {
				m.report(k.name, "protocol", "incarnation %d (%s) ran under several job incarnation ids %v: an id changed without a reset or a new submit",
					inc.n, inc, slices.Sorted(maps.Keys(inc.ids)))
			}
			for id := range inc.ids {
				if o := owner[id]; o != nil {
					m.report(k.name, "protocol", "job incarnation id %s is shared by incarnations %d and %d: a reset or a new submit kept it", id, o.n, inc.n)
				}
				owner[id] = inc
			}
		}
	}
}

// checkSink compares the sink topic, as read_committed shows it, with what
// every incarnation of the Kafka sink job committed: each kept source
// record of a committed batch exactly once, with the incarnation's tag and
// the batch's id; records of batches planned and dropped (a reset or delete
// came first) at most once and whole ranges at a time; nothing else.
func (m *tortureModel) checkSink(job string, out *sinkOutput) {
	m.mu.Lock()
	defer m.mu.Unlock()
	jm := m.jobs[job]
	kind := jm.kind
	tagOwner := map[string]*incarnation{}
	for _, inc := range jm.incs {
		for tag := range inc.tags {
			if o := tagOwner[tag]; o != nil {
				m.report(job, "protocol", "tag %s ran in incarnations %d and %d (a test bug: every reset of a sink job is followed by an update with a new tag)", tag, o.n, inc.n)
			}
			tagOwner[tag] = inc
		}
	}
	lookup := func(inc *incarnation, k tp, off int64) []outRec {
		var recs []outRec
		for tag := range inc.tags {
			recs = append(recs, out.get(tag, k, off)...)
		}
		return recs
	}
	for _, inc := range jm.incs {
		var lost, dup, wrong int64
		var examples []string
		note := func(format string, args ...any) {
			if len(examples) < 8 {
				examples = append(examples, fmt.Sprintf(format, args...))
			}
		}
		if len(inc.tags) == 0 && len(inc.batches) > 0 {
			m.report(job, "protocol", "incarnation %d committed %d batches but its job record never ran in it", inc.n, len(inc.batches))
		}
		// check compares the output of one source record with what batch
		// id must have written; it returns whether anything was written.
		check := func(k tp, off, id int64, what string) (kept, written bool) {
			n, ok := m.mirror.get(k, off)
			recs := lookup(inc, k, off)
			if !ok || n < 0 || !kind.keep(n) {
				if len(recs) > 0 {
					wrong += int64(len(recs))
					note("%s/%d (n %d, filtered out) written %d times by %s %d", k, off, n, len(recs), what, id)
				}
				return false, false
			}
			if len(recs) > 1 {
				dup += int64(len(recs) - 1)
				note("%s/%d of %s %d written %d times (sluice-batch %v)", k, off, what, id, len(recs), recBatches(recs))
			}
			for _, r := range recs {
				if r.batch != id || r.n != n {
					wrong++
					note("%s/%d of %s %d written with sluice-batch %d and n %d, want n %d", k, off, what, id, r.batch, r.n, n)
				}
			}
			return true, len(recs) > 0
		}
		for _, b := range inc.batches {
			for _, r := range b.ranges {
				k := tp{r.GetTopic(), r.GetPartition()}
				for off := r.GetFromOffset(); off < r.GetUntilOffset(); off++ {
					if kept, written := check(k, off, b.id, "batch"); kept && !written {
						lost++
						note("%s/%d of batch %d missing", k, off, b.id)
					}
				}
			}
		}
		for _, d := range inc.dropped {
			for _, r := range d.GetRanges() {
				k := tp{r.GetTopic(), r.GetPartition()}
				var expected, written int
				for off := r.GetFromOffset(); off < r.GetUntilOffset(); off++ {
					kept, w := check(k, off, d.GetId(), "dropped batch")
					if kept {
						expected++
					}
					if w {
						written++
					}
				}
				if written > 0 && written < expected {
					lost += int64(expected - written)
					note("dropped batch %d range %s/%d [%d, %d): %d of its %d records written (a transaction is all or nothing)",
						d.GetId(), k.topic, k.part, r.GetFromOffset(), r.GetUntilOffset(), written, expected)
				}
			}
		}
		m.lost, m.dup, m.wrong = m.lost+lost, m.dup+dup, m.wrong+wrong
		if lost+dup+wrong > 0 {
			m.report(job, "wrong", "incarnation %d (%s): sink output lost %d, duplicated %d, wrong %d; e.g. %s",
				inc.n, inc.String(), lost, dup, wrong, strings.Join(examples, "; "))
		}
	}
	var strays []string
	var nstray int64
	out.unseen(func(k outKey, recs []outRec) {
		if !strings.HasPrefix(k.tag, job+"-g") {
			return
		}
		nstray += int64(len(recs))
		if len(strays) < 10 {
			owner := "no incarnation"
			if o := tagOwner[k.tag]; o != nil {
				owner = fmt.Sprintf("incarnation %d", o.n)
			}
			strays = append(strays, fmt.Sprintf("%s %s/%d sluice-batch %v (%s)", k.tag, k.src, k.off, recBatches(recs), owner))
		}
	})
	if nstray > 0 {
		m.wrong += nstray
		m.report(job, "wrong", "%d output records outside every range an incarnation planned: %s", nstray, strings.Join(strays, "; "))
	}
	if len(out.bad) > 0 {
		m.wrong += int64(len(out.bad))
		m.report(job, "wrong", "%d output records with a key that does not go with their value: %s", len(out.bad), strings.Join(out.bad[:min(len(out.bad), 5)], "; "))
	}
	if len(out.odd) > 0 {
		m.wrong += int64(len(out.odd))
		m.report(job, "wrong", "%d output records without a source, batch or tag header: %s", len(out.odd), strings.Join(out.odd[:min(len(out.odd), 5)], "; "))
	}
}

func recBatches(recs []outRec) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.batch
	}
	slices.Sort(out)
	return out
}
