package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The torture test is only as good as its checker: these cases feed it
// etcd writes and sink output with one fault each and expect it to say so.

// scenario drives a tortureModel with synthetic etcd transactions over a
// synthetic source: offset o of partition p holds n = o*parts + p, as the
// producers write it.
type scenario struct {
	m      *tortureModel
	rev    int64
	resets int
}

func newScenario(offsets int64) *scenario {
	mirror := newSourceMirror()
	for topic, parts := range sourceParts {
		for p := range parts {
			s := make([]int64, offsets)
			for o := range s {
				s[o] = int64(o)*int64(parts) + int64(p)
			}
			mirror.ns[tp{topic, p}] = s
		}
	}
	sc := &scenario{}
	sc.m = newTortureModel("/sluice/", time.Now(), mirror, func(string) int { return sc.resets })
	return sc
}

func (sc *scenario) txn(evs ...*clientv3.Event) {
	sc.rev++
	for _, ev := range evs {
		ev.Kv.ModRevision = sc.rev
		if ev.Kv.CreateRevision < 0 {
			ev.Kv.CreateRevision = sc.rev
		}
	}
	sc.m.apply(sc.rev, evs)
}

// put makes a put event; created marks the key's creation.
func put(key string, msg proto.Message, created bool) *clientv3.Event {
	b, err := proto.Marshal(msg)
	if err != nil {
		panic(err)
	}
	kv := &mvccpb.KeyValue{Key: []byte("/sluice/" + key), Value: b, CreateRevision: 1}
	if created {
		kv.CreateRevision = -1
	}
	return &clientv3.Event{Type: mvccpb.PUT, Kv: kv}
}

func del(key string) *clientv3.Event {
	return &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/sluice/" + key)}}
}

func batchKey(job string, id int64) string  { return fmt.Sprintf("batches/%s/%020d", job, id) }
func resultKey(job string, id int64) string { return fmt.Sprintf("results/%s/%020d", job, id) }

func jobRecord(k *jobKind, tag string, state sluicev1.JobState) *sluicev1.Job {
	v := variant{interval: 200 * time.Millisecond, maxRecords: 1500}
	return &sluicev1.Job{Spec: k.spec("b:9092", v, tag, nil), State: state, Incarnation: "inc-" + tag}
}

func offsetsAt(k *jobKind, at func(tp) int64) *sluicev1.CommittedOffsets {
	o := &sluicev1.CommittedOffsets{}
	for _, topic := range k.topics {
		for p := range sourceParts[topic] {
			o.Offsets = append(o.Offsets, &sluicev1.PartitionOffset{Topic: topic, Partition: p, Offset: at(tp{topic, p})})
		}
	}
	return o
}

func uniformRanges(k *jobKind, from, until int64) []*sluicev1.OffsetRange {
	var rs []*sluicev1.OffsetRange
	for _, topic := range k.topics {
		for p := range sourceParts[topic] {
			rs = append(rs, &sluicev1.OffsetRange{Topic: topic, Partition: p, FromOffset: from, UntilOffset: until})
		}
	}
	return rs
}

// truthResult computes a batch's correct result the plain way.
func truthResult(sc *scenario, k *jobKind, rs []*sluicev1.OffsetRange) *sluicev1.BatchResult {
	byKey := map[string]*sluicev1.KeyAggregate{}
	for _, r := range rs {
		for off := r.GetFromOffset(); off < r.GetUntilOffset(); off++ {
			n, _ := sc.m.mirror.get(tp{r.GetTopic(), r.GetPartition()}, off)
			if !k.keep(n) {
				continue
			}
			ka := byKey[tKey(n)]
			if ka == nil {
				ka = &sluicev1.KeyAggregate{Key: tKey(n), Min: 1e9}
				byKey[tKey(n)] = ka
			}
			ka.Count++
			if k.sumAmt {
				ka.Sum += float64(tAmt(n))
				ka.Min = min(ka.Min, float64(tAmt(n)))
				ka.Max = max(ka.Max, float64(tAmt(n)))
			}
		}
	}
	res := &sluicev1.BatchResult{}
	for _, ka := range byKey {
		if !k.sumAmt {
			ka.Min = 0
		}
		res.Aggregates = append(res.Aggregates, ka)
	}
	return res
}

// planAndCommit logs batch id over rs and commits it with res (the truth when nil).
func (sc *scenario) planAndCommit(k *jobKind, id int64, rs []*sluicev1.OffsetRange, offs *sluicev1.CommittedOffsets, res *sluicev1.BatchResult) {
	sc.txn(put(batchKey(k.name, id), &sluicev1.Batch{Job: k.name, Id: id, Ranges: rs, State: sluicev1.BatchState_BATCH_STATE_PLANNED}, true))
	sc.commit(k, id, rs, offs, res)
}

func (sc *scenario) commit(k *jobKind, id int64, rs []*sluicev1.OffsetRange, offs *sluicev1.CommittedOffsets, res *sluicev1.BatchResult) {
	evs := []*clientv3.Event{
		put(batchKey(k.name, id), &sluicev1.Batch{Job: k.name, Id: id, Ranges: rs, State: sluicev1.BatchState_BATCH_STATE_COMMITTED}, false),
		put("offsets/"+k.name, offs, false),
	}
	if k.agg() {
		if res == nil {
			res = truthResult(sc, k, rs)
		}
		evs = append(evs, put(resultKey(k.name, id), res, true))
	}
	sc.txn(evs...)
}

func at(v int64) func(tp) int64 { return func(tp) int64 { return v } }

// start creates the job and records its starting offsets at 0, then
// commits batch 1 over [0, 10) of every partition.
func (sc *scenario) start(k *jobKind, tag string) {
	sc.txn(put("jobs/"+k.name, jobRecord(k, tag, sluicev1.JobState_JOB_STATE_RUNNING), true))
	sc.txn(put("offsets/"+k.name, offsetsAt(k, at(0)), true))
	sc.planAndCommit(k, 1, uniformRanges(k, 0, 10), offsetsAt(k, at(10)), nil)
}

func kindNamed(name string) *jobKind {
	for _, k := range tortureJobs {
		if k.name == name {
			return k
		}
	}
	panic(name)
}

func TestTortureCheckerCollect(t *testing.T) {
	count, stats := kindNamed("count-a"), kindNamed("stats-ab")
	for _, tt := range []struct {
		name  string
		run   func(sc *scenario)
		kinds []string // anomaly kinds expected, in order; none for a clean run
		lost  int64
		dup   int64
		wrong int64
	}{
		{name: "clean", run: func(sc *scenario) {
			sc.start(count, "")
			sc.planAndCommit(count, 2, uniformRanges(count, 10, 25), offsetsAt(count, at(25)), nil)
			sc.start(stats, "")
		}},
		{name: "gap", kinds: []string{"lost"}, lost: 2, run: func(sc *scenario) {
			sc.start(count, "")
			rs := uniformRanges(count, 10, 20)
			rs[1].FromOffset = 12
			sc.txn(put(batchKey(count.name, 2), &sluicev1.Batch{Job: count.name, Id: 2, Ranges: rs, State: sluicev1.BatchState_BATCH_STATE_PLANNED}, true))
			sc.m.mu.Lock()
			sc.m.anomalies = nil // the plan is already wrong: look at the commit
			sc.m.mu.Unlock()
			sc.commit(count, 2, rs, offsetsAt(count, at(20)), nil)
		}},
		{name: "overlap", kinds: []string{"duplicated"}, dup: 3, run: func(sc *scenario) {
			sc.start(count, "")
			rs := uniformRanges(count, 10, 20)
			rs[0].FromOffset = 7
			sc.m.jobs[count.name].planned[2] = &sluicev1.Batch{Id: 2, Ranges: rs}
			sc.commit(count, 2, rs, offsetsAt(count, at(20)), nil)
		}},
		{name: "count too high", kinds: []string{"wrong"}, dup: 1, run: func(sc *scenario) {
			sc.start(count, "")
			rs := uniformRanges(count, 10, 20)
			res := truthResult(sc, count, rs)
			res.Aggregates[0].Count++
			sc.planAndCommit(count, 2, rs, offsetsAt(count, at(20)), res)
		}},
		{name: "key missing", kinds: []string{"wrong"}, run: func(sc *scenario) {
			sc.start(count, "")
			rs := uniformRanges(count, 10, 20)
			res := truthResult(sc, count, rs)
			res.Aggregates = res.Aggregates[1:]
			sc.planAndCommit(count, 2, rs, offsetsAt(count, at(20)), res)
		}},
		{name: "sum off", kinds: []string{"wrong"}, wrong: 1, run: func(sc *scenario) {
			sc.start(stats, "")
			rs := uniformRanges(stats, 10, 20)
			res := truthResult(sc, stats, rs)
			res.Aggregates[0].Sum++
			sc.planAndCommit(stats, 2, rs, offsetsAt(stats, at(20)), res)
		}},
		{name: "result missing", kinds: []string{"lost"}, run: func(sc *scenario) {
			sc.start(count, "")
			rs := uniformRanges(count, 10, 20)
			sc.txn(put(batchKey(count.name, 2), &sluicev1.Batch{Job: count.name, Id: 2, Ranges: rs, State: sluicev1.BatchState_BATCH_STATE_PLANNED}, true))
			sc.txn(put(batchKey(count.name, 2), &sluicev1.Batch{Job: count.name, Id: 2, Ranges: rs, State: sluicev1.BatchState_BATCH_STATE_COMMITTED}, false),
				put("offsets/"+count.name, offsetsAt(count, at(20)), false))
		}},
		{name: "commit never planned", kinds: []string{"protocol"}, run: func(sc *scenario) {
			sc.start(count, "")
			sc.commit(count, 2, uniformRanges(count, 10, 20), offsetsAt(count, at(20)), nil)
		}},
		{name: "offsets moved elsewhere", kinds: []string{"protocol"}, run: func(sc *scenario) {
			sc.start(count, "")
			sc.planAndCommit(count, 2, uniformRanges(count, 10, 20), offsetsAt(count, at(21)), nil)
		}},
		{name: "reset nobody asked for", kinds: []string{"protocol"}, run: func(sc *scenario) {
			sc.start(count, "")
			sc.txn(put("offsets/"+count.name, offsetsAt(count, at(3)), false), put("jobs/"+count.name, jobRecord(count, "r", sluicev1.JobState_JOB_STATE_STOPPED), false))
		}},
		{name: "asked reset drops the planned batch", run: func(sc *scenario) {
			sc.start(count, "")
			sc.txn(put(batchKey(count.name, 2), &sluicev1.Batch{Job: count.name, Id: 2, Ranges: uniformRanges(count, 10, 20), State: sluicev1.BatchState_BATCH_STATE_PLANNED}, true))
			sc.resets++
			sc.txn(put("offsets/"+count.name, offsetsAt(count, at(3)), false), del(batchKey(count.name, 2)),
				put("jobs/"+count.name, jobRecord(count, "r", sluicev1.JobState_JOB_STATE_STOPPED), false))
			sc.planAndCommit(count, 2, uniformRanges(count, 3, 8), offsetsAt(count, at(8)), nil)
		}},
		{name: "reset keeps the planned batch", kinds: []string{"protocol", "lost", "lost", "lost", "lost"}, lost: 28, run: func(sc *scenario) {
			sc.start(count, "")
			sc.txn(put(batchKey(count.name, 2), &sluicev1.Batch{Job: count.name, Id: 2, Ranges: uniformRanges(count, 10, 20), State: sluicev1.BatchState_BATCH_STATE_PLANNED}, true))
			sc.resets++
			sc.txn(put("offsets/"+count.name, offsetsAt(count, at(3)), false), put("jobs/"+count.name, jobRecord(count, "r", sluicev1.JobState_JOB_STATE_STOPPED), false))
			// The old plan then commits over the new offsets.
			sc.m.jobs[count.name].planned[2] = &sluicev1.Batch{Id: 2, Ranges: uniformRanges(count, 10, 20)}
			sc.commit(count, 2, uniformRanges(count, 10, 20), offsetsAt(count, at(20)), nil)
		}},
		{name: "reset before the starting offsets were resolved", run: func(sc *scenario) {
			sc.txn(put("jobs/"+count.name, jobRecord(count, "a", sluicev1.JobState_JOB_STATE_STOPPED), true))
			sc.resets++
			sc.txn(put("offsets/"+count.name, offsetsAt(count, at(5)), true), put("jobs/"+count.name, jobRecord(count, "b", sluicev1.JobState_JOB_STATE_STOPPED), false))
			sc.txn(put("jobs/"+count.name, jobRecord(count, "b", sluicev1.JobState_JOB_STATE_RUNNING), false))
			sc.planAndCommit(count, 1, uniformRanges(count, 5, 9), offsetsAt(count, at(9)), nil)
		}},
		{name: "starting offsets not the spec's", kinds: []string{"wrong"}, run: func(sc *scenario) {
			sc.txn(put("jobs/"+count.name, jobRecord(count, "", sluicev1.JobState_JOB_STATE_RUNNING), true))
			sc.txn(put("offsets/"+count.name, offsetsAt(count, at(5)), true))
		}},
		{name: "write after delete", kinds: []string{"protocol"}, run: func(sc *scenario) {
			sc.start(count, "")
			sc.txn(del("jobs/"+count.name), del("offsets/"+count.name), del(batchKey(count.name, 1)), del(resultKey(count.name, 1)))
			sc.txn(put(batchKey(count.name, 2), &sluicev1.Batch{Job: count.name, Id: 2, Ranges: uniformRanges(count, 10, 20), State: sluicev1.BatchState_BATCH_STATE_PLANNED}, true))
		}},
		{name: "incarnation id changes without a reset", kinds: []string{"protocol"}, run: func(sc *scenario) {
			sc.start(count, "a")
			sc.txn(put("jobs/"+count.name, jobRecord(count, "b", sluicev1.JobState_JOB_STATE_RUNNING), false))
		}},
		{name: "reset keeps the incarnation id", kinds: []string{"protocol"}, run: func(sc *scenario) {
			sc.start(count, "a")
			sc.resets++
			sc.txn(put("offsets/"+count.name, offsetsAt(count, at(3)), false), put("jobs/"+count.name, jobRecord(count, "a", sluicev1.JobState_JOB_STATE_STOPPED), false))
		}},
		{name: "reset with a new incarnation id", run: func(sc *scenario) {
			sc.start(count, "a")
			sc.resets++
			sc.txn(put("offsets/"+count.name, offsetsAt(count, at(3)), false), put("jobs/"+count.name, jobRecord(count, "b", sluicev1.JobState_JOB_STATE_STOPPED), false))
			sc.txn(put("jobs/"+count.name, jobRecord(count, "b", sluicev1.JobState_JOB_STATE_RUNNING), false))
		}},
		{name: "job failed", kinds: []string{"failed"}, run: func(sc *scenario) {
			sc.start(count, "")
			j := jobRecord(count, "", sluicev1.JobState_JOB_STATE_FAILED)
			j.Message = "batch 2: task failed 4 times"
			sc.txn(put("jobs/"+count.name, j, false))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sc := newScenario(100)
			tt.run(sc)
			sc.m.checkIncarnationIDs()
			sc.m.mu.Lock()
			defer sc.m.mu.Unlock()
			sc.m.drainPending(true)
			var kinds []string
			for _, a := range sc.m.anomalies {
				kinds = append(kinds, a.kind)
			}
			if !slices.Equal(kinds, tt.kinds) {
				t.Errorf("anomalies %v, want kinds %v:\n%s", kinds, tt.kinds, fmtAnomalies(sc.m.anomalies, 0))
			}
			if tt.lost != 0 && sc.m.lost != tt.lost || tt.dup != 0 && sc.m.dup != tt.dup || tt.wrong != 0 && sc.m.wrong != tt.wrong {
				t.Errorf("lost %d, duplicated %d, wrong %d; want %d, %d, %d", sc.m.lost, sc.m.dup, sc.m.wrong, tt.lost, tt.dup, tt.wrong)
			}
		})
	}
}

// sinkOutputOf writes what a correct sink would write for rs under tag
// and batch.
func sinkOutputOf(sc *scenario, out *sinkOutput, tag string, batch int64, rs []*sluicev1.OffsetRange) {
	k := kindNamed("sink-b")
	for _, r := range rs {
		src := tp{r.GetTopic(), r.GetPartition()}
		for off := r.GetFromOffset(); off < r.GetUntilOffset(); off++ {
			n, _ := sc.m.mirror.get(src, off)
			if k.keep(n) {
				out.put(tag, src, off, outRec{batch: batch, n: n})
			}
		}
	}
}

// firstKept is the first offset of a range the sink job keeps.
func firstKept(sc *scenario, r *sluicev1.OffsetRange) int64 {
	for off := r.GetFromOffset(); ; off++ {
		n, _ := sc.m.mirror.get(tp{r.GetTopic(), r.GetPartition()}, off)
		if keepAmt10(n) {
			return off
		}
	}
}

func TestTortureCheckerSink(t *testing.T) {
	k := kindNamed("sink-b")
	b1 := uniformRanges(k, 0, 10)
	src := func(r *sluicev1.OffsetRange) tp { return tp{r.GetTopic(), r.GetPartition()} }
	for _, tt := range []struct {
		name  string
		run   func(sc *scenario, out *sinkOutput)
		lost  int64
		dup   int64
		wrong int64
	}{
		{name: "clean", run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
		}},
		{name: "missing", lost: 1, run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			out.replace("sink-b-g1", src(b1[1]), firstKept(sc, b1[1]))
		}},
		{name: "twice", dup: 1, run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			off := firstKept(sc, b1[2])
			n, _ := sc.m.mirror.get(src(b1[2]), off)
			out.put("sink-b-g1", src(b1[2]), off, outRec{batch: 1, n: n})
		}},
		{name: "wrong batch header", wrong: 1, run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			off := firstKept(sc, b1[0])
			n, _ := sc.m.mirror.get(src(b1[0]), off)
			out.replace("sink-b-g1", src(b1[0]), off, outRec{batch: 7, n: n})
		}},
		{name: "another record's value", wrong: 1, run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			out.replace("sink-b-g1", src(b1[0]), firstKept(sc, b1[0]), outRec{batch: 1, n: 99999})
		}},
		{name: "output of an unknown tag", wrong: 1, run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			out.put("sink-b-g9", src(b1[0]), 3, outRec{batch: 1, n: 9})
		}},
		{name: "a key that does not go with the value", wrong: 1, run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			out.bad = append(out.bad, "tsink-out/0 offset 3: key \"c-k01\", want \"c-k05\" for n 7")
		}},
		{name: "dropped batch written whole", run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			sinkOutputOf(sc, out, "sink-b-g1", 2, uniformRanges(k, 10, 20)[:2])
		}},
		{name: "dropped batch written in part", lost: 1, run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			r := uniformRanges(k, 10, 20)[0]
			sinkOutputOf(sc, out, "sink-b-g1", 2, []*sluicev1.OffsetRange{r})
			out.replace("sink-b-g1", src(r), firstKept(sc, r))
		}},
		{name: "old incarnation's dropped batch under the new tag", wrong: 5, run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			// n 30, 33, 36, 39 and 42, all kept.
			sinkOutputOf(sc, out, "sink-b-g2", 2, []*sluicev1.OffsetRange{{Topic: srcB, Partition: 0, FromOffset: 10, UntilOffset: 15}})
		}},
		{name: "a filtered-out record written", wrong: 1, run: func(sc *scenario, out *sinkOutput) {
			sinkOutputOf(sc, out, "sink-b-g1", 1, b1)
			// Offset 0 of tsrc-b/0 is n 0, whose amt is 0.
			out.put("sink-b-g2", tp{srcB, 0}, 0, outRec{batch: 3, n: 0})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sc := newScenario(100)
			sc.start(k, "sink-b-g1")
			// Batch 2 is planned, then a reset drops it; the new
			// incarnation runs with tag g2 and commits batch 3 from 0.
			sc.txn(put(batchKey(k.name, 2), &sluicev1.Batch{Job: k.name, Id: 2, Ranges: uniformRanges(k, 10, 20), State: sluicev1.BatchState_BATCH_STATE_PLANNED}, true))
			sc.txn(put("jobs/"+k.name, jobRecord(k, "sink-b-g1", sluicev1.JobState_JOB_STATE_STOPPED), false))
			sc.resets++
			sc.txn(put("offsets/"+k.name, offsetsAt(k, at(0)), false), del(batchKey(k.name, 2)),
				put("jobs/"+k.name, jobRecord(k, "sink-b-g2", sluicev1.JobState_JOB_STATE_STOPPED), false))
			sc.txn(put("jobs/"+k.name, jobRecord(k, "sink-b-g2", sluicev1.JobState_JOB_STATE_RUNNING), false))
			b3 := uniformRanges(k, 0, 5)
			sc.planAndCommit(k, 3, b3, offsetsAt(k, at(5)), nil)
			out := newSinkOutput()
			sinkOutputOf(sc, out, "sink-b-g2", 3, b3)
			tt.run(sc, out)
			sc.m.checkSink(k.name, out)
			if sc.m.lost != tt.lost || sc.m.dup != tt.dup || sc.m.wrong != tt.wrong {
				t.Errorf("lost %d, duplicated %d, wrong %d; want %d, %d, %d\n%s", sc.m.lost, sc.m.dup, sc.m.wrong, tt.lost, tt.dup, tt.wrong, fmtAnomalies(sc.m.anomalies, 0))
			}
			if clean := tt.lost+tt.dup+tt.wrong == 0; clean != (len(sc.m.anomalies) == 0) {
				t.Errorf("anomalies:\n%s", fmtAnomalies(sc.m.anomalies, 0))
			}
			if t.Failed() {
				var incs []string
				for _, inc := range sc.m.jobs[k.name].incs {
					incs = append(incs, inc.String())
				}
				t.Logf("incarnations:\n%s", strings.Join(incs, "\n"))
			}
		})
	}
}
