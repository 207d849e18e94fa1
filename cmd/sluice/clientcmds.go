package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/dev"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// clientFlags are the connection and output flags of the client commands.
type clientFlags struct {
	coordinator *string
	output      *string
	security    *clientSecurity
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	fs := cmd.Flags()
	def := os.Getenv("SLUICE_COORDINATOR")
	if def == "" {
		def = "127.0.0.1:7070"
	}
	return &clientFlags{
		coordinator: fs.String("coordinator", def, "comma-separated coordinator addresses (env SLUICE_COORDINATOR)"),
		output:      fs.StringP("output", "o", "text", "output: text or json"),
		security:    addClientSecurity(fs),
	}
}

// dial checks the output flag and connects.
func (f *clientFlags) dial() (*client.Client, error) {
	if *f.output != "text" && *f.output != "json" {
		return nil, usagef("-o %q: use text or json", *f.output)
	}
	opts, err := f.security.dialOptions()
	if err != nil {
		return nil, err
	}
	return client.Dial(splitList(*f.coordinator), opts...)
}

func (f *clientFlags) json() bool { return *f.output == "json" }

// jobCmd is a client command whose argument is a job, which the shell
// completes; run (nil: set later with setRun) gets a connection and the job.
func jobCmd(use, short string, run func(ctx context.Context, out io.Writer, c *client.Client, job string) error) (*cobra.Command, *clientFlags) {
	cmd := &cobra.Command{Use: use, Short: short, Args: exactArgs("JOB")}
	f := addClientFlags(cmd)
	cmd.ValidArgsFunction = f.completeJob
	if run != nil {
		setRun(cmd, f, run)
	}
	return cmd, f
}

func printJSON(out io.Writer, m proto.Message) {
	fmt.Fprintln(out, protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Format(m))
}

// loadSpec reads a job file, or standard input for "-".
func loadSpec(cmd *cobra.Command, file string) (*sluicev1.JobSpec, error) {
	if file == "" {
		return nil, usagef("-f job file is required (- for standard input)")
	}
	if file == "-" {
		return client.ReadSpec(cmd.InOrStdin())
	}
	return client.LoadSpec(file)
}

const specFileHelp = "job file: JSON (the protobuf JSON mapping of JobSpec) or YAML; - for standard input (either)"

func newSubmitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "submit -f FILE",
		Short: "submit a job file (-f job.json|job.yaml|-)",
		Long: `Submit a job file. With --dry-run the coordinator checks it as a submit would (the
spec, its Kafka policy, a taken name) and stores nothing.`,
		Args: exactArgs(),
	}
	f := addClientFlags(cmd)
	file := cmd.Flags().StringP("file", "f", "", specFileHelp)
	update := cmd.Flags().Bool("update", false, "replace the spec of an existing job, keeping its offsets")
	dryRun := cmd.Flags().Bool("dry-run", false, "check the job as the coordinator would submit it, storing nothing")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		spec, err := loadSpec(cmd, *file)
		if err != nil {
			return err
		}
		c, err := f.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		var job *sluicev1.Job
		switch {
		case *dryRun:
			job, err = c.DryRun(cmd.Context(), spec, *update)
		case *update:
			job, err = c.Update(cmd.Context(), spec)
		default:
			job, err = c.Submit(cmd.Context(), spec)
		}
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		switch {
		case f.json():
			printJSON(out, job)
		case *dryRun:
			fmt.Fprintf(out, "job %s: OK (dry run: nothing stored)\n", job.GetSpec().GetName())
		default:
			fmt.Fprintf(out, "job %s submitted (%s)\n", job.GetSpec().GetName(), stateName(job.GetState()))
		}
		return nil
	}
	return cmd
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

func newJobsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "list jobs", Args: exactArgs()}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := f.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		jobs, err := c.Jobs(cmd.Context())
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if f.json() {
			printJSON(out, &sluicev1.ListJobsResponse{Jobs: jobs})
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSTATE\tLAST BATCH\tTOPICS\tINTERVAL\tMESSAGE")
		for _, j := range jobs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%s\t%s\n", j.GetSpec().GetName(), stateName(j.GetState()), j.GetLastBatchId(),
				j.GetSpec().GetSource().GetTopics(), j.GetSpec().GetBatchInterval().AsDuration(), j.GetMessage())
		}
		return tw.Flush()
	}
	return cmd
}

func newJobCmd() *cobra.Command {
	cmd, _ := jobCmd("job JOB", "show one job (secrets redacted)", func(ctx context.Context, out io.Writer, c *client.Client, name string) error {
		job, err := c.Job(ctx, name)
		if err != nil {
			return err
		}
		printJSON(out, job)
		return nil
	})
	return cmd
}

func newStopCmd() *cobra.Command {
	cmd, _ := jobCmd("stop JOB", "stop a job (its offsets are kept)", func(ctx context.Context, out io.Writer, c *client.Client, name string) error {
		job, err := c.Stop(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "job %s %s at batch %d\n", job.GetSpec().GetName(), stateName(job.GetState()), job.GetLastBatchId())
		return nil
	})
	return cmd
}

func newResumeCmd() *cobra.Command {
	cmd, _ := jobCmd("resume JOB", "run a stopped or failed job again from its committed offsets", func(ctx context.Context, out io.Writer, c *client.Client, name string) error {
		job, err := c.Resume(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "job %s %s from batch %d\n", job.GetSpec().GetName(), stateName(job.GetState()), job.GetLastBatchId())
		return nil
	})
	return cmd
}

// offsetFlags collects repeated --offset topic/partition=offset values.
type offsetFlags []*sluicev1.PartitionOffset

func (o *offsetFlags) String() string { return fmt.Sprint(len(*o)) }

func (o *offsetFlags) Type() string { return "offset" }

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

func newResetCmd() *cobra.Command {
	var (
		to      string
		offsets offsetFlags
	)
	cmd, f := jobCmd("reset JOB", "move a stopped job's offsets: --to earliest|latest|RFC3339 time, or --offset topic/partition=offset", nil)
	cmd.Flags().StringVar(&to, "to", "", "earliest, latest, or an RFC3339 time (first offset at or after it); with --offset: where unlisted partitions go")
	cmd.Flags().Var(&offsets, "offset", "explicit offset topic/partition=offset (repeatable)")
	run := func(ctx context.Context, out io.Writer, c *client.Client, name string) error {
		so, err := parseStart(to, offsets)
		if err != nil {
			return err
		}
		offs, err := c.ResetOffsets(ctx, name, so)
		if err != nil {
			return err
		}
		if f.json() {
			printJSON(out, &sluicev1.ResetOffsetsResponse{Offsets: offs})
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tOFFSET")
		for _, o := range offs {
			fmt.Fprintf(tw, "%s\t%d\t%d\n", o.GetTopic(), o.GetPartition(), o.GetOffset())
		}
		return tw.Flush()
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		// The flags are checked before anything is dialled.
		if _, err := parseStart(to, offsets); err != nil {
			return err
		}
		c, err := f.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		return run(cmd.Context(), cmd.OutOrStdout(), c, args[0])
	}
	return cmd
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
				return nil, usagef("--to %q: with --offset use earliest or latest", to)
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
		return nil, usagef("--to %q: want earliest, latest or an RFC3339 time like 2026-11-21T10:00:00Z", to)
	}
	return &sluicev1.StartingOffsets{Kind: &sluicev1.StartingOffsets_Timestamp{Timestamp: timestamppb.New(ts)}}, nil
}

func newDeleteCmd() *cobra.Command {
	cmd, _ := jobCmd("delete JOB", "stop and delete a job with its offsets, batches and results", func(ctx context.Context, out io.Writer, c *client.Client, name string) error {
		if err := c.Delete(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(out, "job %s deleted\n", name)
		return nil
	})
	return cmd
}

func newTxnCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "txn",
		Short: "list or abort a job's Kafka sink transactions: txn list|abort --job JOB",
		Args:  noSubcommand,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("a subcommand is required: list or abort")
		},
	}
	list := txnCmd("list", "list the job's transactional ids and their state", func(ctx context.Context, out io.Writer, f *clientFlags, c *client.Client, job string) error {
		txns, err := c.Transactions(ctx, job)
		if err != nil {
			return err
		}
		if f.json() {
			printJSON(out, &sluicev1.ListTransactionsResponse{Transactions: txns})
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TRANSACTIONAL ID\tSTATE\tPRODUCER\tEPOCH\tPARTITIONS")
		for _, t := range txns {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.GetTransactionalId(), t.GetState(), t.GetProducerId(), t.GetProducerEpoch(), strings.Join(t.GetPartitions(), ","))
		}
		return tw.Flush()
	})
	abort := txnCmd("abort", "abort the job's open transactions (the job must not be running)", func(ctx context.Context, out io.Writer, _ *clientFlags, c *client.Client, job string) error {
		aborted, err := c.AbortTransactions(ctx, job)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "aborted %d open transaction(s)\n", len(aborted))
		for _, id := range aborted {
			fmt.Fprintln(out, "  "+id)
		}
		return nil
	})
	cmd.AddCommand(list, abort)
	return cmd
}

func txnCmd(name, short string, run func(ctx context.Context, out io.Writer, f *clientFlags, c *client.Client, job string) error) *cobra.Command {
	cmd := &cobra.Command{Use: name + " --job JOB", Short: short, Args: exactArgs()}
	f := addClientFlags(cmd)
	job := cmd.Flags().String("job", "", "the job")
	_ = cmd.RegisterFlagCompletionFunc("job", func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return f.completeJob(cmd, nil, toComplete)
	})
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *job == "" {
			return usagef("--job is required")
		}
		c, err := f.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		return run(cmd.Context(), cmd.OutOrStdout(), f, c, *job)
	}
	return cmd
}

func newBatchesCmd() *cobra.Command {
	var (
		limit  int
		ranges bool
	)
	cmd, f := jobCmd("batches JOB", "list a job's batches with their offset ranges and timings", nil)
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "how many of the newest batches")
	cmd.Flags().BoolVar(&ranges, "ranges", false, "print every batch's offset ranges")
	setRun(cmd, f, func(ctx context.Context, out io.Writer, c *client.Client, job string) error {
		batches, err := c.Batches(ctx, job, limit)
		if err != nil {
			return err
		}
		if f.json() {
			printJSON(out, &sluicev1.ListBatchesResponse{Batches: batches})
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BATCH\tTIME\tSTATE\tRANGES\tIN\tOUT\tFAILED\tDEAD LETTERS\tPROCESSING\tSCHED DELAY\tTOTAL DELAY\tATTEMPTS\tCAP")
		for _, b := range batches {
			m := b.GetMetrics()
			state := "planned"
			if b.GetState() == sluicev1.BatchState_BATCH_STATE_COMMITTED {
				state = "committed"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s\n", b.GetId(),
				b.GetBatchTime().AsTime().Local().Format(time.TimeOnly), state, len(b.GetRanges()),
				m.GetRecordsIn(), m.GetRecordsOut(), m.GetRecordsFailed(), m.GetRecordsDeadLettered(),
				m.GetProcessingTime().AsDuration().Round(time.Millisecond),
				m.GetSchedulingDelay().AsDuration().Round(time.Millisecond),
				m.GetTotalDelay().AsDuration().Round(time.Millisecond), m.GetTaskAttempts(), dev.FormatCap(b.GetCap()))
			if ranges {
				for _, r := range b.GetRanges() {
					fmt.Fprintf(tw, "\t  %s/%d\t[%d, %d)\t%d\n", r.GetTopic(), r.GetPartition(), r.GetFromOffset(), r.GetUntilOffset(),
						r.GetUntilOffset()-r.GetFromOffset())
				}
			}
		}
		return tw.Flush()
	})
	return cmd
}

// setRun makes run the command's RunE, with a connection and the job.
func setRun(cmd *cobra.Command, f *clientFlags, run func(ctx context.Context, out io.Writer, c *client.Client, job string) error) {
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := f.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		return run(cmd.Context(), cmd.OutOrStdout(), c, args[0])
	}
}

func newResultsCmd() *cobra.Command {
	var (
		from, to int64
		merge    bool
	)
	cmd, f := jobCmd("results JOB", "show a job's collect results", nil)
	cmd.Flags().Int64Var(&from, "from", 0, "first batch id (0: oldest retained)")
	cmd.Flags().Int64Var(&to, "to", 0, "last batch id (0: newest)")
	cmd.Flags().BoolVar(&merge, "merge", false, "print per-key totals over the selected retained batches")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := f.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		return results(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f, c, args[0], from, to, merge)
	}
	return cmd
}

func results(ctx context.Context, out, errOut io.Writer, f *clientFlags, c *client.Client, job string, from, to int64, merge bool) error {
	if f.json() {
		// Every page in one response: results, merged, pruned, oldest retained.
		resp, err := c.Results(ctx, job, from, to, merge)
		if err != nil {
			return err
		}
		printJSON(out, resp)
		prunedNotice(errOut, resp, from)
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	printAggs := func(label string, aggs []*sluicev1.KeyAggregate) {
		for _, a := range aggs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", label, a.GetKey(), a.GetCount(), num(a.GetSum()), num(a.GetMin()), num(a.GetMax()), num(a.GetAvg()))
		}
	}
	if merge {
		// The totals cover every selected batch; one result is enough of the page.
		resp, err := c.JobService().GetResults(ctx, &sluicev1.GetResultsRequest{Job: job, FromBatchId: from, ToBatchId: to, Merge: true, Limit: 1})
		if err != nil {
			return err
		}
		label := "none"
		if j, err := c.Job(ctx, job); err == nil {
			first, last := max(from, resp.GetOldestRetainedBatchId()), j.GetLastBatchId()
			if to > 0 {
				last = min(last, to)
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
		prunedNotice(errOut, resp, from)
		return nil
	}
	fmt.Fprintln(tw, "BATCH\tKEY\tCOUNT\tSUM\tMIN\tMAX\tAVG")
	resp, err := c.AllResults(ctx, &sluicev1.GetResultsRequest{Job: job, FromBatchId: from, ToBatchId: to}, func(r *sluicev1.BatchResult) error {
		printAggs(strconv.FormatInt(r.GetBatchId(), 10), r.GetAggregates())
		for _, w := range r.GetWindows() {
			printWindow(tw, w, "")
		}
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
	prunedNotice(errOut, resp, from)
	return nil
}

// prunedNotice tells, on stderr, that results of the selected range are
// gone: the coordinator keeps only its newest batches.
func prunedNotice(errOut io.Writer, resp *sluicev1.GetResultsResponse, from int64) {
	if !resp.GetPruned() {
		return
	}
	if oldest := resp.GetOldestRetainedBatchId(); oldest > 0 {
		fmt.Fprintf(errOut, "note: batches %d to %d were pruned; only batches from %d on are included (the coordinator's --keep-batches and --keep-bytes retain more)\n",
			max(from, 1), oldest-1, oldest)
		return
	}
	fmt.Fprintln(errOut, "note: every committed batch in the range was pruned; none is included (the coordinator's --keep-batches and --keep-bytes retain more)")
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', 10, 64) }

func newOffsetsCmd() *cobra.Command {
	cmd, f := jobCmd("offsets JOB", "show a job's committed offsets and lag", nil)
	setRun(cmd, f, func(ctx context.Context, out io.Writer, c *client.Client, job string) error {
		resp, err := c.Offsets(ctx, job)
		if err != nil {
			return err
		}
		if f.json() {
			printJSON(out, resp)
			return nil
		}
		fmt.Fprintf(out, "committed by batch %d\n", resp.GetBatchId())
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tCOMMITTED\tLATEST\tLAG")
		for _, p := range resp.GetPartitions() {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", p.GetTopic(), p.GetPartition(), p.GetCommitted(), p.GetLatest(), p.GetLag())
		}
		return tw.Flush()
	})
	return cmd
}

func newWatchCmd() *cobra.Command {
	var after int64
	cmd, f := jobCmd("watch JOB", "print a job's batches as they commit", nil)
	cmd.Flags().Int64Var(&after, "after", 0, "also print retained batches after this id (0: only new ones)")
	setRun(cmd, f, func(ctx context.Context, out io.Writer, c *client.Client, job string) error {
		return c.Watch(ctx, job, after, true, func(m *sluicev1.WatchBatchesResponse) error {
			if f.json() {
				fmt.Fprintln(out, protojson.Format(m))
				return nil
			}
			fmt.Fprintln(out, dev.FormatBatch(m.GetBatch(), m.GetResult()))
			return nil
		})
	})
	return cmd
}
