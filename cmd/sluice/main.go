// Command sluice runs Sluice: `sluice dev` for one machine, `sluice
// coordinator` and `sluice worker` for a cluster, and client commands to
// submit and inspect jobs.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/status"
)

func main() {
	restartWithoutCgoCheck(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes: a command that ran into an error exits 1 (a server's error
// with its gRPC code and message), a command line that makes no sense 2.
const (
	exitError = 1
	exitUsage = 2
)

// usageError is a mistake in the command line: an unknown command or flag,
// a missing or extra argument, a flag value that cannot be used.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// execute runs the command line args and returns the exit code.
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if errors.As(err, new(usageError)) {
		fmt.Fprintf(stderr, "%s: %v\n\n%s", cmd.CommandPath(), err, cmd.UsageString())
		return exitUsage
	}
	fmt.Fprintf(stderr, "%s: %s\n", cmd.CommandPath(), errorMessage(err))
	return exitError
}

// errorMessage shows a gRPC error as its code and the server's message.
func errorMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}

// oldFlagNames keeps the flag names of the CLI before cobra working
// (--o json): the standard flag package knew only these short names.
var oldFlagNames = map[string]string{"o": "output", "f": "file", "n": "limit"}

func newRootCmd() *cobra.Command {
	// Help lists the commands in the order below, the usual ones first.
	cobra.EnableCommandSorting = false
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Sluice runs micro-batch stream processing jobs on Kafka",
		Long: `Sluice runs micro-batch stream processing jobs on Kafka: 'sluice dev' on one machine,
'sluice coordinator' and 'sluice worker' for a cluster, and client commands to submit
and inspect jobs.

Client commands reach the coordinators at --coordinator (env SLUICE_COORDINATOR) with
the TLS and token settings of their flags or environment (SLUICE_TLS, SLUICE_TLS_CA,
SLUICE_TLS_CERT, SLUICE_TLS_KEY, SLUICE_TOKEN).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noSubcommand,
		// Runnable so that Args sees an unknown command (cobra's own check
		// would make it a plain error, exit 1).
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("a command is required")
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SuggestionsMinimumDistance = 2
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.SetGlobalNormalizationFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if n, ok := oldFlagNames[name]; ok {
			return pflag.NormalizedName(n)
		}
		return pflag.NormalizedName(name)
	})
	root.AddGroup(&cobra.Group{ID: "servers", Title: "Server Commands:"}, &cobra.Group{ID: "jobs", Title: "Job Commands:"})
	for _, c := range []*cobra.Command{newDevCmd(), newCoordinatorCmd(), newWorkerCmd()} {
		c.GroupID = "servers"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{
		newSubmitCmd(), newValidateCmd(), newJobsCmd(), newJobCmd(), newStopCmd(), newResumeCmd(), newResetCmd(),
		newDeleteCmd(), newTxnCmd(), newBatchesCmd(), newResultsCmd(), newStateCmd(), newOffsetsCmd(), newWatchCmd(),
	} {
		c.GroupID = "jobs"
		root.AddCommand(c)
	}
	root.AddCommand(newCompletionCmd())
	root.SetHelpCommand(newHelpCmd())
	return root
}

// newHelpCmd is cobra's help command, but an unknown topic is a usage
// error rather than the top-level help.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "help about any command",
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []string
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					names = append(names, sub.Name()+"\t"+sub.Short)
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usagef("unknown help topic %q", strings.Join(args, " "))
			}
			cmd.InitDefaultHelpFlag()
			return cmd.Help()
		},
	}
}

// noSubcommand is the Args of a command that only groups others: any
// argument is a command it does not have.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usageError{errors.New(msg)}
}

// exactArgs wants n positional arguments, named in what (e.g. "JOB").
func exactArgs(what ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(what) == 0 && len(args) > 0:
			return usagef("takes no arguments, got %q", args)
		case len(args) != len(what):
			return usagef("want %d argument(s) (%s), got %d", len(what), strings.Join(what, " "), len(args))
		}
		return nil
	}
}

// splitList splits a comma-separated flag value.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
