package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func newStateCmd() *cobra.Command {
	cmd, f := jobCmd("state JOB", "show a job's running totals and open windows, as of its last committed batch", nil)
	setRun(cmd, f, func(ctx context.Context, out io.Writer, c *client.Client, job string) error {
		resp, err := c.State(ctx, job)
		if err != nil {
			return err
		}
		if f.json() {
			printJSON(out, resp)
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "as of batch %d\n", resp.GetBatchId())
		fmt.Fprintln(tw, "WINDOW\tKEY\tCOUNT\tSUM\tMIN\tMAX\tAVG")
		for _, a := range resp.GetTotals() {
			fmt.Fprintf(tw, "total\t%s\t%d\t%s\t%s\t%s\t%s\n", a.GetKey(), a.GetCount(), num(a.GetSum()), num(a.GetMin()), num(a.GetMax()), num(a.GetAvg()))
		}
		for _, w := range resp.GetOpenWindows() {
			printWindow(tw, w, " (open)")
		}
		return tw.Flush()
	})
	return cmd
}

// printWindow prints a window's aggregates as rows labelled by its span.
func printWindow(tw io.Writer, w *sluicev1.WindowResult, suffix string) {
	label := windowLabel(w) + suffix
	for _, a := range w.GetAggregates() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", label, a.GetKey(), a.GetCount(), num(a.GetSum()), num(a.GetMin()), num(a.GetMax()), num(a.GetAvg()))
	}
}

func windowLabel(w *sluicev1.WindowResult) string {
	return w.GetStart().AsTime().UTC().Format(time.RFC3339Nano) + "/" + w.GetEnd().AsTime().UTC().Format(time.RFC3339Nano)
}
