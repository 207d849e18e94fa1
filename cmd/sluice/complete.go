package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-stream/sluice/client"
)

// completionTimeout bounds the wait for the coordinator while the shell
// completes a job name: an unreachable one gives no completions.
const completionTimeout = 3 * time.Second

var shells = []string{"bash", "zsh", "fish", "powershell"}

func newCompletionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "print the shell completion script (job names come from the coordinator)",
		Long: `Print the completion script of a shell. Job names are completed by asking the
coordinator (--coordinator and SLUICE_COORDINATOR, with the usual TLS and token
flags and environment); an unreachable coordinator gives no completions.

  bash:  source <(sluice completion bash)
         (or save it in /etc/bash_completion.d/sluice; needs bash-completion)
  zsh:   sluice completion zsh > "${fpath[1]}/_sluice"
  fish:  sluice completion fish > ~/.config/fish/completions/sluice.fish`,
		ValidArgs: shells,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || !slices.Contains(shells, args[0]) {
				return usagef("want one shell: %s", strings.Join(shells, ", "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(out)
			}
		},
	}
}

// completeJob completes a job name argument with the coordinator's jobs.
func (f *clientFlags) completeJob(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return f.jobNames(cmd.Context(), toComplete), cobra.ShellCompDirectiveNoFileComp
}

// jobNames are the names of the jobs starting with prefix, or none when
// the coordinator cannot say.
func (f *clientFlags) jobNames(ctx context.Context, prefix string) []string {
	if ctx == nil {
		ctx = context.Background()
	}
	opts, err := f.security.dialOptions()
	if err != nil {
		return nil
	}
	c, err := client.Dial(splitList(*f.coordinator), opts...)
	if err != nil {
		return nil
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	jobs, err := c.Jobs(ctx)
	if err != nil {
		return nil
	}
	var names []string
	for _, j := range jobs {
		if name := j.GetSpec().GetName(); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	return names
}
