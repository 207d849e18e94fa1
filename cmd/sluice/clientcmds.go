package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/dev"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// clientFlags are shared by the client commands.
type clientFlags struct {
	fs          *flag.FlagSet
	coordinator *string
	output      *string
	security    *clientSecurity
}

func newClientFlags(name string) clientFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	def := os.Getenv("SLUICE_COORDINATOR")
	if def == "" {
		def = "127.0.0.1:7070"
	}
	return clientFlags{
		fs:          fs,
		coordinator: fs.String("coordinator", def, "comma-separated coordinator addresses (env SLUICE_COORDINATOR)"),
		output:      fs.String("o", "text", "output: text or json"),
		security:    addClientSecurity(fs),
	}
}

// parse parses flags (which may come after the positional arguments) and dials.
func (f clientFlags) parse(args []string, positional int) ([]string, *client.Client, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			return nil, nil, err
		}
		args = f.fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != positional {
		return nil, nil, fmt.Errorf("expected %d argument(s), got %d (-h for help)", positional, len(pos))
	}
	if *f.output != "text" && *f.output != "json" {
		return nil, nil, fmt.Errorf("-o %q: use text or json", *f.output)
	}
	opts, err := f.security.dialOptions()
	if err != nil {
		return nil, nil, err
	}
	c, err := client.Dial(splitList(*f.coordinator), opts...)
	return pos, c, err
}

func (f clientFlags) json() bool { return *f.output == "json" }

func printJSON(m proto.Message) {
	fmt.Println(protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Format(m))
}

func runSubmit(ctx context.Context, args []string) error {
	f := newClientFlags("submit")
	file := f.fs.String("f", "", "job file: JSON (the protobuf JSON mapping of JobSpec) or YAML; - for stdin")
	update := f.fs.Bool("update", false, "replace the spec of an existing job, keeping its offsets")
	_, c, err := f.parse(args, 0)
	if err != nil {
		return err
	}
	defer c.Close()
	if *file == "" {
		return errors.New("-f job file is required")
	}
	spec, err := client.LoadSpec(*file)
	if err != nil {
		return err
	}
	var job *sluicev1.Job
	if *update {
		job, err = c.Update(ctx, spec)
	} else {
		job, err = c.Submit(ctx, spec)
	}
	if err != nil {
		return err
	}
	if f.json() {
		printJSON(job)
		return nil
	}
	fmt.Printf("job %s submitted (%s)\n", job.GetSpec().GetName(), stateName(job.GetState()))
	return nil
}

func stateName(s sluicev1.JobState) string {
	switch s {
	case sluicev1.JobState_JOB_STATE_RUNNING:
		return "running"
	case sluicev1.JobState_JOB_STATE_STOPPED:
		return "stopped"
	case sluicev1.JobState_JOB_STATE_FAILED:
		return "failed"
	}
	return "unknown"
}

func runJobs(ctx context.Context, args []string) error {
	f := newClientFlags("jobs")
	_, c, err := f.parse(args, 0)
	if err != nil {
		return err
	}
	defer c.Close()
	jobs, err := c.Jobs(ctx)
	if err != nil {
		return err
	}
	if f.json() {
		printJSON(&sluicev1.ListJobsResponse{Jobs: jobs})
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tLAST BATCH\tTOPICS\tINTERVAL\tMESSAGE")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%s\t%s\n", j.GetSpec().GetName(), stateName(j.GetState()), j.GetLastBatchId(),
			j.GetSpec().GetSource().GetTopics(), j.GetSpec().GetBatchInterval().AsDuration(), j.GetMessage())
	}
	return tw.Flush()
}

func runJob(ctx context.Context, args []string) error {
	f := newClientFlags("job")
	pos, c, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	job, err := c.Job(ctx, pos[0])
	if err != nil {
		return err
	}
	printJSON(job)
	return nil
}

func runStop(ctx context.Context, args []string) error {
	f := newClientFlags("stop")
	pos, c, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	job, err := c.Stop(ctx, pos[0])
	if err != nil {
		return err
	}
	fmt.Printf("job %s %s at batch %d\n", job.GetSpec().GetName(), stateName(job.GetState()), job.GetLastBatchId())
	return nil
}

func runResume(ctx context.Context, args []string) error {
	f := newClientFlags("resume")
	pos, c, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	job, err := c.Resume(ctx, pos[0])
	if err != nil {
		return err
	}
	fmt.Printf("job %s %s from batch %d\n", job.GetSpec().GetName(), stateName(job.GetState()), job.GetLastBatchId())
	return nil
}

// offsetFlags collects repeated --offset topic/partition=offset values.
type offsetFlags []*sluicev1.PartitionOffset

func (o *offsetFlags) String() string { return fmt.Sprint(len(*o)) }

func (o *offsetFlags) Set(v string) error {
	tp, off, ok := strings.Cut(v, "=")
	topic, part, ok2 := strings.Cut(tp, "/")
	if !ok || !ok2 {
		return fmt.Errorf("%q: want topic/partition=offset", v)
	}
	p, err := strconv.ParseInt(part, 10, 32)
	if err != nil {
		return fmt.Errorf("%q: partition: %w", v, err)
	}
	n, err := strconv.ParseInt(off, 10, 64)
	if err != nil {
		return fmt.Errorf("%q: offset: %w", v, err)
	}
	*o = append(*o, &sluicev1.PartitionOffset{Topic: topic, Partition: int32(p), Offset: n})
	return nil
}

func runReset(ctx context.Context, args []string) error {
	f := newClientFlags("reset")
	to := f.fs.String("to", "", "earliest, latest, or an RFC3339 time (first offset at or after it); with --offset: where unlisted partitions go")
	var offsets offsetFlags
	f.fs.Var(&offsets, "offset", "explicit offset topic/partition=offset (repeatable)")
	pos, c, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	so, err := parseStart(*to, offsets)
	if err != nil {
		return err
	}
	offs, err := c.ResetOffsets(ctx, pos[0], so)
	if err != nil {
		return err
	}
	if f.json() {
		printJSON(&sluicev1.ResetOffsetsResponse{Offsets: offs})
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tOFFSET")
	for _, o := range offs {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", o.GetTopic(), o.GetPartition(), o.GetOffset())
	}
	return tw.Flush()
}

func parseStart(to string, offsets offsetFlags) (*sluicev1.StartingOffsets, error) {
	pos := map[string]sluicev1.StartPosition{
		"earliest": sluicev1.StartPosition_START_POSITION_EARLIEST,
		"latest":   sluicev1.StartPosition_START_POSITION_LATEST,
	}
	if len(offsets) > 0 {
		others := sluicev1.StartPosition_START_POSITION_UNSPECIFIED
		if to != "" {
			p, ok := pos[to]
			if !ok {
				return nil, fmt.Errorf("--to %q: with --offset use earliest or latest", to)
			}
			others = p
		}
		return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Explicit{Explicit: &sluicev1.ExplicitOffsets{Offsets: offsets, Others: others}}}, nil
	}
	if p, ok := pos[to]; ok {
		return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Position{Position: p}}, nil
	}
	ts, err := time.Parse(time.RFC3339Nano, to)
	if err != nil {
		return nil, fmt.Errorf("--to %q: want earliest, latest or an RFC3339 time like 2026-11-21T10:00:00Z", to)
	}
	return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Timestamp{Timestamp: timestamppb.New(ts)}}, nil
}

func runDelete(ctx context.Context, args []string) error {
	f := newClientFlags("delete")
	pos, c, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Delete(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Printf("job %s deleted\n", pos[0])
	return nil
}

func runTxn(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "abort") {
		return errors.New("usage: sluice txn list|abort --job JOB")
	}
	f := newClientFlags("txn " + args[0])
	job := f.fs.String("job", "", "the job")
	_, c, err := f.parse(args[1:], 0)
	if err != nil {
		return err
	}
	defer c.Close()
	if *job == "" {
		return errors.New("--job is required")
	}
	if args[0] == "abort" {
		aborted, err := c.AbortTransactions(ctx, *job)
		if err != nil {
			return err
		}
		fmt.Printf("aborted %d open transaction(s)\n", len(aborted))
		for _, id := range aborted {
			fmt.Println("  " + id)
		}
		return nil
	}
	txns, err := c.Transactions(ctx, *job)
	if err != nil {
		return err
	}
	if f.json() {
		printJSON(&sluicev1.ListTransactionsResponse{Transactions: txns})
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TRANSACTIONAL ID\tSTATE\tPRODUCER\tEPOCH\tPARTITIONS")
	for _, t := range txns {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.GetTransactionalId(), t.GetState(), t.GetProducerId(), t.GetProducerEpoch(), strings.Join(t.GetPartitions(), ","))
	}
	return tw.Flush()
}

func runBatches(ctx context.Context, args []string) error {
	f := newClientFlags("batches")
	limit := f.fs.Int("n", 20, "how many of the newest batches")
	ranges := f.fs.Bool("ranges", false, "print every batch's offset ranges")
	pos, c, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	batches, err := c.Batches(ctx, pos[0], *limit)
	if err != nil {
		return err
	}
	if f.json() {
		printJSON(&sluicev1.ListBatchesResponse{Batches: batches})
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tTIME\tSTATE\tRANGES\tIN\tOUT\tFAILED\tPROCESSING\tSCHED DELAY\tTOTAL DELAY\tATTEMPTS\tCAP")
	for _, b := range batches {
		m := b.GetMetrics()
		state := "planned"
		if b.GetState() == sluicev1.BatchState_BATCH_STATE_COMMITTED {
			state = "committed"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s\n", b.GetId(),
			b.GetBatchTime().AsTime().Local().Format(time.TimeOnly), state, len(b.GetRanges()),
			m.GetRecordsIn(), m.GetRecordsOut(), m.GetRecordsFailed(),
			m.GetProcessingTime().AsDuration().Round(time.Millisecond),
			m.GetSchedulingDelay().AsDuration().Round(time.Millisecond),
			m.GetTotalDelay().AsDuration().Round(time.Millisecond), m.GetTaskAttempts(), dev.FormatCap(b.GetCap()))
		if *ranges {
			for _, r := range b.GetRanges() {
				fmt.Fprintf(tw, "\t  %s/%d\t[%d, %d)\t%d\n", r.GetTopic(), r.GetPartition(), r.GetFromOffset(), r.GetUntilOffset(),
					r.GetUntilOffset()-r.GetFromOffset())
			}
		}
	}
	return tw.Flush()
}

func runResults(ctx context.Context, args []string) error {
	f := newClientFlags("results")
	from := f.fs.Int64("from", 0, "first batch id (0: oldest retained)")
	to := f.fs.Int64("to", 0, "last batch id (0: newest)")
	merge := f.fs.Bool("merge", false, "print per-key totals over the selected retained batches")
	pos, c, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	job := pos[0]
	if f.json() {
		// Every page in one response: results, merged, pruned, oldest retained.
		resp, err := c.Results(ctx, job, *from, *to, *merge)
		if err != nil {
			return err
		}
		printJSON(resp)
		prunedNotice(resp, *from)
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	printAggs := func(label string, aggs []*sluicev1.KeyAggregate) {
		for _, a := range aggs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", label, a.GetKey(), a.GetCount(), num(a.GetSum()), num(a.GetMin()), num(a.GetMax()), num(a.GetAvg()))
		}
	}
	if *merge {
		// The totals cover every selected batch; one result is enough of the page.
		resp, err := c.JobService().GetResults(ctx, &sluicev1.GetResultsRequest{Job: job, FromBatchId: *from, ToBatchId: *to, Merge: true, Limit: 1})
		if err != nil {
			return err
		}
		label := "none"
		if j, err := c.Job(ctx, job); err == nil {
			first, last := max(*from, resp.GetOldestRetainedBatchId()), j.GetLastBatchId()
			if *to > 0 {
				last = min(last, *to)
			}
			if resp.GetOldestRetainedBatchId() > 0 && first <= last {
				label = fmt.Sprintf("%d-%d", first, last)
			}
		}
		fmt.Fprintln(tw, "BATCHES\tKEY\tCOUNT\tSUM\tMIN\tMAX\tAVG")
		printAggs(label, resp.GetMerged())
		if err := tw.Flush(); err != nil {
			return err
		}
		prunedNotice(resp, *from)
		return nil
	}
	fmt.Fprintln(tw, "BATCH\tKEY\tCOUNT\tSUM\tMIN\tMAX\tAVG")
	resp, err := c.AllResults(ctx, &sluicev1.GetResultsRequest{Job: job, FromBatchId: *from, ToBatchId: *to}, func(r *sluicev1.BatchResult) error {
		printAggs(strconv.FormatInt(r.GetBatchId(), 10), r.GetAggregates())
		for _, rec := range r.GetRecords() {
			fmt.Fprintf(tw, "%d\t%s\t%s/%d@%d\t%s\n", r.GetBatchId(), rec.GetKey(), rec.GetTopic(), rec.GetPartition(), rec.GetOffset(), rec.GetValue())
		}
		return nil
	})
	if ferr := tw.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	prunedNotice(resp, *from)
	return nil
}

// prunedNotice tells, on stderr, that results of the selected range are
// gone: the coordinator keeps only its newest batches.
func prunedNotice(resp *sluicev1.GetResultsResponse, from int64) {
	if !resp.GetPruned() {
		return
	}
	if oldest := resp.GetOldestRetainedBatchId(); oldest > 0 {
		fmt.Fprintf(os.Stderr, "note: batches %d to %d were pruned; only batches from %d on are included (the coordinator's --keep-batches and --keep-bytes retain more)\n",
			max(from, 1), oldest-1, oldest)
		return
	}
	fmt.Fprintln(os.Stderr, "note: every committed batch in the range was pruned; none is included (the coordinator's --keep-batches and --keep-bytes retain more)")
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', 10, 64) }

func runOffsets(ctx context.Context, args []string) error {
	f := newClientFlags("offsets")
	pos, c, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.Offsets(ctx, pos[0])
	if err != nil {
		return err
	}
	if f.json() {
		printJSON(resp)
		return nil
	}
	fmt.Printf("committed by batch %d\n", resp.GetBatchId())
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tCOMMITTED\tLATEST\tLAG")
	for _, p := range resp.GetPartitions() {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", p.GetTopic(), p.GetPartition(), p.GetCommitted(), p.GetLatest(), p.GetLag())
	}
	return tw.Flush()
}

func runWatch(ctx context.Context, args []string) error {
	f := newClientFlags("watch")
	after := f.fs.Int64("after", 0, "also print retained batches after this id (0: only new ones)")
	pos, c, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Watch(ctx, pos[0], *after, true, func(m *sluicev1.WatchBatchesResponse) error {
		if f.json() {
			fmt.Println(protojson.Format(m))
			return nil
		}
		fmt.Println(dev.FormatBatch(m.GetBatch(), m.GetResult()))
		return nil
	})
}
